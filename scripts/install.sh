#!/usr/bin/env bash
# Install kms-agent into this checkout, then run it in the foreground.
#
# Steps: SoftHSM2 from apt (only if it is missing, and then as root), the
# virtualenv REPO/.venv with `pip install -e 'REPO[test]'`, the SoftHSM2
# token that config.example.toml names (REPO/var/token, PIN file mode
# 0600), and the directories REPO/var/run and REPO/var/data. A second run
# reuses all of it. Only apt and PyPI are reached over the network.
#
# usage: bash scripts/install.sh [--no-start]
#   --no-start   install only; do not start the agent
# Environment: PYTHON names the interpreter for the virtualenv (default
# python3, which must be 3.11 or newer).
set -Eeuo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$REPO/.venv"
CONFIG="$REPO/config.example.toml"
TOKEN_DIR="$REPO/var/token"
TOKEN_LABEL="kms-agent"
SOCKET="$REPO/var/run/agent.sock"
SOFTHSM_MODULE="/usr/lib/softhsm/libsofthsm2.so"
PYTHON="${PYTHON:-python3}"
INSTALL_STAMP="$VENV/.kms-agent-install"

CURRENT_STEP="starting"

step() {
    CURRENT_STEP="$1"
    printf '==> %s\n' "$1"
}

die() {
    printf 'install.sh: error: %s\n' "$1" >&2
    exit 1
}

trap 'die "failed while ${CURRENT_STEP} (line ${LINENO}); see the output above"' ERR

parse_args() {
    START=1
    for arg in "$@"; do
        case "$arg" in
            --no-start) START=0 ;;
            -h|--help) sed -n '2,13s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; exit 0 ;;
            *) die "unknown argument '$arg'; usage: bash scripts/install.sh [--no-start]" ;;
        esac
    done
}

check_python() {
    step "checking Python ($PYTHON)"
    command -v "$PYTHON" >/dev/null \
        || die "'$PYTHON' not found; install Python 3.11 or newer, or set PYTHON"
    "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
        || die "$("$PYTHON" -V 2>&1) is too old; kms-agent needs Python 3.11 or newer"
}

install_system_packages() {
    step "checking system packages"
    local missing=()
    if [[ ! -f "$SOFTHSM_MODULE" ]] || ! command -v softhsm2-util >/dev/null; then
        missing+=(softhsm2)
    fi
    # Debian ships venv's pip bootstrap apart from python3, in python3-venv.
    if [[ ! -x "$VENV/bin/python" ]] && ! "$PYTHON" -c 'import ensurepip' 2>/dev/null; then
        missing+=(python3-venv)
    fi
    if (( ${#missing[@]} == 0 )); then
        echo "    softhsm2 is installed"
        return
    fi

    step "installing ${missing[*]} with apt-get"
    [[ "$(id -u)" == 0 ]] \
        || die "installing ${missing[*]} needs root: run this script as root, or run 'apt-get install ${missing[*]}' first"
    command -v apt-get >/dev/null \
        || die "apt-get not found; install ${missing[*]} with your package manager"
    DEBIAN_FRONTEND=noninteractive apt-get update \
        || die "apt-get update failed; check the network and /etc/apt/sources.list"
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" \
        || die "apt-get install ${missing[*]} failed"
    [[ -f "$SOFTHSM_MODULE" ]] \
        || die "softhsm2 is installed but $SOFTHSM_MODULE is missing"
}

create_virtualenv() {
    if [[ -x "$VENV/bin/python" ]]; then
        step "reusing the virtualenv $VENV"
        "$VENV/bin/python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
            || die "$VENV does not run Python 3.11 or newer; remove it and run again"
        return
    fi
    step "creating the virtualenv $VENV"
    "$PYTHON" -m venv "$VENV" || die "'$PYTHON -m venv $VENV' failed"
}

install_package() {
    # The stamp records what was installed, so an unchanged checkout skips pip.
    local wanted
    wanted="$(sha256sum "$REPO/pyproject.toml" | cut -d' ' -f1) $("$VENV/bin/python" -V 2>&1)"
    if [[ -f "$INSTALL_STAMP" && "$(cat "$INSTALL_STAMP")" == "$wanted" \
          && -x "$VENV/bin/kms-agent" && -x "$VENV/bin/kmsctl" ]] \
          && "$VENV/bin/python" -c 'import agent, client' 2>/dev/null; then
        step "reusing the installed package (pyproject.toml is unchanged)"
        return
    fi
    step "installing kms-agent and its test extras with pip"
    rm -f "$INSTALL_STAMP"
    "$VENV/bin/python" -m pip install --disable-pip-version-check -e "${REPO}[test]" \
        || die "pip install -e '${REPO}[test]' failed; check the network to PyPI and the output above"
    printf '%s\n' "$wanted" >"$INSTALL_STAMP"
}

create_token() {
    step "creating the SoftHSM2 token '$TOKEN_LABEL' in $TOKEN_DIR"
    "$VENV/bin/python" -m agent.keystore.softhsm "$TOKEN_DIR" "$TOKEN_LABEL" \
        || die "creating the SoftHSM2 token in $TOKEN_DIR failed"
    local file
    for file in softhsm2.conf pin; do
        [[ -f "$TOKEN_DIR/$file" ]] || die "the token setup did not create $TOKEN_DIR/$file"
    done
    local pin_mode
    pin_mode="$(stat -c '%a' "$TOKEN_DIR/pin")"
    [[ "$pin_mode" == 600 || "$pin_mode" == 400 ]] \
        || die "$TOKEN_DIR/pin has mode $pin_mode; it must be 0600 or stricter"
}

create_directories() {
    step "creating $REPO/var/run and $REPO/var/data"
    # Only the installing user reaches the socket directory. To let a group
    # use the agent, set socket_group in the config and chgrp this directory
    # to that group (its mode 0750 then lets the group in). The store
    # directory is for the agent alone.
    install -d -m 0750 "$REPO/var/run" || die "cannot create $REPO/var/run"
    install -d -m 0700 "$REPO/var/data" || die "cannot create $REPO/var/data"
}

print_usage_hint() {
    cat <<HINT

kms-agent is installed.
  configuration: $CONFIG
  socket:        $SOCKET
To reach the agent from another shell:
  export KMS_AGENT_SOCKET=$SOCKET
  $VENV/bin/kmsctl CreateKey --Description 'first key'
  $VENV/bin/kmsctl Encrypt --KeyId <KeyId from CreateKey> --Plaintext hello
HINT
}

main() {
    parse_args "$@"
    check_python
    install_system_packages
    create_virtualenv
    install_package
    create_token
    create_directories
    print_usage_hint
    if (( START == 0 )); then
        printf '\nStart it with:\n  %s --config %s\n' "$VENV/bin/kms-agent" "$CONFIG"
        return
    fi
    printf '\nStarting the agent in the foreground; stop it with Ctrl-C.\n\n'
    trap - ERR
    exec "$VENV/bin/kms-agent" --config "$CONFIG"
}

main "$@"
