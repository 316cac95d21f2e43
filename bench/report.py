"""The results of a run: the JSON document and the plain-text table.

The JSON contains the median of every figure, every round's figures,
the targets with their verdicts, the peers that were not measured and
why, the agents' secret cache counters, and the settings, machine and
agent commit of the run. ``format_table`` renders the table from that
document alone, so a stored JSON file can be printed again.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
from pathlib import Path
from typing import Any

from bench.catalog import MEMORY, RATE, SECTIONS, STREAM, Figure

JSON_SCHEMA_VERSION = 2
LOAD_METRICS = ("ops_per_s", "p50_us", "p99_us")
MB = 10**6


def build_results(figures: dict[str, dict[str, Any]], order: list[Figure],
                  rounds: dict[str, list[dict[str, Any]]], ratios: dict[str, Any],
                  context: dict[str, Any]) -> dict[str, Any]:
    """Return the JSON document of a run.

    ``context`` contains ``date``, ``settings``, ``load_average`` (1, 5 and
    15 minute load average at the start, since other work on the machine
    skews every figure), ``commit``, ``unavailable`` (peer name to
    reason) and ``secret_caches``.
    """
    return {
        "schema": JSON_SCHEMA_VERSION,
        "date": context["date"],
        "commit": context["commit"],
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "load_average_at_start": list(context["load_average"]),
            "load_average_at_end": list(os.getloadavg()),
        },
        "settings": context["settings"],
        "catalog": [dataclasses.asdict(figure) for figure in order],
        "figures": figures,
        "ratios": ratios,
        "unavailable_peers": context["unavailable"],
        "secret_caches": context["secret_caches"],
        "rounds": rounds,
    }


def write_json(results: dict[str, Any], path: Path) -> None:
    """Write the results to ``path`` as indented JSON."""
    path.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


def format_table(results: dict[str, Any]) -> str:
    """Return the figures and targets of a run as a plain-text table."""
    lines = _heading(results)
    catalog = [Figure(**entry) for entry in results["catalog"]]
    for section in SECTIONS:
        members = [figure for figure in catalog if figure.section == section]
        if members:
            lines += ["", _SECTION_HEADINGS[section]]
            lines += [_row(figure, results["figures"].get(figure.name, {}))
                      for figure in members]
    for name, reason in results["unavailable_peers"].items():
        lines.append(f"{name} not measured: {reason}")
    lines += ["", f"{'target':<62}{'value':>8}{'target':>10}{'met':>6}"]
    lines += [_ratio_row(ratio) for ratio in results["ratios"].values()]
    return "\n".join(lines)


def _heading(results: dict[str, Any]) -> list[str]:
    settings = results["settings"]
    machine = results["machine"]
    load_average = "/".join(f"{value:.1f}" for value in (
        machine["load_average_at_start"][0], machine["load_average_at_end"][0]))
    return [
        f"kms-agent benchmark, {results['date']}, {machine['cpus']} CPUs, "
        f"load average {load_average} (start/end), agent at {results['commit']}",
        f"median of {settings['rounds']} rounds of {settings['seconds']:g} s "
        f"(warm-up {settings['warmup_seconds']:g} s); agent clients: "
        f"{settings['client_mode']}; peer clients: one thread each",
    ]


_LOAD_COLUMNS = (f"{'ops/s':>10}{'p50 us':>10}{'p99 us':>10}"
                 f"{'cli CPU':>9}{'srv CPU':>9}{'srv us/op':>11}")
_SECTION_HEADINGS = {
    "floors": f"{'floor':<46}{'ops/s':>10}",
    "loads": f"{'figure':<46}{_LOAD_COLUMNS}",
    "store": f"{'large store':<46}{_LOAD_COLUMNS}",
    "other": f"{'file and memory':<46}{'value':>10}",
}


def _row(figure: Figure, values: dict[str, Any]) -> str:
    label = f"{figure.label:<46}"
    if "error" in values:
        return f"{label}failed: {values['error']}"
    if not values:
        return f"{label}not measured"
    if figure.kind == RATE:
        return f"{label}{values['ops_per_s']:>10,.0f}"
    if figure.kind == STREAM:
        return f"{label}{values['bytes_per_s'] / MB:>10,.0f} MB/s"
    if figure.kind == MEMORY:
        return f"{label}{values['rss_bytes'] / MB:>10,.1f} MB"
    return label + _load_columns(values)


def _load_columns(values: dict[str, Any]) -> str:
    columns = f"{values['ops_per_s']:>10,.0f}{values['p50_us']:>10,.0f}"
    columns += f"{values['p99_us']:>10,.0f}"
    for role in ("client", "server"):
        share = values.get(f"{role}_cpu_percent")
        columns += f"{share:>8.0f}%" if share is not None else f"{'-':>9}"
    cost = values.get("server_cpu_us_per_op")
    return columns + (f"{cost:>11,.0f}" if cost is not None else f"{'-':>11}")


def _ratio_row(ratio: dict[str, Any]) -> str:
    target = f"{ratio['comparison']} {ratio['target']:g}"
    if ratio["value"] is None:
        return (f"{ratio['description']:<62}{'-':>8}{target:>10}"
                f"{'n/a':>6}  (no {ratio['missing']})")
    verdict = "yes" if ratio["met"] else "no"
    return f"{ratio['description']:<62}{ratio['value']:>8.2f}{target:>10}{verdict:>6}"

