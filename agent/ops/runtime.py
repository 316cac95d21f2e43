"""The operations side of one agent run, in the order the daemon needs it.

``OpsRuntime.from_environ`` runs first, before the socket lock: it takes
the systemd notification socket and any socket passed by activation,
and removes their variables from the environment. ``attach`` instruments
the keystores and builds health, backups and the metrics collectors once
the services exist. ``listen`` returns the listening socket (passed or
bound) and ``serving`` binds the metrics port. ``start`` starts the
SIGHUP watcher, the watchdog and the metrics outputs. ``ready`` and
``stopping`` notify systemd, and ``close`` drops the backups left.
Logging here is limited to what an operator acts on.
"""

from __future__ import annotations

import logging
import socket
from pathlib import Path
from typing import Any, Callable

import trio

from agent.config import ConfigError, load_config
from agent.logs import log
from agent.ops.activation import activated_listener
from agent.ops.backup_ops import BackupSessions
from agent.ops.exposition import open_metrics_listeners, serve_metrics, textfile_loop
from agent.ops.health import HealthService
from agent.ops.instrument import (
    AgentMetrics, MetricsStage, add_agent_collectors, instrument_keystore,
)
from agent.ops.notify import Notifier
from agent.ops.reload import ReloadHooks, ReloadRejected
from agent.rpc.dispatch import Stage
from agent.rpc.server import StartupError, bind_socket


class OpsRuntime:
    """Notification, activation, health, metrics, backups and reloads."""

    def __init__(self, config: Any, notifier: Notifier,
                 listener: socket.socket | None):
        self.config = config
        self.notifier = notifier
        self.listener = listener
        self.metrics = AgentMetrics()
        # Without an output the request metrics would never be read, so
        # requests skip them. [metrics] takes effect only at a restart.
        self.stage: Stage = (MetricsStage(self.metrics) if config.metrics.enabled
                             else Stage())
        self.reloads = ReloadHooks(_loader(config.path))
        self.reloads.on_reload(self._reload_started, self._reload_finished)
        self.health: HealthService | None = None
        self.backups: BackupSessions | None = None
        self.keystores: dict[str, Any] = {}
        self._server: Any = None
        self._metrics_listeners: list[trio.SocketListener] = []

    @classmethod
    def from_environ(cls, config: Any) -> "OpsRuntime":
        """Read the systemd variables of this process and remove them.

        Raises:
            StartupError: a variable is malformed, or the passed socket
                does not match ``config.socket``.
        """
        try:
            notifier = Notifier.from_environ()
        except ValueError as exc:
            raise StartupError(str(exc)) from None
        return cls(config, notifier, activated_listener(config.socket))

    @property
    def socket_activated(self) -> bool:
        """Whether systemd passed the listening socket."""
        return self.listener is not None

    def attach(self, keystores: dict[str, Any], store: Any, services: Any) -> None:
        """Instrument the keystores; build health, backups and collectors."""
        self.keystores = keystores
        self.instrument_keystores()
        self.health = HealthService(keystores, store, self._connections)
        self.health.socket_activated = self.socket_activated
        # NOTE: backups copy the SQLite file behind ``store.path``; a store
        # on another database will need its own snapshot method.
        self.backups = BackupSessions(store.path, self.config.data_dir)
        self.backups.on_result = lambda result: self.metrics.backups.inc(result)
        add_agent_collectors(self.metrics, services, keystores, self._connections)

    def instrument_keystores(self) -> None:
        """Time the calls of every keystore, including ones reopened since."""
        if not self.config.metrics.enabled:
            return
        for keystore in self.keystores.values():
            instrument_keystore(keystore, self.metrics)

    def listen(self) -> socket.socket:
        """Return the passed socket, or bind ``config.socket``."""
        if self.listener is not None:
            log(logging.INFO, "using the socket passed by systemd",
                socket=str(self.config.socket),
                detail="its mode and group come from kms-agent.socket")
            return self.listener
        config = self.config
        return bind_socket(config.socket, config.socket_mode, config.socket_group)

    async def serving(self, server: Any) -> None:
        """Note the server, for the connection count; bind the metrics port.

        Raises:
            StartupError: the metrics listener cannot bind its address.
        """
        self._server = server
        if self.config.metrics.listen is not None:
            host, port = self.config.metrics.listen
            self._metrics_listeners = await open_metrics_listeners(host, port)

    async def start(self, nursery: trio.Nursery) -> None:
        """Start the reload watcher, watchdog and metrics outputs."""
        await nursery.start(self.reloads.watch)
        if self.notifier.watchdog_interval is not None:
            nursery.start_soon(self._watchdog, self.notifier.watchdog_interval)
        if self._metrics_listeners:
            await nursery.start(serve_metrics, self.metrics.registry.render,
                                self._metrics_listeners)
        settings = self.config.metrics
        if settings.textfile is not None:
            nursery.start_soon(textfile_loop, self.metrics.registry.render,
                               settings.textfile, settings.textfile_interval)

    def rotation_counter(self, resource: str) -> Callable[[str], None]:
        """Return a callback that counts one rotation of ``resource``."""
        return lambda result: self.metrics.rotations.inc(resource, result)

    def ready(self) -> None:
        """Tell systemd the agent serves (after the socket accepts)."""
        self.notifier.ready(self._status())

    def stopping(self) -> None:
        """Tell systemd the agent drains and stops."""
        self.notifier.stopping(f"draining, {self._connections()} connections open")

    def close(self) -> None:
        """Drop the backups that clients have not deleted."""
        if self.backups is not None:
            self.backups.close()

    def _status(self) -> str:
        ready = [name for name, keystore in sorted(self.keystores.items())
                 if keystore.status().get("ready")]
        down = len(self.keystores) - len(ready)
        text = f"serving on {self.config.socket}; keystores ready: {', '.join(ready)}"
        return text + (f"; {down} unavailable" if down else "")

    def _connections(self) -> int:
        return 0 if self._server is None else self._server.connections

    def _reload_started(self) -> None:
        self.notifier.reloading()

    def _reload_finished(self, done: list[str]) -> None:
        self.metrics.reloads.inc()
        self.instrument_keystores()
        self.notifier.ready(self._status())

    async def _watchdog(self, interval: float) -> None:
        # A ping proves the event loop runs; a blocked loop (a hung inline
        # HSM call) stops the pings and systemd restarts the agent.
        while True:
            self.notifier.watchdog()
            await trio.sleep(interval)


def _loader(path: Path | None):
    if path is None:
        return None

    def load() -> Any:
        try:
            return load_config(path)
        except ConfigError as exc:
            raise ReloadRejected(str(exc)) from None

    return load
