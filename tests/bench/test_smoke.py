"""Smoke test of the benchmark suite: ``bench/run.py --quick --no-peers`` end to end.

It runs the real entry point against real agents and SoftHSM2 tokens and
checks that the run completes, reports every figure and target, and
cleans up. It asserts no timing: the figures of a quick run are rough
on purpose.
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
from bench import catalog
from bench.report import LOAD_METRICS

REPO = Path(__file__).resolve().parents[2]
RUN_TIMEOUT_S = 150
QUICK_STORE_KEYS = 100

pytestmark = [pytest.mark.hsm, pytest.mark.timeout(RUN_TIMEOUT_S + 30)]

METRICS = {catalog.LOAD: LOAD_METRICS, catalog.RATE: ("ops_per_s",),
           catalog.STREAM: ("bytes_per_s",), catalog.MEMORY: ("rss_bytes",)}
PEER_TARGETS = ("encrypt_vs_pykmip_c1", "encrypt_vs_pykmip_c16", "encrypt_vs_moto_c1",
                "encrypt_vs_moto_c16", "encrypt_vs_openbao_c1",
                "encrypt_vs_openbao_c16", "secret_hit_vs_openbao_kv_c1",
                "secret_hit_vs_openbao_kv_c16")


def _require_softhsm() -> None:
    if softhsm.find_softhsm_module() and shutil.which("softhsm2-util"):
        return
    message = "SoftHSM2 is not installed (apt-get install softhsm2)"
    if os.environ.get("CI") == "true":
        pytest.fail(message + "; HSM tests must run in CI")
    pytest.skip(message)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Run the quick suite without peers once; return its JSON and TMPDIR."""
    _require_softhsm()
    base = tmp_path_factory.mktemp("bench")
    scratch = base / "tmp"
    scratch.mkdir()
    output = base / "results.json"
    completed = subprocess.run(
        [sys.executable, str(REPO / "bench" / "run.py"), "--quick", "--no-peers",
         "--json", str(output)],
        cwd=REPO, capture_output=True, text=True, timeout=RUN_TIMEOUT_S,
        env=dict(os.environ, TMPDIR=str(scratch)))
    assert completed.returncode == 0, completed.stderr[-3000:]
    return {"results": json.loads(output.read_text()), "scratch": scratch,
            "table": completed.stdout}


def test_quick_run_reports_every_figure(quick_run: dict) -> None:
    """Every figure has each metric of its kind as a positive number."""
    results = quick_run["results"]
    for entry in results["catalog"]:
        figure = results["figures"][entry["name"]]
        for metric in METRICS[entry["kind"]]:
            value = figure.get(metric)
            assert isinstance(value, (int, float)), (entry["name"], metric, figure)
            assert value > 0, (entry["name"], metric, value)


def test_quick_run_covers_every_operation(quick_run: dict) -> None:
    """Each agent operation and the echo floor run at every concurrency."""
    figures = quick_run["results"]["figures"]
    for clients in catalog.CONCURRENCY:
        assert f"echo_c{clients}" in figures
        for operation, _, _ in catalog.AGENT_OPERATIONS:
            assert f"{operation}_c{clients}" in figures, (operation, clients)


def test_quick_run_covers_floors_and_store(quick_run: dict) -> None:
    """The floors, store, file and memory figures are all present."""
    figures = quick_run["results"]["figures"]
    expected = [figure.name for figure in catalog.FLOORS]
    expected += [figure.name for figure in catalog.store_figures(QUICK_STORE_KEYS)]
    expected += [figure.name for figure in catalog.file_figures(2**20)]
    expected += [figure.name for figure in catalog.memory_figures(QUICK_STORE_KEYS)]
    for name in expected:
        assert name in figures, name


def test_quick_run_evaluates_agent_targets(quick_run: dict) -> None:
    """Each target that needs no peer has a positive value and a verdict."""
    for name, ratio in quick_run["results"]["ratios"].items():
        if name in PEER_TARGETS:
            continue
        assert ratio["value"] > 0, (name, ratio)
        assert isinstance(ratio["met"], bool), (name, ratio)


def test_quick_run_marks_peer_targets_missing(quick_run: dict) -> None:
    """Without peers, each peer target has no value and names its figure."""
    ratios = quick_run["results"]["ratios"]
    for name in PEER_TARGETS:
        assert ratios[name]["value"] is None, name
        assert ratios[name]["missing"].endswith(("_c1", "_c16")), name


def test_quick_run_keeps_every_round(quick_run: dict) -> None:
    """Each scheduled figure keeps one entry per round."""
    results = quick_run["results"]
    for name, rounds in results["rounds"].items():
        assert len(rounds) == results["settings"]["rounds"], name


def test_miss_agent_never_hits_cache(quick_run: dict) -> None:
    """The agent behind the miss figure served no read from its cache."""
    caches = quick_run["results"]["secret_caches"]
    assert caches["nocache"]["Hits"] == 0
    assert caches["nocache"]["Misses"] > 0


def test_hit_agent_serves_from_cache(quick_run: dict) -> None:
    """The agent behind the hit figure missed only its first read."""
    assert quick_run["results"]["secret_caches"]["main"]["Misses"] == 1


def test_store_agent_caches_every_secret(quick_run: dict) -> None:
    """The large store's agent keeps every secret in its cache."""
    caches = quick_run["results"]["secret_caches"]
    assert caches["store"]["Entries"] == QUICK_STORE_KEYS


def test_quick_run_prints_targets_table(quick_run: dict) -> None:
    """The table lists each target's description."""
    for ratio in quick_run["results"]["ratios"].values():
        assert ratio["description"] in quick_run["table"]


def test_quick_run_removes_temporary_files(quick_run: dict) -> None:
    """The run leaves nothing in its temporary directory."""
    assert list(quick_run["scratch"].iterdir()) == []


def test_quick_run_stops_its_servers(quick_run: dict) -> None:
    """No process started by the run is still alive after it exits."""
    listing = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True)
    leftovers = [line for line in listing.stdout.splitlines()
                 if str(quick_run["scratch"]) in line]
    assert leftovers == []
