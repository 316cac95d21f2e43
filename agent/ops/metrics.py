"""Prometheus metrics: a small registry and the text exposition format.

The registry is written here instead of taken from prometheus_client.
The agent needs counters, gauges read at scrape time and histograms,
rendered in the text format 0.0.4 by a trio listener. prometheus_client
would add a dependency whose HTTP server runs in threads and which
registers process-wide collectors by default.

Label values come only from bounded sets (operation names of the table,
error codes, keystore names and call names), never from request data,
so a caller cannot grow the number of series. ``instrument.AgentMetrics``
declares the agent's metrics, ``instrument.MetricsStage`` and
``instrument.instrument_keystore`` feed them, and ``exposition`` serves
them.
"""

from __future__ import annotations

import bisect
import dataclasses
import math
from typing import Callable, Iterable

# Upper bounds in seconds, from 0.5 ms (an inline AES call) to 10 s (a
# stalled HSM or a long poll).
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                   0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

Labels = tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Sample:
    """One line of the exposition: name suffix, labels and value."""

    suffix: str
    labels: dict[str, str]
    value: float


@dataclasses.dataclass(frozen=True)
class Family:
    """A metric family as rendered: name, type, help and its samples."""

    name: str
    kind: str
    help: str
    samples: list[Sample]


class Counter:
    """A monotonically increasing value per label set."""

    kind = "counter"

    def __init__(self, name: str, help_text: str, labels: Labels = ()):
        self.name, self.help, self.labels = name, help_text, labels
        self._values: dict[Labels, float] = {}

    def inc(self, *label_values: str, amount: float = 1.0) -> None:
        """Add ``amount`` (default 1) to the series of ``label_values``."""
        key = _check_labels(self.labels, label_values)
        self._values[key] = self._values.get(key, 0.0) + amount

    def value(self, *label_values: str) -> float:
        """Return the current value of one series (0 if never increased)."""
        return self._values.get(tuple(label_values), 0.0)

    def family(self) -> Family:
        samples = [Sample("", dict(zip(self.labels, key)), value)
                   for key, value in sorted(self._values.items())]
        return Family(self.name, self.kind, self.help, samples)


class Gauge(Counter):
    """A value that goes up and down per label set."""

    kind = "gauge"

    def set(self, *label_values: str, value: float) -> None:
        """Set the series of ``label_values`` to ``value``."""
        self._values[_check_labels(self.labels, label_values)] = value


class Histogram:
    """Observations counted in cumulative buckets, with their sum."""

    kind = "histogram"

    def __init__(self, name: str, help_text: str, labels: Labels = (),
                 buckets: tuple[float, ...] = LATENCY_BUCKETS):
        self.name, self.help, self.labels = name, help_text, labels
        self.buckets = tuple(sorted(buckets))
        self._series: dict[Labels, _HistogramSeries] = {}

    def observe(self, value: float, *label_values: str) -> None:
        """Count one observation of ``value`` in the series of the labels."""
        key = _check_labels(self.labels, label_values)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = _HistogramSeries(len(self.buckets))
        series.counts[bisect.bisect_left(self.buckets, value)] += 1
        series.total += value

    def count(self, *label_values: str) -> int:
        """Return how many observations one series has."""
        series = self._series.get(tuple(label_values))
        return 0 if series is None else sum(series.counts)

    def family(self) -> Family:
        samples: list[Sample] = []
        for key, series in sorted(self._series.items()):
            labels = dict(zip(self.labels, key))
            cumulative = 0
            for bound, count in zip((*self.buckets, math.inf), series.counts):
                cumulative += count
                samples.append(Sample("_bucket", {**labels, "le": _number(bound)},
                                      cumulative))
            samples.append(Sample("_sum", labels, series.total))
            samples.append(Sample("_count", labels, cumulative))
        return Family(self.name, self.kind, self.help, samples)


@dataclasses.dataclass
class _HistogramSeries:
    size: dataclasses.InitVar[int]
    counts: list[int] = dataclasses.field(init=False)
    total: float = 0.0

    def __post_init__(self, size: int) -> None:
        # One count per bucket plus the +Inf bucket.
        self.counts = [0] * (size + 1)


Metric = Counter | Histogram
# Returns families computed at scrape time, such as cache statistics.
Collector = Callable[[], Iterable[Family]]


class Registry:
    """The metrics and scrape-time collectors of one agent."""

    def __init__(self) -> None:
        self._metrics: list[Metric] = []
        self._collectors: list[Collector] = []

    def counter(self, name: str, help_text: str, labels: Labels = ()) -> Counter:
        """Create and register a counter; its name should end in _total."""
        return self._add(Counter(name, help_text, labels))

    def gauge(self, name: str, help_text: str, labels: Labels = ()) -> Gauge:
        """Create and register a gauge."""
        return self._add(Gauge(name, help_text, labels))

    def histogram(self, name: str, help_text: str, labels: Labels = (),
                  buckets: tuple[float, ...] = LATENCY_BUCKETS) -> Histogram:
        """Create and register a histogram."""
        return self._add(Histogram(name, help_text, labels, buckets))

    def add_collector(self, collector: Collector) -> None:
        """Call ``collector`` at every scrape for more families."""
        self._collectors.append(collector)

    def families(self) -> list[Family]:
        """Return every family, registered ones first."""
        families = [metric.family() for metric in self._metrics]
        for collector in self._collectors:
            families.extend(collector())
        return families

    def render(self) -> str:
        """Return the text exposition format 0.0.4 of every family."""
        return "".join(render_family(family) for family in self.families())

    def _add(self, metric):
        self._metrics.append(metric)
        return metric


def render_family(family: Family) -> str:
    """Return the HELP, TYPE and sample lines of one family."""
    lines = [f"# HELP {family.name} {_escape_help(family.help)}",
             f"# TYPE {family.name} {family.kind}"]
    for sample in family.samples:
        labels = ",".join(f'{name}="{_escape_label(value)}"'
                          for name, value in sample.labels.items())
        selector = "{" + labels + "}" if labels else ""
        lines.append(f"{family.name}{sample.suffix}{selector} {_number(sample.value)}")
    return "\n".join(lines) + "\n"


def _check_labels(names: Labels, values: tuple[str, ...]) -> Labels:
    if len(names) != len(values):
        raise ValueError(f"expected labels {names}, got {len(values)} values")
    return tuple(values)


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    if float(value).is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(float(value))


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")
