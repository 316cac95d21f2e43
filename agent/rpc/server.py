"""The Unix socket listener and the per-connection loop.

The listener takes an exclusive lock file next to the socket before it
touches the socket path, so a second agent on the same path fails at
start, and a stale socket left by a killed agent is removed. The socket
is created with its final mode (no window with looser bits). Each
connection reads the peer's uid, gid and pid from the kernel when it is
accepted, speaks ``client.wire`` and runs its requests concurrently;
replies go out in completion order, matched by id.

``drain`` stops accepting and reading, lets in-flight requests finish
up to a deadline, then cancels what is left.
"""

from __future__ import annotations

import errno
import fcntl
import grp
import logging
import os
import socket
import struct
from pathlib import Path
from typing import Any

import trio

from agent.context import Peer, RequestContext
from agent.logs import log
from agent.rpc.dispatch import Dispatcher
from client import wire
from client.errors import KmsError

MAX_IN_FLIGHT_PER_CONNECTION = 128
READ_CHUNK_BYTES = 65536
_PEERCRED = struct.Struct("3i")


class StartupError(Exception):
    """The agent cannot start; the message says what to fix."""


def peer_credentials(sock: Any) -> Peer:
    """Return the kernel's SO_PEERCRED for a connected Unix socket."""
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
    except OSError:
        return Peer(None, None, None)
    pid, uid, gid = _PEERCRED.unpack(raw)
    return Peer(uid=uid, gid=gid, pid=pid)


class SocketLock:
    """An exclusive ``flock`` on ``<socket>.lock``, held while serving."""

    def __init__(self, socket_path: Path):
        self.path = socket_path.with_name(socket_path.name + ".lock")
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise StartupError if another agent holds it."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EACCES):
                raise StartupError(
                    f"another agent is already serving on {self.path.with_suffix('')}"
                ) from None
            raise
        self._fd = fd

    def release(self) -> None:
        """Drop the lock; the lock file stays for the next start."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def bind_socket(path: Path, mode: int, group: str | None) -> socket.socket:
    """Create the listening socket with its final mode and group.

    The caller must hold the ``SocketLock``, so an existing file at
    ``path`` is a stale socket of a dead agent and is removed.

    Raises:
        StartupError: the directory is missing or the group is unknown.
    """
    if not path.parent.is_dir():
        raise StartupError(f"socket directory {path.parent} does not exist")
    gid = -1
    if group is not None:
        try:
            gid = grp.getgrnam(group).gr_gid
        except KeyError:
            raise StartupError(f"socket group {group!r} does not exist") from None
    if path.exists() or path.is_symlink():
        if not path.is_socket():
            raise StartupError(f"{path} exists and is not a socket; remove it")
        path.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o777 & ~mode)
    try:
        sock.bind(str(path))
    except OSError as exc:
        sock.close()
        raise StartupError(f"cannot bind {path}: {exc.strerror}") from None
    finally:
        os.umask(old_umask)
    os.chmod(path, mode)
    if gid != -1:
        os.chown(path, -1, gid)
    sock.listen(512)
    return sock


class Server:
    """Serve the dispatcher on a bound listening socket."""

    def __init__(self, listener: socket.socket, dispatcher: Dispatcher,
                 max_frame_bytes: int):
        self._listener = trio.socket.from_stdlib_socket(listener)
        self._dispatcher = dispatcher
        self._max_frame = max_frame_bytes
        self._read_scopes: set[trio.CancelScope] = set()
        self._accepting = trio.CancelScope()
        self._in_flight = 0
        self._idle = trio.Event()
        self._idle.set()
        self.connections = 0

    async def serve(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Accept connections until ``drain`` is called."""
        listeners = [trio.SocketListener(self._listener)]
        async with trio.open_nursery() as nursery:
            task_status.started()
            with self._accepting:
                await trio.serve_listeners(self._serve_connection, listeners,
                                           handler_nursery=nursery)

    async def drain(self, timeout: float) -> None:
        """Stop accepting and reading; wait up to ``timeout`` for requests."""
        self._accepting.cancel()
        for scope in list(self._read_scopes):
            scope.cancel()
        log(logging.INFO, "draining", in_flight=self._in_flight,
            connections=self.connections)
        with trio.move_on_after(timeout):
            await self._idle.wait()

    async def _serve_connection(self, stream: trio.SocketStream) -> None:
        peer = peer_credentials(stream.socket)
        conn = wire.Connection(wire.Role.SERVER, max_frame_size=self._max_frame)
        send_lock = trio.Lock()
        slots = trio.Semaphore(MAX_IN_FLIGHT_PER_CONNECTION)
        self.connections += 1
        try:
            async with stream, trio.open_nursery() as requests:
                scope = trio.CancelScope()
                self._read_scopes.add(scope)
                with scope:
                    await self._read_loop(stream, conn, peer, send_lock, slots,
                                          requests)
                self._read_scopes.discard(scope)
        finally:
            self.connections -= 1

    async def _read_loop(self, stream: trio.SocketStream, conn: wire.Connection,
                         peer: Peer, send_lock: trio.Lock, slots: trio.Semaphore,
                         requests: trio.Nursery) -> None:
        while True:
            event = conn.next_event()
            if event is wire.NEED_DATA:
                try:
                    data = await stream.receive_some(READ_CHUNK_BYTES)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    data = b""
                conn.receive_data(data)
            elif event is wire.CLOSED:
                return
            elif isinstance(event, wire.Request):
                await slots.acquire()
                self._started()
                requests.start_soon(self._run_request, stream, conn, send_lock,
                                    slots, peer, event)
            elif isinstance(event, wire.Hello):
                await self._send(stream, send_lock, conn.send(wire.Welcome(
                    wire.PROTOCOL_VERSION, wire.SERVER_NAME, self._max_frame)))
            elif isinstance(event, wire.ProtocolError):
                log(logging.INFO, "protocol error", code=event.error.code,
                    peer_uid=peer.uid, peer_pid=peer.pid,
                    detail=event.error.message)
                await self._send(stream, send_lock, conn.send(
                    wire.error_response(event.error, event.request_id)))
                if event.fatal:
                    return

    def _started(self) -> None:
        self._in_flight += 1
        self._idle = trio.Event() if self._idle.is_set() else self._idle

    def _finished(self) -> None:
        self._in_flight -= 1
        if self._in_flight == 0:
            self._idle.set()

    async def _run_request(self, stream: trio.SocketStream, conn: wire.Connection,
                           send_lock: trio.Lock, slots: trio.Semaphore, peer: Peer,
                           request: wire.Request) -> None:
        try:
            ctx = RequestContext.new(request.op, peer)
            try:
                result = await self._dispatcher.handle(ctx, request.params)
                response = wire.Response(request.id, result=result)
            except KmsError as error:
                response = wire.error_response(error, request.id)
            await self._send(stream, send_lock, conn.send(response))
        finally:
            slots.release()
            self._finished()

    @staticmethod
    async def _send(stream: trio.SocketStream, send_lock: trio.Lock,
                    data: bytes) -> None:
        # A client that went away mid-request must not disturb the others.
        async with send_lock:
            try:
                await stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass

