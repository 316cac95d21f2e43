"""Unit tests of the benchmark suite's pure parts: targets, medians, tables.

They feed made-up figures and measure no speed. The peer
client's closed loop runs here against a fake peer in this process.
"""

from __future__ import annotations

import time

import pytest

from bench import catalog, load, ratios, report
from bench.peers import client as peer_client
from bench.stats import median_figure


def _figures() -> dict[str, dict[str, float]]:
    return {
        "encrypt_c1": {"ops_per_s": 1000.0},
        "echo_c1": {"ops_per_s": 4000.0},
        "raw_hsm_encrypt": {"ops_per_s": 40000.0},
        "encrypt_c16": {"ops_per_s": 3000.0},
        "echo_c16": {"ops_per_s": 10000.0},
        "rss_idle": {"rss_bytes": 60e6},
    }


def test_overhead_ratio_divides_times() -> None:
    """The c=1 overhead is agent time over echo plus HSM time."""
    result = ratios.evaluate(_figures(), 10000)["encrypt_c1_overhead"]
    expected = (1 / 1000) / (1 / 4000 + 1 / 40000)
    assert result["value"] == pytest.approx(expected)
    assert result["met"] is False


def test_throughput_ratio_meets_bound() -> None:
    """A ratio at or above its lower bound is met."""
    figures = dict(_figures(), encrypt_c16={"ops_per_s": 5000.0})
    result = ratios.evaluate(figures, 10000)["encrypt_c16_vs_echo"]
    assert result["value"] == pytest.approx(0.5)
    assert result["met"] is True


def test_memory_target_uses_megabytes() -> None:
    """The idle RSS target is in units of 10**6 bytes."""
    result = ratios.evaluate(_figures(), 10000)["rss_idle_mb"]
    assert result["value"] == pytest.approx(60.0)
    assert result["met"] is True


def test_missing_figure_names_itself() -> None:
    """A target whose figure is missing has no value and names the figure."""
    result = ratios.evaluate(_figures(), 10000)["encrypt_vs_moto_c1"]
    assert result["value"] is None
    assert result["met"] is None
    assert result["missing"] == "moto_encrypt_c1"


def test_failed_figure_counts_as_missing() -> None:
    """A figure that failed in every round gives its target no value."""
    figures = dict(_figures(), echo_c16={"error": "ServerStartError: gone"})
    result = ratios.evaluate(figures, 10000)["encrypt_c16_vs_echo"]
    assert result["missing"] == "echo_c16"


def test_median_skips_failed_rounds() -> None:
    """Rounds that failed are left out of the median."""
    rounds = [{"ops_per_s": 1.0}, {"error": "timeout"}, {"ops_per_s": 3.0}]
    assert median_figure(rounds) == {"ops_per_s": 2.0}


def test_median_of_failures_keeps_error() -> None:
    """When every round failed, the figure is the first error."""
    assert median_figure([{"error": "a"}, {"error": "b"}]) == {"error": "a"}


def test_requests_spread_over_keys() -> None:
    """Clients start at evenly spaced keys and cycle through all of them."""
    work = load.Load("unused", "Encrypt", {"Plaintext": b"x"}, 2,
                     ("k0", "k1", "k2", "k3"))
    first = load._requests(work, 0)
    second = load._requests(work, 1)
    assert next(first)["KeyId"] == "k0"
    assert [next(second)["KeyId"] for _ in range(5)] == ["k2", "k3", "k0", "k1", "k2"]


def test_requests_repeat_without_keys() -> None:
    """Without key ids, every request carries the same parameters."""
    work = load.Load("unused", "Encrypt", {"KeyId": "k"}, 1)
    requests = load._requests(work, 0)
    assert [next(requests) for _ in range(3)] == [{"KeyId": "k"}] * 3


def _results(figures: dict, targets: dict) -> dict:
    order = [catalog.FLOORS[0], catalog.echo_figure(1)]
    return report.build_results(
        figures, order, {}, targets,
        {"date": "2026-01-01 00:00 UTC", "commit": "abc", "load_average": (1, 1, 1),
         "unavailable": {"moto": "pip failed"}, "secret_caches": {},
         "settings": {"rounds": 1, "seconds": 1.0, "warmup_seconds": 0.1,
                      "client_mode": "tasks"}})


def test_table_shows_failed_figure() -> None:
    """A failed figure's row shows its error instead of numbers."""
    figures = {"raw_hsm_encrypt": {"ops_per_s": 5.0}, "echo_c1": {"error": "boom"}}
    table = report.format_table(_results(figures, {}))
    assert "failed: boom" in table


def test_table_names_unavailable_peer() -> None:
    """A peer that was not measured is listed with its reason."""
    table = report.format_table(_results({}, {}))
    assert "moto not measured: pip failed" in table


def test_table_marks_target_without_value() -> None:
    """A target without a value shows n/a and the missing figure."""
    targets = ratios.evaluate(_figures(), 10)
    table = report.format_table(_results({}, targets))
    assert "n/a  (no moto_encrypt_c1)" in table


class _FakePeer:
    """A peer whose requests sleep briefly, and fail on the ``fail`` operation."""

    operations = ("echo", "fail")

    def connect(self) -> object:
        return object()

    def request(self, operation: str):
        def call(client: object) -> None:
            time.sleep(0.001)
            if operation == "fail":
                raise RuntimeError("refused")

        return call


def _window(seconds: float) -> list[int]:
    now = time.monotonic_ns()
    return [now, now + 10_000_000, now + 10_000_000 + int(seconds * 1e9)]


def test_peer_runner_records_latencies() -> None:
    """The peer client's threads record one latency per completed request."""
    runner = peer_client.Runner(_FakePeer())
    runner.prepare("echo", 3)
    result = runner.run(_window(0.1))
    assert result["errors"] == 0
    assert len(result["latencies_ns"]) > 0
    assert min(result["latencies_ns"]) >= 1_000_000


def test_peer_runner_reports_failure() -> None:
    """A failing request ends its client and is reported with its message."""
    runner = peer_client.Runner(_FakePeer())
    runner.prepare("fail", 2)
    result = runner.run(_window(0.05))
    assert result["errors"] == 2
    assert result["first_error"] == "RuntimeError: refused"


def test_peer_runner_rejects_unknown_operation() -> None:
    """Preparing an operation the peer does not run raises PeerError."""
    runner = peer_client.Runner(_FakePeer())
    with pytest.raises(peer_client.PeerError):
        runner.prepare("sign", 1)
