"""Rotation of generic secrets and the WaitSecretChange long poll.

Rotation commands are small Python programs run with this interpreter,
without a shell; entry points live in ``tests.agent.secret_harness``.
"""

from __future__ import annotations

import sys

import pytest
import trio
import trio.testing

from agent.config import RotationRule
from agent.secrets import lifecycle
from agent.secrets.rotation import RotationBudget
from client import errors
from tests.agent.secret_harness import SecretAgent, config


def python(code: str) -> tuple[str, ...]:
    return (sys.executable, "-c", code)


APPEND = python("import sys; sys.stdout.write(sys.stdin.read() + '-next\\n')")
RULES = (
    RotationRule("cmd/*", command=APPEND),
    RotationRule("fail/*", command=python(
        "import sys; print('leaked-output-5b1e'); sys.exit(3)")),
    RotationRule("slow/*", command=python("import time; time.sleep(30)")),
    RotationRule("env/*", command=python(
        "import os, sys; sys.stdout.write(os.environ.get('KMS_SECRET_NAME', '') + "
        "':' + os.environ.get('AGENT_ONLY_VARIABLE', 'absent'))")),
    RotationRule("empty/*", command=python("pass")),
    RotationRule("missing/*", command=("/nonexistent/rotator",)),
    RotationRule("py/*", entry_point="tests.agent.secret_harness:next_value"),
    RotationRule("pyfail/*", entry_point="tests.agent.secret_harness:failing_rotator"),
)


@pytest.fixture
async def agent(tmp_path):
    instance = SecretAgent(tmp_path, config(rotation=RULES, rotation_timeout=5,
                                            rotation_retry_delay=600))
    yield instance
    await instance.store.aclose()


async def rotate(agent, name, version="r1"):
    return await agent.call("RotateSecret", SecretName=name, VersionId=version)


async def describe(agent, name):
    return await agent.call("DescribeSecret", SecretName=name)


async def test_command_rotation_moves_stages(agent):
    """The command's output becomes ACSCurrent; the old value ACSPrevious."""
    await agent.create("cmd/a", data="base")
    reply = await rotate(agent, "cmd/a")
    assert reply["VersionId"] == "r1"
    assert (await agent.value("cmd/a"))["SecretData"] == "base-next"
    assert await agent.stages("cmd/a") == {"v1": ["ACSPrevious"], "r1": ["ACSCurrent"]}
    assert (await describe(agent, "cmd/a"))["LastRotationDate"] == "2026-01-01T00:00:00Z"


async def test_rotate_existing_version_noop(agent):
    """RotateSecret with an existing VersionId succeeds and changes nothing."""
    await agent.create("cmd/a", data="base")
    await rotate(agent, "cmd/a", "v1")
    assert await agent.stages("cmd/a") == {"v1": ["ACSCurrent"]}


async def test_failed_command_keeps_current(agent):
    """A failing command leaves the current version and records the error."""
    await agent.create("fail/a", data="base")
    with pytest.raises(errors.RotationFailedError) as caught:
        await rotate(agent, "fail/a")
    described = await describe(agent, "fail/a")
    assert "status 3" in caught.value.message
    assert "leaked-output-5b1e" not in caught.value.message
    assert described["LastRotationError"] == "the rotation command exited with status 3"
    assert (await agent.value("fail/a"))["SecretData"] == "base"
    assert await agent.stages("fail/a") == {"v1": ["ACSCurrent"]}


async def test_success_clears_last_error(agent):
    """A later successful rotation clears LastRotationError."""
    await agent.create("fail/a", data="base")
    with pytest.raises(errors.RotationFailedError):
        await rotate(agent, "fail/a")
    agent.secrets.rotator.rules = (RotationRule("fail/*", command=APPEND),)
    await rotate(agent, "fail/a", "r2")
    assert "LastRotationError" not in await describe(agent, "fail/a")


async def test_slow_command_times_out(tmp_path):
    """A command past the timeout is killed and reported."""
    agent = SecretAgent(tmp_path, config(rotation=RULES, rotation_timeout=0.2))
    await agent.create("slow/a")
    with pytest.raises(errors.RotationFailedError) as caught:
        await rotate(agent, "slow/a")
    await agent.store.aclose()
    assert "timed out" in caught.value.message


