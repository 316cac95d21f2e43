"""The metrics registry, its text format, the stage and keystore timing."""

from __future__ import annotations

import types

import pytest
import trio

from agent.context import Peer, RequestContext
from agent.keystore.base import Keystore
from agent.ops.instrument import AgentMetrics, MetricsStage, instrument_keystore
from agent.ops.metrics import Registry
from agent.ops.notify import Notifier
from agent.ops.runtime import OpsRuntime
from agent.ops.settings import MetricsConfig
from agent.rpc.dispatch import Dispatcher, Operation
from agent.rpc.params import Param
from client import errors
from tests.fakes import FakeKeystore


def test_counter_renders_labels():
    """A counter renders HELP, TYPE and one line per label set."""
    registry = Registry()
    counter = registry.counter("x_total", "Things.", ("op",))
    counter.inc("a")
    counter.inc("a", amount=2)
    counter.inc("b")
    assert registry.render() == (
        "# HELP x_total Things.\n# TYPE x_total counter\n"
        'x_total{op="a"} 3\nx_total{op="b"} 1\n')


def test_label_values_escaped():
    """Quotes, backslashes and newlines in label values are escaped."""
    registry = Registry()
    registry.counter("x_total", "Things.", ("op",)).inc('a"b\\c\nd')
    assert 'x_total{op="a\\"b\\\\c\\nd"} 1' in registry.render()


def test_histogram_buckets_cumulative():
    """Histogram buckets count cumulatively, up to +Inf, with sum and count."""
    registry = Registry()
    histogram = registry.histogram("t_seconds", "Time.", (), buckets=(0.1, 1.0))
    for value in (0.05, 0.1, 0.5, 3.0):
        histogram.observe(value)
    text = registry.render()
    assert 't_seconds_bucket{le="0.1"} 2' in text
    assert 't_seconds_bucket{le="1"} 3' in text
    assert 't_seconds_bucket{le="+Inf"} 4' in text
    assert "t_seconds_sum 3.65" in text
    assert "t_seconds_count 4" in text


def test_wrong_label_count_rejected():
    """Passing the wrong number of label values is a programming error."""
    counter = Registry().counter("x_total", "Things.", ("op", "code"))
    with pytest.raises(ValueError):
        counter.inc("only-one")


async def echo(services, ctx, values):
    if values.get("Fail") == "throttle":
        raise errors.ThrottlingError()
    if values.get("Fail") == "crash":
        raise RuntimeError("boom")
    return {}


@pytest.fixture
def dispatcher():
    metrics = AgentMetrics()
    operation = Operation("Echo", echo, (Param("Fail"),))
    instance = Dispatcher([operation], None, stages=[MetricsStage(metrics)])
    instance.metrics = metrics
    return instance


async def call(dispatcher, op, **params):
    ctx = RequestContext.new(op, Peer(1, 1, 1))
    try:
        await dispatcher.handle(ctx, params)
    except errors.KmsError:
        pass


async def test_stage_counts_and_times(dispatcher):
    """A served request is counted with code OK and timed."""
    await call(dispatcher, "Echo")
    metrics = dispatcher.metrics
    assert metrics.requests.value("Echo", "OK") == 1
    assert metrics.request_seconds.count("Echo") == 1
    assert metrics.in_progress.value() == 0


async def test_stage_counts_error_codes(dispatcher):
    """Failures are counted by their code; a crash as InternalFailure."""
    await call(dispatcher, "Echo", Fail="crash")
    await call(dispatcher, "Echo", Fail="throttle")
    metrics = dispatcher.metrics
    assert metrics.requests.value("Echo", "InternalFailure") == 1
    assert metrics.requests.value("Echo", "Rejected.Throttling") == 1
    assert metrics.throttled.value("Echo") == 1


async def test_unknown_operation_one_label(dispatcher):
    """Made-up operation names share the label "unknown" and are not timed."""
    await call(dispatcher, "Nope1")
    await call(dispatcher, "Nope2")
    metrics = dispatcher.metrics
    assert metrics.requests.value("unknown", "InvalidApiName") == 2
    assert metrics.request_seconds.count("unknown") == 0


async def test_invalid_parameters_counted(dispatcher):
    """A request refused by parameter validation is counted, not timed."""
    await call(dispatcher, "Echo", Other="x")
    assert dispatcher.metrics.requests.value("Echo", "InvalidParameter") == 1
    assert dispatcher.metrics.request_seconds.count("Echo") == 0


async def test_keystore_calls_timed():
    """Instrumented keystore calls are timed by keystore and call name."""
    metrics = AgentMetrics()
    keystore = instrument_keystore(FakeKeystore("hsm1"), metrics)
    await keystore.random_bytes(8)
    material = await keystore.generate("v1", "Aliyun_AES_256", "HSM")
    await keystore.encrypt(material, b"x", b"")
    assert metrics.keystore_seconds.count("hsm1", "random_bytes") == 1
    assert metrics.keystore_seconds.count("hsm1", "generate") == 1
    assert metrics.keystore_seconds.count("hsm1", "encrypt") == 1


async def test_keystore_errors_counted():
    """A keystore call that raises is counted by exception type and re-raised."""
    metrics = AgentMetrics()
    keystore = instrument_keystore(FakeKeystore("hsm1"), metrics)
    with pytest.raises(ValueError):
        await keystore.generate("v1", "NO_SUCH_SPEC", "HSM")
    assert metrics.keystore_errors.value("hsm1", "generate", "ValueError") == 1
    assert metrics.keystore_seconds.count("hsm1", "generate") == 1


async def test_instrumenting_keeps_type_once():
    """The keystore keeps its class, and a second instrumenting adds nothing."""
    metrics = AgentMetrics()
    keystore = FakeKeystore("hsm1")
    instrument_keystore(keystore, metrics)
    instrument_keystore(keystore, metrics)
    await keystore.random_bytes(1)
    assert isinstance(keystore, FakeKeystore)
    assert isinstance(keystore, Keystore)
    assert metrics.keystore_seconds.count("hsm1", "random_bytes") == 1


async def test_rotation_job_counted(tmp_path):
    """The key rotation job reports each rotation it runs to its counter."""
    from agent import daemon
    from tests.agent.test_versions import Agent

    agent = Agent(tmp_path / "data")
    metrics = AgentMetrics()
    try:
        await agent.new_key(EnableAutomaticRotation=True, RotationInterval="7d")
        agent.clock.advance(days=8)
        with trio.CancelScope() as scope:
            def count(result):
                metrics.rotations.inc("key", result)
                scope.cancel()

            await daemon.rotation_loop(agent.keys, 3600, count)
    finally:
        await agent.store.aclose()
    assert metrics.rotations.value("key", "ok") == 1
    assert metrics.rotations.value("key", "failed") == 0


@pytest.mark.parametrize("outputs, collected", [
    ({}, False),
    ({"listen": ("127.0.0.1", 9464)}, True),
    ({"textfile": "metrics.prom"}, True),
])
async def test_requests_measured_only_with_an_output(tmp_path, outputs, collected):
    """Without a metrics output, requests and keystore calls are not measured."""
    config = types.SimpleNamespace(path=tmp_path / "config.toml",
                                   metrics=MetricsConfig(**outputs))
    ops = OpsRuntime(config, Notifier(None), None)
    ops.keystores = {"default": FakeKeystore("default")}
    ops.instrument_keystores()
    await ops.keystores["default"].random_bytes(8)
    assert isinstance(ops.stage, MetricsStage) is collected
    assert ops.metrics.keystore_seconds.count("default", "random_bytes") == int(collected)
