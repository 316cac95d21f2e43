"""The targets a run checks: ratios of figures, and two memory limits.

Every ratio is computed from the median figures. Time per operation is
the inverse of throughput, which for one closed-loop client is its mean
latency. A target whose figures are missing (a peer that did not start,
a load that failed) gets no value and names the missing figure.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

Figures = dict[str, dict[str, float]]
MB = 10**6


@dataclasses.dataclass(frozen=True)
class Target:
    """One checked quantity: how to compute it and the bound it must meet."""

    name: str
    description: str
    comparison: str
    bound: float
    compute: Callable[[Figures], float]

    def evaluate(self, figures: Figures) -> dict[str, Any]:
        """Return the value, the verdict and, if a figure is missing, which."""
        result: dict[str, Any] = {"description": self.description,
                                  "target": self.bound,
                                  "comparison": self.comparison}
        try:
            value = self.compute(figures)
        except KeyError as missing:
            return dict(result, value=None, met=None, missing=missing.args[0])
        met = value <= self.bound if self.comparison == "<=" else value >= self.bound
        return dict(result, value=value, met=met)


def _value(figures: Figures, name: str, metric: str) -> float:
    figure = figures.get(name)
    if figure is None or metric not in figure:
        raise KeyError(name)
    return figure[metric]


def _ops(figures: Figures, name: str) -> float:
    return _value(figures, name, "ops_per_s")


def _time(figures: Figures, name: str) -> float:
    return 1.0 / _ops(figures, name)


def _speedup(agent: str, other: str) -> Callable[[Figures], float]:
    return lambda figures: _ops(figures, agent) / _ops(figures, other)


def _overhead(agent: str, floor: str) -> Callable[[Figures], float]:
    return lambda figures: _time(figures, agent) / (
        _time(figures, "echo_c1") + _time(figures, floor))


def _at_most(name: str, description: str, bound: float,
             compute: Callable[[Figures], float]) -> Target:
    return Target(name, description, "<=", bound, compute)


def _at_least(name: str, description: str, bound: float,
              compute: Callable[[Figures], float]) -> Target:
    return Target(name, description, ">=", bound, compute)


def targets(store_keys: int) -> list[Target]:
    """Return every target, for a large store of ``store_keys`` keys."""
    listed = [
        _at_most("encrypt_c1_overhead",
                 "Encrypt c=1 time/op / (echo c=1 + raw HSM encrypt)", 1.5,
                 _overhead("encrypt_c1", "raw_hsm_encrypt")),
        _at_least("encrypt_c16_vs_echo", "Encrypt c=16 ops/s / echo c=16 ops/s", 0.5,
                  _speedup("encrypt_c16", "echo_c16")),
    ]
    for peer, label, bound_c1, bound_c16 in (("pykmip", "PyKMIP", 20, 20),
                                             ("moto", "moto", 20, 20),
                                             ("openbao", "OpenBao Transit", 2.5, 4)):
        for clients, bound in ((1, bound_c1), (16, bound_c16)):
            listed.append(_at_least(
                f"encrypt_vs_{peer}_c{clients}",
                f"Encrypt c={clients} ops/s / {label} encrypt", bound,
                _speedup(f"encrypt_c{clients}", f"{peer}_encrypt_c{clients}")))
    for clients, bound in ((1, 3), (16, 5)):
        listed.append(_at_least(
            f"secret_hit_vs_openbao_kv_c{clients}",
            f"GetSecretValue hit c={clients} ops/s / OpenBao KV read", bound,
            _speedup(f"get_secret_hit_c{clients}", f"openbao_get_secret_c{clients}")))
    listed.append(_at_most(
        "sign_ecp256_c1_overhead",
        "AsymmetricSign EC_P256 c=1 time/op / (echo c=1 + raw HSM sign)", 1.5,
        _overhead("sign_ecp256_c1", "raw_hsm_sign_ecp256")))
    for clients in (1, 16):
        listed.append(_at_least(
            f"secret_hit_vs_echo_c{clients}",
            f"GetSecretValue hit c={clients} ops/s / echo c={clients}", 0.8,
            _speedup(f"get_secret_hit_c{clients}", f"echo_c{clients}")))
    listed += _store_and_file_targets(store_keys)
    return listed


def _store_and_file_targets(store_keys: int) -> list[Target]:
    return [
        _at_most("encrypt_store_vs_10_keys",
                 f"Encrypt c=1 time/op, {store_keys:,} keys / 10 keys", 1.1,
                 lambda figures: _time(figures, "encrypt_store_c1")
                 / _time(figures, "encrypt_c1")),
        _at_least("encrypt_file_vs_aesgcm",
                  "encrypt-file bytes/s / raw AESGCM bytes/s", 0.6,
                  lambda figures: _value(figures, "encrypt_file", "bytes_per_s")
                  / _value(figures, "raw_aesgcm_stream", "bytes_per_s")),
        _at_most("rss_idle_mb", "RSS idle, MB", 80,
                 lambda figures: _value(figures, "rss_idle", "rss_bytes") / MB),
        _at_most("rss_store_mb",
                 f"RSS with {store_keys:,} keys + secrets cached, MB", 250,
                 lambda figures: _value(figures, "rss_store", "rss_bytes") / MB),
    ]


def evaluate(figures: Figures, store_keys: int) -> dict[str, dict[str, Any]]:
    """Return every target's value and verdict, by name."""
    return {target.name: target.evaluate(figures) for target in targets(store_keys)}
