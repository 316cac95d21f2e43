"""Smoke test of bench/stages.py: one tiny run gives only positive figures."""

from __future__ import annotations

import json

from bench import stages
from tests.integration.conftest import require_softhsm


def _numbers(value):
    # Yield every number of a nested figures document.
    if isinstance(value, dict):
        for item in value.values():
            yield from _numbers(item)
    else:
        yield value


def test_stages_figures_positive(tmp_path):
    """Every figure of a tiny run is a positive number."""
    require_softhsm()
    output = tmp_path / "stages.json"
    assert stages.main(["--seconds", "0.1", "--warmup", "0.02", "--rounds", "1",
                        "--stage-calls", "20", "--json", str(output)]) == 0
    figures = list(_numbers(json.loads(output.read_text())))
    assert len(figures) == 17
    assert all(isinstance(x, (int, float)) and x > 0 for x in figures), figures
