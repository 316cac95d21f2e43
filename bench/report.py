"""The figures a run reports, the two target ratios, the table and the JSON.

Ratios are computed from the median figures. Time per operation is the
inverse of throughput, which for one closed-loop client is its mean
latency. The JSON contains the medians, every round's figures, the ratios
and the settings and machine of the run.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
from pathlib import Path
from typing import Any

JSON_SCHEMA_VERSION = 1
CONCURRENCY = (1, 16)


@dataclasses.dataclass(frozen=True)
class Figure:
    """One measured figure: its JSON name and its label in the table."""

    name: str
    label: str
    is_load: bool


def _load_figures(prefix: str, label: str) -> list[Figure]:
    return [Figure(f"{prefix}_c{clients}", f"{label} c={clients}", True)
            for clients in CONCURRENCY]


FIGURES = (
    Figure("raw_hsm_encrypt", "raw HSM AES-GCM encrypt", False),
    Figure("raw_aesgcm_encrypt", "raw AESGCM encrypt", False),
    *_load_figures("echo", "echo"),
    *_load_figures("encrypt", "Encrypt"),
    *_load_figures("decrypt", "Decrypt"),
    *_load_figures("generate_data_key", "GenerateDataKey"),
)
LOAD_METRICS = ("ops_per_s", "p50_us", "p99_us")


def time_per_op(figure: dict[str, float]) -> float:
    """Return the seconds per operation of a figure, from its throughput."""
    return 1.0 / figure["ops_per_s"]


def compute_ratios(figures: dict[str, dict[str, float]]) -> dict[str, dict[str, Any]]:
    """Return both target ratios with their value, target and verdict."""
    overhead = time_per_op(figures["encrypt_c1"]) / (
        time_per_op(figures["echo_c1"]) + time_per_op(figures["raw_hsm_encrypt"]))
    scaling = figures["encrypt_c16"]["ops_per_s"] / figures["echo_c16"]["ops_per_s"]
    return {
        "encrypt_c1_overhead": {
            "description": "Encrypt c=1 time/op / (echo c=1 + raw HSM) time/op",
            "value": overhead, "target": 1.5, "comparison": "<=",
            "met": overhead <= 1.5,
        },
        "encrypt_c16_vs_echo": {
            "description": "Encrypt c=16 ops/s / echo c=16 ops/s",
            "value": scaling, "target": 0.5, "comparison": ">=",
            "met": scaling >= 0.5,
        },
    }


def build_results(figures: dict[str, dict[str, float]],
                  rounds: dict[str, list[dict[str, float]]],
                  settings: dict[str, Any], date: str,
                  load_average: tuple[float, float, float]) -> dict[str, Any]:
    """Return the JSON document of a run.

    ``load_average`` is the 1, 5 and 15 minute load average at the start
    of the run, since other work on the machine skews every figure.
    """
    return {
        "schema": JSON_SCHEMA_VERSION,
        "date": date,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "load_average_at_start": list(load_average),
            "load_average_at_end": list(os.getloadavg()),
        },
        "settings": settings,
        "figures": figures,
        "ratios": compute_ratios(figures),
        "rounds": rounds,
    }


def write_json(results: dict[str, Any], path: Path) -> None:
    """Write the results to ``path`` as indented JSON."""
    path.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


def format_table(results: dict[str, Any]) -> str:
    """Return the figures and ratios of a run as a plain-text table."""
    settings = results["settings"]
    machine = results["machine"]
    load_average = "/".join(f"{value:.1f}" for value in (
        machine["load_average_at_start"][0], machine["load_average_at_end"][0]))
    lines = [
        f"kms-agent benchmark, {results['date']}, {machine['cpus']} CPUs, "
        f"load average {load_average} (start/end)",
        f"median of {settings['rounds']} rounds of {settings['seconds']:g} s, "
        f"clients: {settings['client_mode']}",
        "",
        f"{'figure':<26}{'ops/s':>10}{'p50 us':>10}{'p99 us':>10}"
        f"{'client CPU':>12}{'server CPU':>12}{'server us/op':>14}",
    ]
    for figure in FIGURES:
        lines.append(_figure_row(figure, results["figures"][figure.name]))
    lines += ["", f"{'ratio':<54}{'value':>7}{'target':>10}{'met':>6}"]
    for ratio in results["ratios"].values():
        target = f"{ratio['comparison']} {ratio['target']:g}"
        lines.append(f"{ratio['description']:<54}{ratio['value']:>7.2f}"
                     f"{target:>10}{'yes' if ratio['met'] else 'no':>6}")
    return "\n".join(lines)


def _figure_row(figure: Figure, values: dict[str, float]) -> str:
    row = f"{figure.label:<26}{values['ops_per_s']:>10,.0f}"
    if not figure.is_load:
        return row
    row += f"{values['p50_us']:>10,.0f}{values['p99_us']:>10,.0f}"
    for role in ("client", "server"):
        share = values.get(f"{role}_cpu_percent")
        row += f"{share:>11.0f}%" if share is not None else f"{'-':>12}"
    cost = values.get("server_cpu_us_per_op")
    row += f"{cost:>14,.0f}" if cost is not None else f"{'-':>14}"
    return row
