"""The SIGHUP hook registry and the agent's own reload hooks."""

from __future__ import annotations

import logging
import os
import signal
import types

import pytest
import trio

from agent.logs import LOGGER_NAME
from agent.ops import reload_hooks
from agent.ops.reload import ReloadHooks, ReloadRejected


def config(**fields):
    return types.SimpleNamespace(**fields)


async def test_hooks_run_in_order():
    """Every hook gets the loaded configuration, in registration order."""
    calls = []
    hooks = ReloadHooks(lambda: config(level="debug"))

    def hook(name):
        async def run(new):
            calls.append((name, new.level))
            return name
        return run

    hooks.register("first", hook("first"))
    hooks.register("second", hook("second"))
    done = await hooks.reload()
    assert calls == [("first", "debug"), ("second", "debug")]
    assert done == ["first: first", "second: second"]


async def test_rejected_hook_others_run():
    """A hook that rejects or crashes does not stop the hooks after it."""
    ran = []

    async def reject(new):
        raise ReloadRejected("bad value")

    async def crash(new):
        raise RuntimeError("bug")

    async def good(new):
        ran.append("good")
        return "fine"

    hooks = ReloadHooks(lambda: config())
    for name, hook in (("reject", reject), ("crash", crash), ("good", good)):
        hooks.register(name, hook)
    assert await hooks.reload() == ["good: fine"]
    assert ran == ["good"]


async def test_failed_load_runs_nothing():
    """A configuration that fails to load leaves every setting as it was."""
    ran = []

    def loader():
        raise ReloadRejected("agent.socket: missing required key")

    async def hook(new):
        ran.append(new)

    hooks = ReloadHooks(loader)
    hooks.register("hook", hook)
    assert await hooks.reload() == []
    assert ran == []


async def test_always_hook_runs_without_config():
    """A hook registered with always runs, with None, when loading fails."""
    ran = []

    def loader():
        raise ReloadRejected("invalid TOML")

    async def reopen(new):
        ran.append(new)
        return "reopened"

    hooks = ReloadHooks(loader)
    hooks.register("audit file", reopen, always=True)
    assert await hooks.reload() == ["audit file: reopened"]
    assert ran == [None]


async def test_before_after_callbacks():
    """The callbacks bracket every reload, even one without a file."""
    events = []
    hooks = ReloadHooks(None)
    hooks.on_reload(lambda: events.append("before"),
                    lambda done: events.append(("after", done)))
    await hooks.reload()
    assert events == ["before", ("after", [])]


async def test_sighup_triggers_reload(nursery):
    """SIGHUP to the process runs the hooks."""
    reloaded = trio.Event()

    async def hook(new):
        reloaded.set()

    hooks = ReloadHooks(lambda: config())
    hooks.register("hook", hook)
    await nursery.start(hooks.watch)
    os.kill(os.getpid(), signal.SIGHUP)
    with trio.fail_after(10):
        await reloaded.wait()
    nursery.cancel_scope.cancel()


async def test_log_hook():
    """The log hook sets the agent logger's level and which requests get lines."""
    logger = logging.getLogger(LOGGER_NAME)
    before = logger.level
    dispatcher = config(log_successes=False)
    try:
        summary = await reload_hooks.log_hook(dispatcher)(
            config(log_level="debug", log_requests="all"))
        assert summary == "level debug, requests all"
        assert logger.level == logging.DEBUG
        assert dispatcher.log_successes is True
    finally:
        logger.setLevel(before)


async def test_cache_limits_hook():
    """The cache hook changes the ages and budgets in place."""
    secrets = config(cache=config(ttl=300.0, stale_max_age=3600.0))
    data_keys = config(max_age=60.0, max_uses=100, max_bytes=2**30)
    new = config(secrets=config(cache_ttl=5.0, stale_max_age=10.0),
                 data_key_cache=config(max_age=1.0, max_uses=2, max_bytes=3))
    await reload_hooks.cache_limits_hook(secrets, data_keys)(new)
    assert (secrets.cache.ttl, secrets.cache.stale_max_age) == (5.0, 10.0)
    assert (data_keys.max_age, data_keys.max_uses, data_keys.max_bytes) == (1.0, 2, 3)


async def test_access_hook_rejects_message():
    """An access configuration that fails is rejected with its message."""
    class Control:
        def reload(self):
            error = ValueError("whole text")
            error.message = "policies.x: unknown principal"
            raise error

    hook = reload_hooks.access_hook(Control(), lambda access: None)
    with pytest.raises(ReloadRejected, match="unknown principal"):
        await hook(config())


async def test_restart_check_names_settings():
    """Changed start-only settings are named and rejected."""
    running = config(socket="/a", keystores={"k": 1}, log_level="info",
                     secrets=config(cache_max_entries=10))
    new = config(socket="/b", keystores={"k": 1}, log_level="debug",
                 secrets=config(cache_max_entries=20))
    with pytest.raises(ReloadRejected) as caught:
        await reload_hooks.restart_check_hook(running)(new)
    assert "socket" in str(caught.value)
    assert "secrets.cache_max_entries" in str(caught.value)
    assert "keystores" not in str(caught.value)
    assert "log_level" not in str(caught.value)


async def test_restart_check_quiet_when_same():
    """Nothing is reported when no start-only setting changed."""
    running = config(socket="/a")
    assert await reload_hooks.restart_check_hook(running)(config(socket="/a")) is None
