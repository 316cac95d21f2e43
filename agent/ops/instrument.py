"""The agent's metrics and what feeds them.

``AgentMetrics`` declares every metric the agent exports. Requests are
counted and timed by ``MetricsStage``, a dispatcher stage placed first,
so its ``after`` runs last and records the code actually sent. A request
refused before the stages run (unknown operation, invalid parameters)
is counted but not timed, because no stage saw it start.
``instrument_keystore`` times the calls of one keystore, as the agent
waits for them (worker thread queueing included). Cache, connection and
keystore state are read at scrape time by ``add_agent_collectors``.
"""

from __future__ import annotations

import functools
import time
from typing import Any, Awaitable, Callable, Iterable

from agent.context import RequestContext
from agent.keystore.base import Keystore
from agent.ops.metrics import Family, Registry, Sample
from agent.rpc.dispatch import Operation, Stage
from client.errors import KmsError, ThrottlingError

# Keystore methods that reach the backend; each is timed under its name.
TIMED_CALLS = ("generate", "encrypt", "decrypt", "random_bytes",
               "generate_key_pair", "generate_mac_key", "sign",
               "asymmetric_decrypt", "mac", "import_material")
# The operation label of requests naming an operation the agent lacks, so
# made-up names cannot add series.
UNKNOWN_OPERATION = "unknown"
_INSTRUMENTED = "_kms_agent_metrics"


class AgentMetrics:
    """Every metric of one agent, in one registry."""

    def __init__(self, registry: Registry | None = None):
        self.registry = registry or Registry()
        add = self.registry
        self.requests = add.counter(
            "kms_agent_requests_total", "Requests answered, by operation and code.",
            ("operation", "code"))
        self.request_seconds = add.histogram(
            "kms_agent_request_duration_seconds",
            "Time from the first stage to the reply, by operation.", ("operation",))

        self.in_progress = add.gauge(
            "kms_agent_requests_in_progress",
            "Requests past parameter validation and not yet answered.")
        self.throttled = add.counter(
            "kms_agent_throttled_requests_total",
            "Requests refused by a rate limit, by operation.", ("operation",))

        self.keystore_seconds = add.histogram(
            "kms_agent_keystore_call_duration_seconds",
            "Time of keystore (HSM) calls as the agent waits for them.",
            ("keystore", "call"))
        self.keystore_errors = add.counter(
            "kms_agent_keystore_call_errors_total",
            "Keystore calls that raised, by exception type.",
            ("keystore", "call", "error"))

        self.reloads = add.counter(
            "kms_agent_reloads_total", "Configuration reloads (SIGHUP).")
        self.backups = add.counter(
            "kms_agent_backups_total", "Store snapshots taken, by result.",
            ("result",))
        self.rotations = add.counter(
            "kms_agent_rotations_total",
            "Automatic rotations run by the background jobs, by resource and result.",
            ("resource", "result"))
        self.start_time = add.gauge(
            "kms_agent_start_time_seconds", "Start time of the agent, Unix seconds.")
        self.start_time.set(value=time.time())


class MetricsStage(Stage):
    """Count and time every request; see the module docstring."""

    def __init__(self, metrics: AgentMetrics,
                 clock: Callable[[], float] = time.perf_counter):
        self._metrics = metrics
        self._clock = clock
        self._started: dict[str, float] = {}

    async def before(self, ctx: RequestContext, operation: Operation,
                     values: dict[str, Any]) -> None:
        self._started[ctx.request_id] = self._clock()
        self._metrics.in_progress.inc()

    async def after(self, ctx: RequestContext, operation: Operation | None,
                    values: dict[str, Any], result: dict[str, Any] | None,
                    failure: KmsError | None) -> None:
        name = operation.name if operation is not None else UNKNOWN_OPERATION
        code = failure.code if failure is not None else "OK"
        self._metrics.requests.inc(name, code)
        if isinstance(failure, ThrottlingError):
            self._metrics.throttled.inc(name)
        started = self._started.pop(ctx.request_id, None)
        if started is not None:
            self._metrics.in_progress.inc(amount=-1)
            self._metrics.request_seconds.observe(self._clock() - started, name)


def instrument_keystore(keystore: Keystore, metrics: AgentMetrics) -> Keystore:
    """Time every backend call of ``keystore``; return the same object.

    The timed wrappers are set on the instance, so ``isinstance`` checks
    and every other attribute stay as they were. A second call is a no-op.
    """
    if getattr(keystore, _INSTRUMENTED, False):
        return keystore
    for call in TIMED_CALLS:
        method = getattr(keystore, call, None)
        if method is not None:
            setattr(keystore, call, _timed(method, keystore.name, call, metrics))
    setattr(keystore, _INSTRUMENTED, True)
    return keystore


def _timed(method: Callable[..., Awaitable[Any]], keystore: str, call: str,
           metrics: AgentMetrics) -> Callable[..., Awaitable[Any]]:
    @functools.wraps(method)
    async def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return await method(*args, **kwargs)
        except Exception as exc:
            metrics.keystore_errors.inc(keystore, call, type(exc).__name__)
            raise
        finally:
            metrics.keystore_seconds.observe(time.perf_counter() - started,
                                             keystore, call)

    return timed


def add_agent_collectors(metrics: AgentMetrics, services: Any,
                         keystores: dict[str, Keystore],
                         connections: Callable[[], int]) -> None:
    """Read caches, keystores and connections at every scrape."""
    registry = metrics.registry
    registry.add_collector(lambda: _cache_families(services))
    registry.add_collector(lambda: [_keystore_up(keystores)])
    registry.add_collector(lambda: [Family(
        "kms_agent_open_connections", "gauge", "Client connections open now.",
        [Sample("", {}, connections())])])


_CACHE_COUNTERS = (
    ("hits", "kms_agent_cache_hits_total", "Cache lookups that found a fresh entry."),
    ("misses", "kms_agent_cache_misses_total", "Cache lookups that found none."),
    ("evictions", "kms_agent_cache_evictions_total",
     "Entries dropped to stay within the cache limits."),
    ("invalidations", "kms_agent_cache_invalidations_total",
     "Entries dropped because their secret or key changed."),
    ("stale_serves", "kms_agent_cache_stale_serves_total",
     "Secret values served past their TTL because the store or keystore failed."),
)


def _cache_families(services: Any) -> Iterable[Family]:
    caches = []
    secrets = getattr(services, "secrets", None)
    if secrets is not None:
        caches.append(("secret_value", secrets.cache.stats))
    data_keys = getattr(services, "data_keys", None)
    if data_keys is not None:
        caches.append(("data_key", data_keys.stats))
    for field, name, help_text in _CACHE_COUNTERS:
        samples = [Sample("", {"cache": cache}, getattr(stats, field, 0))
                   for cache, stats in caches]
        yield Family(name, "counter", help_text, samples)


def _keystore_up(keystores: dict[str, Keystore]) -> Family:
    samples = []
    for name, keystore in sorted(keystores.items()):
        ready = bool(keystore.status().get("ready", False))
        samples.append(Sample("", {"keystore": name}, 1 if ready else 0))
    return Family("kms_agent_keystore_up", "gauge",
                  "1 if the keystore is open and ready, else 0.", samples)
