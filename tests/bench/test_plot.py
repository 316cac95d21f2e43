"""The plot script draws a results document into a PNG image.

It runs in the plot virtualenv that ``bench/run.py --plot`` installs
from PyPI. This test installs nothing and skips when it is missing.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from bench import catalog, ratios, report
from bench.peers import install

PLOT_SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "plot.py"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _results() -> dict:
    figures = {"encrypt_c1": {"ops_per_s": 1000.0}, "echo_c1": {"ops_per_s": 4000.0},
               "openbao_encrypt_c1": {"ops_per_s": 2000.0},
               "raw_hsm_encrypt": {"ops_per_s": 40000.0},
               "rss_idle": {"rss_bytes": 60e6}}
    order = [catalog.echo_figure(1), catalog.agent_figure("encrypt", "Encrypt", 1)]
    return report.build_results(
        figures, order, {}, ratios.evaluate(figures, 10),
        {"date": "2026-01-01 00:00 UTC", "commit": "abc", "load_average": (1, 1, 1),
         "unavailable": {}, "secret_caches": {},
         "settings": {"rounds": 1, "seconds": 1.0, "warmup_seconds": 0.1,
                      "client_mode": "tasks", "concurrency": [1, 16]}})


def test_plot_writes_png_image(tmp_path: Path) -> None:
    """The script writes a PNG file from partial figures without failing."""
    venv = install.installed("plot")
    if venv is None:
        pytest.skip("matplotlib is not installed in bench/.peers/plot; "
                    "python bench/run.py --plot PATH installs it")
    results_path = tmp_path / "results.json"
    image_path = tmp_path / "plot.png"
    report.write_json(_results(), results_path)
    subprocess.run([str(venv / "bin" / "python"), str(PLOT_SCRIPT), str(results_path),
                    str(image_path)], check=True, timeout=120)
    assert image_path.read_bytes()[:8] == PNG_SIGNATURE
