#!/usr/bin/env bash
# Install kms-agent without starting it, then run the whole test suite.
#
# The install runs quietly, and its output is shown only if it fails.
# The gateway tests also need the official Alibaba Cloud SDKs: the
# gateway-test extra goes into .venv, and alibabacloud-dkms-gcs into its
# own virtualenv, var/dkms-sdk, because it pins pyOpenSSL below 23.3,
# which needs cryptography below 42 while the agent needs 42 or newer.
# Stamps make later runs skip pip while nothing changed.
# Arguments are passed to pytest. The exit status is pytest's, so a run
# that collects no test (status 5) fails too.
#
# usage: bash scripts/test.sh [PYTEST ARGS ...]
set -uo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

install_log="$(mktemp)"
trap 'rm -f "$install_log"' EXIT
if ! bash "$REPO/scripts/install.sh" --no-start >"$install_log" 2>&1; then
    cat "$install_log" >&2
    echo "test.sh: error: 'scripts/install.sh --no-start' failed; its output is above" >&2
    exit 1
fi

# pip output goes to the install log, shown only if a step fails.
install_gateway_sdks() {
    local venv="$REPO/.venv" dkms="$REPO/var/dkms-sdk" wanted
    wanted="$(sha256sum "$REPO/pyproject.toml" | cut -d' ' -f1)"
    if [[ "$(cat "$venv/.kms-agent-gateway-test" 2>/dev/null)" != "$wanted" ]]; then
        "$venv/bin/python" -m pip install --disable-pip-version-check \
            -e "${REPO}[test,gateway-test]" || return 1
        printf '%s\n' "$wanted" >"$venv/.kms-agent-gateway-test"
    fi
    if [[ "$(cat "$dkms/.installed" 2>/dev/null)" != "$DKMS_SDK" ]]; then
        mkdir -p "$REPO/var"
        "${PYTHON:-python3}" -m venv "$dkms" || return 1
        "$dkms/bin/python" -m pip install --disable-pip-version-check "$DKMS_SDK" \
            || return 1
        printf '%s\n' "$DKMS_SDK" >"$dkms/.installed"
    fi
}

DKMS_SDK="alibabacloud-dkms-gcs==1.0.2"
if ! install_gateway_sdks >>"$install_log" 2>&1; then
    cat "$install_log" >&2
    echo "test.sh: error: installing the Alibaba Cloud SDKs for the gateway tests failed; the output is above" >&2
    exit 1
fi

cd "$REPO" || exit 1
"$REPO/.venv/bin/python" -m pytest -q "$@"
status=$?
if (( status == 5 )); then
    echo "test.sh: error: pytest collected no tests, which counts as a failure" >&2
fi
exit "$status"
