"""Start the gateway inside the daemon: listeners, TLS, services.

``open_gateway`` binds every configured listener (TCP, optionally TLS,
and the Unix socket) before the agent reports ready, so a port in use
stops the start with a clear error. The returned ``Gateway`` is served
in the daemon's nursery and drained with the socket server on SIGTERM.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

import trio

from agent.context import Clock
from agent.gateway import tls
from agent.gateway.credentials import CredentialsFile
from agent.gateway.http import GatewayServices
from agent.gateway.replay import NonceCache
from agent.gateway.server import GatewayServer, Limits
from agent.gateway.settings import GatewayConfig
from agent.logs import log
from agent.rpc.server import SocketLock, StartupError, bind_socket


@dataclasses.dataclass
class Gateway:
    """A gateway with its listeners bound, ready to serve."""

    server: GatewayServer
    listeners: list[Any]
    addresses: list[str]
    unix_socket: Path | None = None
    lock: SocketLock | None = None

    async def serve(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until drained or cancelled, then remove the Unix socket."""
        try:
            await self.server.serve(self.listeners, task_status)
        finally:
            if self.unix_socket is not None:
                self.unix_socket.unlink(missing_ok=True)
            if self.lock is not None:
                self.lock.release()

    async def drain(self, timeout: float) -> None:
        """Stop accepting and let requests in flight finish."""
        await self.server.drain(timeout)


async def open_gateway(config: GatewayConfig, dispatcher: Any, data_dir: Path,
                       clock: Clock) -> Gateway:
    """Bind the gateway's listeners and build its server.

    Raises:
        StartupError: a listener cannot be bound, or the TLS certificate
            cannot be made or loaded.
    """
    credentials = CredentialsFile(config.credentials_file or
                                  data_dir / "gateway-credentials.toml")
    services = GatewayServices(dispatcher, credentials, NonceCache(time.monotonic),
                               clock)
    limits = Limits(config.max_body_bytes, config.max_connections,
                    config.max_in_flight, config.idle_timeout, config.request_timeout)
    listeners: list[Any] = []
    addresses: list[str] = []
    lock = None
    if config.listen is not None:
        listeners += await _tcp_listeners(config, data_dir)
        host, port = listeners[0].socket.getsockname()[:2] if not config.tls else \
            listeners[0].transport_listener.socket.getsockname()[:2]
        scheme = "https" if config.tls else "http"
        addresses.append(f"{scheme}://{_bracket(host)}:{port}")
    if config.unix_socket is not None:
        lock = SocketLock(config.unix_socket)
        lock.acquire()
        sock = bind_socket(config.unix_socket, config.unix_socket_mode, None)
        listeners.append(trio.SocketListener(trio.socket.from_stdlib_socket(sock)))
        addresses.append(f"unix:{config.unix_socket}")
    server = GatewayServer(services, limits)
    _log_credentials(credentials)
    return Gateway(server, listeners, addresses, config.unix_socket, lock)


async def _tcp_listeners(config: GatewayConfig, data_dir: Path) -> list[Any]:
    host, port = config.listen
    try:
        listeners = await trio.open_tcp_listeners(port, host=host)
    except OSError as exc:
        raise StartupError(
            f"gateway: cannot listen on {host}:{port}: {exc.strerror}") from None
    if not config.tls:
        return listeners
    try:
        cert, key = (config.tls_cert, config.tls_key) if config.tls_cert else \
            tls.ensure_certificate(data_dir / "gateway-tls")
        context = tls.server_context(cert, key)
    except (OSError, ValueError) as exc:
        for listener in listeners:
            await listener.aclose()
        raise StartupError(f"gateway: TLS certificate: {exc}") from None
    return [trio.SSLListener(listener, context, https_compatible=True)
            for listener in listeners]


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _log_credentials(credentials: CredentialsFile) -> None:
    current = credentials.current()
    if credentials.error is not None:
        log(logging.ERROR, "gateway credentials file is invalid; signed requests "
            "are refused until it is fixed", config=str(credentials.path),
            error=credentials.error)
        return
    log(logging.INFO, "gateway credentials loaded", config=str(credentials.path),
        count=len(current.access_keys) + len(current.client_keys))