@pytest.mark.parametrize("name, cause", [
    ("empty/a", "empty value"),
    ("missing/a", "cannot start"),
    ("pyfail/a", "raised RuntimeError"),
])
async def test_rotator_failures_named(agent, name, cause):
    """Each rotator failure names its cause but never the value."""
    await agent.create(name, data="value-marker-90c2")
    with pytest.raises(errors.RotationFailedError) as caught:
        await rotate(agent, name)
    assert cause in caught.value.message
    assert "value-marker-90c2" not in caught.value.message


async def test_command_environment_minimal(agent, monkeypatch):
    """The command sees its KMS_SECRET_* variables, not the agent's own."""
    monkeypatch.setenv("AGENT_ONLY_VARIABLE", "pin-1234")
    await agent.create("env/a")
    await rotate(agent, "env/a")
    assert (await agent.value("env/a"))["SecretData"] == "env/a:absent"


async def test_entry_point_rotation(agent):
    """A module:function entry point produces the next value."""
    await agent.create("py/a", data="7")
    await rotate(agent, "py/a")
    assert (await agent.value("py/a"))["SecretData"] == "7+1"


async def test_rotate_without_rule(agent):
    """A secret that no rule matches cannot be rotated."""
    await agent.create("plain")
    with pytest.raises(errors.UnsupportedOperationError):
        await rotate(agent, "plain")


@pytest.mark.parametrize("interval, valid", [
    ("5h", False), ("6h", True), ("21600s", True), ("7d", True), ("365d", True),
    ("8761h", False), ("7x", False), ("h", False),
])
async def test_rotation_interval_bounds(agent, interval, valid):
    """RotationInterval must be 6 h to 8,760 h with a d, h, m or s unit."""
    await agent.create("cmd/a")
    call = agent.call("UpdateSecretRotationPolicy", SecretName="cmd/a",
                      EnableAutomaticRotation=True, RotationInterval=interval)
    if valid:
        await call
    else:
        with pytest.raises(errors.InvalidParameterError):
            await call


async def test_policy_needs_rotator(agent):
    """Automatic rotation cannot be enabled without a matching rule."""
    await agent.create("plain")
    with pytest.raises(errors.UnsupportedOperationError):
        await agent.call("UpdateSecretRotationPolicy", SecretName="plain",
                         EnableAutomaticRotation=True, RotationInterval="7d")


async def test_scheduled_rotation_when_due(agent):
    """The rotation job rotates a secret once its interval has passed."""
    await agent.create("cmd/a", data="base", EnableAutomaticRotation=True,
                       RotationInterval="6h")
    described = await describe(agent, "cmd/a")
    assert described["RotationInterval"] == "21600s"
    assert described["NextRotationDate"] == "2026-01-01T06:00:00Z"
    agent.clock.advance(hours=5)
    assert await lifecycle.rotate_due_secrets(agent.secrets) == []
    agent.clock.advance(hours=2)
    results = await lifecycle.rotate_due_secrets(agent.secrets)
    assert [(name, error) for name, _, error in results] == [("cmd/a", None)]
    assert (await agent.value("cmd/a"))["SecretData"] == "base-next"
    assert (await describe(agent, "cmd/a"))["NextRotationDate"] == "2026-01-01T13:00:00Z"


async def test_scheduled_rotation_one_agent(agent, tmp_path):
    """Two agents on one database rotate a due secret exactly once."""
    other = SecretAgent(tmp_path / "other", config(rotation=RULES),
                        store=agent.store, keystore=agent.keystore, clock=agent.clock)
    await agent.create("cmd/a", EnableAutomaticRotation=True, RotationInterval="6h")
    agent.clock.advance(hours=7)
    results = []

    async def run(service):
        results.extend(await lifecycle.rotate_due_secrets(service))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run, agent.secrets)
        nursery.start_soon(run, other.secrets)
    assert len(results) == 1
    assert results[0][2] is None
    assert len(await agent.stages("cmd/a")) == 2


async def test_scheduled_failure_retried_later(agent):
    """A failed scheduled rotation is reported and retried after the delay."""
    await agent.create("fail/a", EnableAutomaticRotation=True, RotationInterval="6h")
    agent.clock.advance(hours=7)
    results = await lifecycle.rotate_due_secrets(agent.secrets)
    assert results[0][2].code == "SecretRotationFailed"
    assert await lifecycle.rotate_due_secrets(agent.secrets) == []
    agent.clock.advance(seconds=601)
    assert len(await lifecycle.rotate_due_secrets(agent.secrets)) == 1


