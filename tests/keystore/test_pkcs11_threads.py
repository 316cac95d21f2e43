"""Concurrency on a real SoftHSM2 token, run in child processes.

A segfault in the module would kill pytest itself, so each scenario runs
``hsm_child.py`` in its own process and the test reads its exit status.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.hsm

CHILD = Path(__file__).with_name("hsm_child.py")
REPO = Path(__file__).resolve().parents[2]


def child_command(softhsm, token, command: str, *extra: str) -> list[str]:
    return [sys.executable, str(CHILD), command, softhsm.module,
            str(token.conf_path), token.label, str(token.pin_file), *extra]


def run_child(softhsm, token, command: str, *extra: str, timeout: float = 120):
    return subprocess.run(child_command(softhsm, token, command, *extra),
                          capture_output=True, text=True, timeout=timeout, cwd=REPO)


def test_hammer_mixed_keystores(softhsm):
    """Inline and threaded keystores under many tasks: no crash, no bad result."""
    result = run_child(softhsm, softhsm.token, "hammer", "4")
    assert result.returncode == 0, result.stderr[-3000:]
    counts = json.loads(result.stdout)
    for kind in ("inline", "large", "threaded", "generate", "random"):
        assert counts[kind] > 0, kind


def test_racing_first_open_agrees(softhsm, make_token):
    """Agents starting together on a new token can all read each other's keys."""
    token = make_token("race")
    processes = [
        subprocess.Popen(child_command(softhsm, token, "seal-samples"),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, cwd=REPO)
        for _ in range(2)
    ]
    outputs = [process.communicate(timeout=120) for process in processes]
    for process, (_, stderr) in zip(processes, outputs):
        assert process.returncode == 0, stderr[-3000:]
    samples = [sample for stdout, _ in outputs for sample in json.loads(stdout)]
    later = subprocess.run(child_command(softhsm, token, "open-samples"),
                           input=json.dumps(samples), capture_output=True,
                           text=True, timeout=120, cwd=REPO)
    assert later.returncode == 0, later.stderr[-3000:]
    result = json.loads(later.stdout)
    assert result["opened"] == 4
    assert result["domain_key_id"] == min(s["domain_key_id"] for s in samples)


@pytest.mark.demonstration
def test_unlocked_module_crashes(softhsm):
    """Without CKF_OS_LOCKING_OK, SoftHSM2 2.6 crashes or hangs under threads.

    The crash depends on timing: about half of the runs measured ended in
    SIGSEGV, within a second when they did. The test tries up to twelve
    runs and skips when none crashed, since it shows the hazard rather
    than guarding code.
    """
    outcomes = []
    for _ in range(12):
        try:
            result = run_child(softhsm, softhsm.token, "unlocked-threads", "1.5",
                               timeout=30)
        except subprocess.TimeoutExpired:
            outcomes.append("hang")
            break
        outcomes.append(result.returncode)
        if result.returncode < 0:
            break
    if not any(outcome == "hang" or outcome < 0 for outcome in outcomes):
        pytest.skip(f"no crash in {len(outcomes)} runs: {outcomes}")
    assert outcomes[-1] in ("hang", -signal.SIGSEGV, -signal.SIGABRT, -signal.SIGBUS)
