"""Turn raw samples into figures, and rounds of figures into medians.

A figure is a flat map of metric name to number: ``ops_per_s`` always,
and for socket loads ``p50_us``, ``p99_us`` and the CPU use of the client
and server processes, both in percent of one core and in microseconds
per request. Rounds are combined by taking the median of each metric on
its own.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from typing import Any


@dataclasses.dataclass
class LoadSample:
    """The completions of one closed-loop load inside its measured window.

    Attributes:
        window_s: the length of the measured window, in seconds.
        latencies_ns: the latency of each request that completed inside
            the window, in nanoseconds.
        cpu_s: CPU seconds used during the window, by process role
            (``client``, ``server``).
    """

    window_s: float
    latencies_ns: list[int]
    cpu_s: dict[str, float] = dataclasses.field(default_factory=dict)


def percentile(sorted_values: list[int], fraction: float) -> int:
    """Return the nearest-rank percentile of an ascending, non-empty list."""
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


def load_figure(sample: LoadSample) -> dict[str, float]:
    """Return throughput, p50/p99 latency and CPU use of one load sample.

    Raises:
        ValueError: no request completed inside the window.
    """
    if not sample.latencies_ns:
        raise ValueError("no request completed inside the measured window")
    ordered = sorted(sample.latencies_ns)
    figure = {
        "ops_per_s": len(ordered) / sample.window_s,
        "p50_us": percentile(ordered, 0.50) / 1000,
        "p99_us": percentile(ordered, 0.99) / 1000,
    }
    for role, seconds in sample.cpu_s.items():
        figure[f"{role}_cpu_percent"] = 100 * seconds / sample.window_s
        figure[f"{role}_cpu_us_per_op"] = 1e6 * seconds / len(ordered)
    return figure


def rate_figure(operations: int, elapsed_s: float) -> dict[str, float]:
    """Return the figure of an in-process loop: its operations per second."""
    return {"ops_per_s": operations / elapsed_s}


def median_figure(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Return the median of each metric over the rounds that have it.

    Rounds that failed (``{"error": message}``) are left out. If every
    round failed, the result is the first round's error.
    """
    measured = [figure for figure in rounds if "error" not in figure]
    if not measured:
        return dict(rounds[0]) if rounds else {"error": "not measured"}
    names = {name for figure in measured for name in figure}
    return {
        name: statistics.median(figure[name] for figure in measured if name in figure)
        for name in sorted(names)
    }