async def test_deleted_secret_not_rotated(agent):
    """A secret in its recovery window is skipped by the rotation job."""
    await agent.create("cmd/a", EnableAutomaticRotation=True, RotationInterval="6h")
    await agent.call("DeleteSecret", SecretName="cmd/a")
    agent.clock.advance(hours=7)
    assert await lifecycle.rotate_due_secrets(agent.secrets) == []


# --- WaitSecretChange ----------------------------------------------------------


async def test_wait_wakes_on_put(agent):
    """A waiter returns the new version as soon as a put lands."""
    await agent.create()
    reply = {}

    async def waiter():
        reply.update(await agent.call("WaitSecretChange", SecretName="app/db",
                                      VersionId="v1", TimeoutSeconds=300))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        await agent.put("app/db", "v2", "new")
    assert reply["Changed"] is True
    assert reply["VersionId"] == "v2"


async def test_wait_returns_if_already_changed(agent):
    """A client that knows an old version gets the current one at once."""
    await agent.create()
    await agent.put("app/db", "v2", "new")
    reply = await agent.call("WaitSecretChange", SecretName="app/db",
                             VersionId="v1", TimeoutSeconds=300)
    assert reply["Changed"] is True
    assert reply["VersionId"] == "v2"


async def test_wait_ignores_other_stages(agent, autojump_clock):
    """A put of a custom stage does not end the wait; the timeout does."""
    await agent.create()
    reply = {}

    async def waiter():
        reply.update(await agent.call("WaitSecretChange", SecretName="app/db",
                                      VersionId="v1", TimeoutSeconds=60))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        await agent.put("app/db", "v2", "new", VersionStages=["blue"])
    assert reply["Changed"] is False
    assert reply["VersionId"] == "v1"


async def test_wait_times_out_unchanged(agent, autojump_clock):
    """Without a change the wait ends after TimeoutSeconds, unchanged."""
    await agent.create()
    reply = await agent.call("WaitSecretChange", SecretName="app/db",
                             VersionId="v1", TimeoutSeconds=300)
    assert reply["Changed"] is False
    assert reply["VersionId"] == "v1"


async def test_close_releases_waiters(agent):
    """Closing the notifier ends waits now, and later waits at once."""
    await agent.create()
    reply = {}

    async def waiter():
        reply.update(await agent.call("WaitSecretChange", SecretName="app/db",
                                      VersionId="v1", TimeoutSeconds=300))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        stats = await agent.call("DescribeAgentCache")
        agent.secrets.notifier.close()
    later = await agent.call("WaitSecretChange", SecretName="app/db",
                             VersionId="v1", TimeoutSeconds=300)
    assert stats["SecretWaiters"] == 1
    assert reply["Changed"] is False
    assert later["Changed"] is False


async def test_wait_on_deleted_secret(agent):
    """Deleting the secret ends the wait with the recovery window error."""
    await agent.create()

    async def waiter():
        with pytest.raises(errors.ResourceInDeleteWindowError):
            await agent.call("WaitSecretChange", SecretName="app/db",
                             VersionId="v1", TimeoutSeconds=300)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        await agent.call("DeleteSecret", SecretName="app/db")


async def test_wait_timeout_limit(agent):
    """TimeoutSeconds above 300 is InvalidParameter."""
    await agent.create()
    with pytest.raises(errors.InvalidParameterError):
        await agent.call("WaitSecretChange", SecretName="app/db", TimeoutSeconds=301)


async def test_rotate_limited_per_caller_hour(agent):
    """The 51st RotateSecret of a caller within an hour is Rejected.LimitExceeded."""
    await agent.create("py/limit", data="base")
    for number in range(50):
        await rotate(agent, "py/limit", f"r{number}")
    with pytest.raises(errors.LimitExceededError, match="50 calls per hour"):
        await rotate(agent, "py/limit", "r50")
    # Naming an existing version changes nothing and is not counted.
    await rotate(agent, "py/limit", "r49")
    agent.clock.advance(hours=1)
    await rotate(agent, "py/limit", "r50")


async def test_rotation_budget_separates_callers():
    """Each caller has its own budget, and old calls leave the window."""
    now = [0.0]
    budget = RotationBudget(lambda: now[0], limit=2)
    budget.take(("uid", 1))
    budget.take(("uid", 1))
    with pytest.raises(errors.LimitExceededError, match="retry in 3600 s"):
        budget.take(("uid", 1))
    budget.take(("uid", 2))
    now[0] = 3600.0
    budget.take(("uid", 1))
