#!/bin/sh
# Entry point of the kms-agent container image.
#
# On the first start (no configuration file yet) it creates a SoftHSM2
# token and a configuration on the state volume; later starts reuse both,
# so keys survive a new container. Then it runs the agent, or the command
# given instead (such as kmsctl). Mount a configuration file at
# $KMS_AGENT_CONFIG to use another HSM: nothing is created then, and the
# file names the HSM's PKCS#11 module, token and PIN file.
#
# Environment (defaults in brackets):
#   KMS_AGENT_STATE_DIR   state volume: token, store, config [/var/lib/kms-agent]
#   KMS_AGENT_SOCKET_DIR  socket volume shared with the app [/run/kms-agent]
#   KMS_AGENT_CONFIG      configuration file [$KMS_AGENT_STATE_DIR/config.toml]
#   KMS_AGENT_TOKEN_LABEL SoftHSM2 token label [kms-agent]
#   KMS_AGENT_APP_UIDS    comma-separated uids of application containers,
#                         allowed to use keys and read secrets []
#   KMS_AGENT_SOCKET_MODE socket permission bits [0660]
#   KMS_AGENT_PYTHON      Python interpreter with kms-agent installed [python3]
set -eu

STATE_DIR="${KMS_AGENT_STATE_DIR:-/var/lib/kms-agent}"
SOCKET_DIR="${KMS_AGENT_SOCKET_DIR:-/run/kms-agent}"
CONFIG="${KMS_AGENT_CONFIG:-$STATE_DIR/config.toml}"
TOKEN_LABEL="${KMS_AGENT_TOKEN_LABEL:-kms-agent}"
APP_UIDS="${KMS_AGENT_APP_UIDS:-}"
SOCKET_MODE="${KMS_AGENT_SOCKET_MODE:-0660}"
PYTHON="${KMS_AGENT_PYTHON:-python3}"

fail() {
    echo "kms-agent-entrypoint: $1" >&2
    exit 1
}

# Values that go into TOML strings and arrays must not need escaping.
check_values() {
    case "$APP_UIDS" in
        *[!0-9,]* | ,* | *, | *,,*)
            fail "KMS_AGENT_APP_UIDS=$APP_UIDS is not a comma-separated list of uids" ;;
    esac
    case "$STATE_DIR$SOCKET_DIR$TOKEN_LABEL" in
        *[\"\\]*)
            fail "paths and the token label must not contain quotes or backslashes" ;;
    esac
    case "$SOCKET_MODE" in
        0[0-7][0-7]0) ;;
        *) fail "KMS_AGENT_SOCKET_MODE=$SOCKET_MODE must be an octal mode like 0660" ;;
    esac
}

write_config() {
    module=$("$PYTHON" -c 'from agent.keystore.softhsm import find_softhsm_module
print(find_softhsm_module() or "")')
    [ -n "$module" ] ||
        fail "libsofthsm2.so was not found; install softhsm2 or mount a configuration"
    cat > "$CONFIG.tmp" <<TOML
# Written by the kms-agent container on its first start; edit it freely.
[agent]
socket = "$SOCKET_DIR/agent.sock"
socket_mode = "$SOCKET_MODE"
data_dir = "$STATE_DIR/data"
drain_timeout = 10

[log]
level = "info"
format = "json"

[keystores.default]
type = "pkcs11"
module = "$module"
token_label = "$TOKEN_LABEL"
pin_file = "$STATE_DIR/token/pin"
softhsm2_conf = "$STATE_DIR/token/softhsm2.conf"

# The agent's own user administers it (docker exec, kubectl exec, probes).
[principals.agent]
agent_user = true
keystores = ["*"]

[policies.agent-everything]
principals = ["agent"]
permissions = ["administrator", "key-user", "secret-user"]
resources = ["key/*", "secret/*", "agent"]
TOML
    if [ -n "$APP_UIDS" ]; then
        cat >> "$CONFIG.tmp" <<TOML

# Application containers: use keys and read secrets, nothing else.
[principals.app]
uids = [$APP_UIDS]
keystores = ["*"]

[policies.app-use]
principals = ["app"]
permissions = ["key-user", "secret-user"]
resources = ["key/*", "secret/*"]
TOML
    fi
    mv "$CONFIG.tmp" "$CONFIG"
}

umask 077
check_values
mkdir -p "$STATE_DIR"
# The application reaches the socket through the group, so the socket
# directory must not inherit the umask; an existing one (a volume) is kept.
[ -d "$SOCKET_DIR" ] || mkdir -m 0750 -p "$SOCKET_DIR"
if [ ! -e "$CONFIG" ]; then
    "$PYTHON" -m agent.keystore.softhsm "$STATE_DIR/token" "$TOKEN_LABEL"
    write_config
    echo "kms-agent-entrypoint: first start: wrote $CONFIG" >&2
fi
if [ "$#" -eq 0 ]; then
    set -- kms-agent --config "$CONFIG"
fi
exec "$@"
