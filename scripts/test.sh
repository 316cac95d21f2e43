#!/usr/bin/env bash
# Install kms-agent without starting it, then run the whole test suite.
#
# The install runs quietly, and its output is shown only if it fails.
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

cd "$REPO" || exit 1
"$REPO/.venv/bin/python" -m pytest -q "$@"
status=$?
if (( status == 5 )); then
    echo "test.sh: error: pytest collected no tests, which counts as a failure" >&2
fi
exit "$status"
