"""Serve the metrics: a loopback HTTP listener and a textfile writer.

``serve_metrics`` serves ``GET /metrics`` (and HEAD) in the Prometheus
text format on the listeners of ``open_metrics_listeners``, a loopback
address: the configuration refuses any other, because the listener has
no authentication. It reads one
request head of at most 8 KiB per connection, replies and closes. At
most ``MAX_CONNECTIONS`` are served at once; more are closed unanswered.
``textfile_loop`` writes the same text to a file for node_exporter's
textfile collector, replacing it atomically every interval.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Callable

import trio

from agent.logs import log
from agent.rpc.server import StartupError

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MAX_HEAD_BYTES = 8192
MAX_DISCARD_BYTES = 1 << 20
MAX_CONNECTIONS = 8
READ_TIMEOUT = 5.0
METRICS_PATH = "/metrics"

Render = Callable[[], str]


async def open_metrics_listeners(host: str, port: int) -> list[trio.SocketListener]:
    """Listen on ``host:port`` for ``serve_metrics``.

    Raises:
        StartupError: the address cannot be bound.
    """
    try:
        return await trio.open_tcp_listeners(port, host=host)
    except OSError as exc:
        raise StartupError(
            f"metrics.listen: cannot listen on {host}:{port}: {exc.strerror}") from None


async def serve_metrics(render: Render, listeners: list[trio.SocketListener],
                        task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    """Serve ``render()`` on ``listeners`` until cancelled.

    ``task_status.started`` gets the bound ``(host, port)``, so a port of
    0 can be used in tests.
    """
    host, port = listeners[0].socket.getsockname()[:2]
    limiter = trio.CapacityLimiter(MAX_CONNECTIONS)
    log(logging.INFO, "metrics listener ready",
        detail=f"http://{_url_host(host)}:{port}{METRICS_PATH}")
    task_status.started((host, port))

    async def handle(stream: trio.SocketStream) -> None:
        try:
            limiter.acquire_nowait()
        except trio.WouldBlock:
            await stream.aclose()
            return
        try:
            await _answer(stream, render)
        finally:
            limiter.release()

    await trio.serve_listeners(handle, listeners)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


async def _answer(stream: trio.SocketStream, render: Render) -> None:
    async with stream:
        try:
            with trio.move_on_after(READ_TIMEOUT):
                head = await _read_head(stream)
                await stream.send_all(_response(head, render))
                await stream.send_eof()
                await _discard_rest(stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass


async def _discard_rest(stream: trio.SocketStream) -> None:
    # Closing with unread input would send a reset that can destroy the
    # reply in flight, so what the client still sends is read and dropped.
    received = 0
    while received < MAX_DISCARD_BYTES:
        chunk = await stream.receive_some(65536)
        if not chunk:
            return
        received += len(chunk)


async def _read_head(stream: trio.SocketStream) -> bytes | None:
    # Returns None when the head is too long or the peer closed early.
    data = b""
    while b"\r\n\r\n" not in data and b"\n\n" not in data:
        if len(data) > MAX_HEAD_BYTES:
            return None
        chunk = await stream.receive_some(4096)
        if not chunk:
            return None
        data += chunk
    return data


def _response(head: bytes | None, render: Render) -> bytes:
    if head is None:
        return _reply("400 Bad Request", b"bad request\n")
    request_line = head.split(b"\n", 1)[0].decode("latin-1").strip()
    parts = request_line.split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        return _reply("400 Bad Request", b"bad request\n")
    method, target = parts[0], parts[1].split("?", 1)[0]
    if method not in ("GET", "HEAD"):
        return _reply("405 Method Not Allowed", b"only GET and HEAD\n",
                      extra="Allow: GET, HEAD\r\n")
    if target != METRICS_PATH:
        return _reply("404 Not Found", f"try {METRICS_PATH}\n".encode())
    body = render().encode("utf-8")
    return _reply("200 OK", body, content_type=CONTENT_TYPE, head_only=method == "HEAD")


def _reply(status: str, body: bytes, content_type: str = "text/plain; charset=utf-8",
           extra: str = "", head_only: bool = False) -> bytes:
    head = (f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n{extra}Connection: close\r\n\r\n")
    return head.encode("latin-1") + (b"" if head_only else body)


async def textfile_loop(render: Render, path: Path, interval: float) -> None:
    """Write ``render()`` to ``path`` now and every ``interval`` seconds.

    A failed write is logged once until a write succeeds again, and the
    loop goes on. The last text is written once more when cancelled.
    """
    failing = False
    try:
        while True:
            failing = await _write_logged(render(), path, failing)
            await trio.sleep(interval)
    finally:
        with trio.CancelScope(shield=True):
            await _write_logged(render(), path, failing)


async def _write_logged(text: str, path: Path, failing: bool) -> bool:
    try:
        await trio.to_thread.run_sync(write_textfile, path, text)
    except OSError as exc:
        if not failing:
            log(logging.ERROR, "metrics textfile write failed", error=str(exc),
                detail=str(path))
        return True
    return False


def write_textfile(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` in one rename (mode 0644)."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
    descriptor = os.open(temporary, flags, 0o644)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as stream:
            stream.write(text)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
