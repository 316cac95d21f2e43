"""One SIGHUP handler that runs every registered reload hook.

trio delivers a signal only to the receiver opened last, so the daemon
opens one receiver for SIGHUP here and each service registers a hook
instead of opening its own. On SIGHUP the configuration file is loaded
once and every hook gets it, in registration order. A file that fails
to load is logged and changes nothing. Only the hooks registered with
``always`` run then, with None, for work that needs no configuration
(reopening a rotated log file, retrying a keystore). A hook returns a
short description of what it put in force, or raises ``ReloadRejected``
to keep its previous settings. One hook failing does not stop the
others.
"""

from __future__ import annotations

import logging
import signal
from typing import Any, Awaitable, Callable

import trio

from agent.logs import log

# A hook receives the newly loaded AgentConfig (None for an ``always``
# hook when loading failed) and returns what it reloaded ("debug"), or
# None when it has nothing to report.
Hook = Callable[[Any], Awaitable[str | None]]
# Loads the configuration again; raises ReloadRejected naming the problem.
Loader = Callable[[], Any]


class ReloadRejected(Exception):
    """A new configuration was not put in force; the message gives the reason."""


class ReloadHooks:
    """The registry of reload hooks; ``watch`` runs them on SIGHUP.

    Args:
        loader: rereads the configuration file, or None when the agent
            has no file to reload (dev mode); SIGHUP then only logs.
    """

    def __init__(self, loader: Loader | None):
        self._loader = loader
        self._hooks: list[tuple[str, Hook, bool]] = []
        self._before: list[Callable[[], None]] = []
        self._after: list[Callable[[list[str]], None]] = []

    def register(self, name: str, hook: Hook, always: bool = False) -> None:
        """Add ``hook`` under ``name``; it runs after those added before.

        With ``always``, it runs even when the configuration fails to load.
        """
        self._hooks.append((name, hook, always))

    def on_reload(self, before: Callable[[], None],
                  after: Callable[[list[str]], None]) -> None:
        """Call ``before()`` as a reload starts and ``after(done)`` at its end."""
        self._before.append(before)
        self._after.append(after)

    @property
    def names(self) -> list[str]:
        """The names of the registered hooks, in the order they run."""
        return [name for name, _, _ in self._hooks]

    async def watch(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Reload on every SIGHUP until cancelled."""
        with trio.open_signal_receiver(signal.SIGHUP) as signals:
            task_status.started()
            async for _ in signals:
                await self.reload()

    async def reload(self) -> list[str]:
        """Load the configuration and run every hook; return what reloaded."""
        for callback in self._before:
            callback()
        done: list[str] = []
        try:
            config = self._load()
            for name, hook, always in self._hooks:
                if config is not None or always:
                    await self._run_hook(name, hook, config, done)
        finally:
            for callback in self._after:
                callback(done)
        return done

    def _load(self) -> Any:
        if self._loader is None:
            log(logging.WARNING, "reload requested, but the agent was started "
                "without a configuration file")
            return None
        try:
            return self._loader()
        except ReloadRejected as exc:
            log(logging.ERROR, "configuration reload failed; the running "
                "configuration stays in force", error=str(exc))
            return None

    @staticmethod
    async def _run_hook(name: str, hook: Hook, config: Any, done: list[str]) -> None:
        try:
            what = await hook(config)
        except ReloadRejected as exc:
            log(logging.ERROR, "reload rejected; the previous settings stay in force",
                config=name, error=str(exc))
            return
        except Exception as exc:  # one broken hook must not stop the others
            log(logging.ERROR, "reload hook failed; the previous settings stay "
                "in force", config=name, error=repr(exc))
            return
        if what:
            log(logging.INFO, "reloaded", config=name, detail=what)
            done.append(f"{name}: {what}")
