"""Smoke test of the benchmark suite: ``bench/run.py --quick`` end to end.

It runs the real entry point against a real dev agent and SoftHSM2 token
and checks that the run completes, reports every figure and cleans up.
It asserts no timing: the figures of a quick run are rough on purpose.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from agent.keystore import softhsm
from bench.report import FIGURES, LOAD_METRICS

REPO = Path(__file__).resolve().parents[2]
RUN_TIMEOUT_S = 120

pytestmark = pytest.mark.hsm


def _require_softhsm() -> None:
    if softhsm.find_softhsm_module() and shutil.which("softhsm2-util"):
        return
    message = "SoftHSM2 is not installed (apt-get install softhsm2)"
    if os.environ.get("CI") == "true":
        pytest.fail(message + "; HSM tests must run in CI")
    pytest.skip(message)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Run the quick suite once; return its JSON results and its TMPDIR."""
    _require_softhsm()
    base = tmp_path_factory.mktemp("bench")
    scratch = base / "tmp"
    scratch.mkdir()
    output = base / "results.json"
    completed = subprocess.run(
        [sys.executable, str(REPO / "bench" / "run.py"), "--quick",
         "--json", str(output)],
        cwd=REPO, capture_output=True, text=True, timeout=RUN_TIMEOUT_S,
        env=dict(os.environ, TMPDIR=str(scratch)))
    assert completed.returncode == 0, completed.stderr[-3000:]
    return {"results": json.loads(output.read_text()), "scratch": scratch}


def test_quick_run_reports_every_figure(quick_run: dict) -> None:
    """Every figure has each of its metrics as a positive number."""
    figures = quick_run["results"]["figures"]
    for figure in FIGURES:
        metrics = LOAD_METRICS if figure.is_load else ("ops_per_s",)
        for metric in metrics:
            value = figures[figure.name][metric]
            assert isinstance(value, (int, float)), (figure.name, metric, value)
            assert value > 0, (figure.name, metric, value)


def test_quick_run_reports_both_ratios(quick_run: dict) -> None:
    """Both target ratios have a positive value and a verdict."""
    for name in ("encrypt_c1_overhead", "encrypt_c16_vs_echo"):
        ratio = quick_run["results"]["ratios"][name]
        assert ratio["value"] > 0, (name, ratio)
        assert isinstance(ratio["met"], bool), (name, ratio)


def test_quick_run_keeps_every_round(quick_run: dict) -> None:
    """Each figure keeps one entry per round of the quick configuration."""
    results = quick_run["results"]
    for figure in FIGURES:
        rounds = results["rounds"][figure.name]
        assert len(rounds) == results["settings"]["rounds"], figure.name


def test_quick_run_removes_temporary_files(quick_run: dict) -> None:
    """The run leaves nothing in its temporary directory."""
    assert list(quick_run["scratch"].iterdir()) == []


def test_quick_run_stops_its_servers(quick_run: dict) -> None:
    """No process started by the run is still alive after it exits."""
    listing = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True)
    leftovers = [line for line in listing.stdout.splitlines()
                 if str(quick_run["scratch"]) in line]
    assert leftovers == []
