"""The Unix socket listener and the per-connection loop.

The listener takes an exclusive lock file next to the socket before it
touches the socket path, so a second agent on the same path fails at
start, and a stale socket left by a killed agent is removed. The socket
is created with its final mode (no window with looser bits). Each
connection reads the peer's uid, gid, groups and pid from the kernel
when it is accepted, speaks ``client.wire`` and runs its requests
concurrently; replies go out in completion order, matched by id.

Quick operations (``INLINE_OPERATIONS``) run on the connection's reader
itself rather than in a task of their own: their HSM call runs inline
and their store reads are local, so a task switch would cost more than
the request. A connection's quick requests run one after another; other
connections and the connection's other requests go on meanwhile. A reply
that fits in the socket buffer is written at once, without a trip
through the scheduler.

With access control, the hello is answered only once the caller is
identified: by its credentials, or by a client key proven through a
challenge. A caller that matches no principal, or whose proof fails,
gets an error reply of id 0 instead of the welcome, and the connection
closes.

``drain`` stops accepting and reading, lets in-flight requests finish
up to a deadline, then cancels what is left. Requests already read but
not started get ServiceUnavailableTemporary, which clients retry.
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

from agent.auth.control import AccessControl
from agent.auth.principals import process_groups, process_start_time
from agent.context import Peer, RequestContext
from agent.logs import LOGGER_NAME, LogThrottle, log
from agent.rpc.dispatch import Dispatcher
from agent.rpc.limits import ConnectionLimits
from client import wire
from client.errors import (
    InternalFailureError, KmsError, ReadTimeoutError, ServiceUnavailableError,
)

MAX_IN_FLIGHT_PER_CONNECTION = 128
# Operations that only wait, with no side effect, so they end when their
# caller disconnects instead of holding memory until their timeout.
CANCEL_ON_DISCONNECT = frozenset({"WaitSecretChange"})
# Operations run on the connection's reader; see the module docstring.
# NOTE: ReEncrypt of RSA ciphertext (SourceKeyId) waits on a worker thread
# for the private-key operation, and holds its connection's reader meanwhile.
INLINE_OPERATIONS = frozenset({
    "Encrypt", "Decrypt", "ReEncrypt", "GenerateDataKey",
    "GenerateDataKeyWithoutPlaintext", "GenerateMac", "VerifyMac",
    "AsymmetricVerify", "GenerateRandom", "GetSecretValue",
})
# The reader yields to other tasks after this many quick requests in a
# row taken from one read, so a long pipelined burst cannot hold the loop.
INLINE_BURST = 16
READ_CHUNK_BYTES = 65536
STOPPING_MESSAGE = "The agent is stopping; retry the request on a new connection."
NONCE_BYTES = 32
_PEERCRED = struct.Struct("3i")
# SO_PEERGROUPS (Linux 4.13) is missing from the socket module of Python 3.11.
_SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)
_MAX_GROUPS = 65536


class StartupError(Exception):
    """The agent cannot start; the message names what to fix."""


def peer_credentials(sock: Any) -> Peer:
    """Return the kernel's credentials of the process at the other end.

    uid, gid and pid come from SO_PEERCRED and the supplementary groups
    from SO_PEERGROUPS, both as they were when the peer connected. Where
    the kernel lacks SO_PEERGROUPS the groups are read from ``/proc``,
    and kept only if the pid still has the start time read here.
    """
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
    except OSError:
        return Peer(None, None, None)
    pid, uid, gid = _PEERCRED.unpack(raw)
    start_time = process_start_time(pid)
    groups = _peer_groups(sock)
    if groups is None:
        groups = process_groups(pid, start_time)
    return Peer(uid=uid, gid=gid, pid=pid, groups=groups, start_time=start_time)


def _peer_groups(sock: Any) -> tuple[int, ...] | None:
    # The kernel fails with ERANGE when the buffer is too small for the
    # peer's groups, so the buffer grows up to the kernel's maximum.
    for size in (4 * 64, 4 * 4096, 4 * _MAX_GROUPS):
        try:
            raw = sock.getsockopt(socket.SOL_SOCKET, _SO_PEERGROUPS, size)
        except OSError as exc:
            if exc.errno == errno.ERANGE:
                continue
            return None
        count = len(raw) // 4
        return struct.unpack(f"{count}I", raw[:count * 4])
    return None


class _Session:
    """The state the handshake established for one connection."""

    def __init__(self, peer: Peer, handshake_timeout: float):
        self.peer = peer
        self.client_key_id: str | None = None
        self.offered_key_id: str | None = None
        self.nonce = b""
        self.welcomed = False
        # Cancel scopes of this connection's long polls.
        self.waits: set[trio.CancelScope] = set()
        self.handshake_deadline = trio.current_time() + handshake_timeout


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
                 max_frame_bytes: int, access: AccessControl | None = None,
                 limits: ConnectionLimits = ConnectionLimits()):
        self._limits = limits
        self._per_uid: dict[int | None, int] = {}
        self._log_throttle = LogThrottle()
        self._listener = trio.socket.from_stdlib_socket(listener)
        self._dispatcher = dispatcher
        self._max_frame = max_frame_bytes
        self._access = access
        self._read_scopes: set[trio.CancelScope] = set()
        self._draining = False
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
        self._draining = True
        self._accepting.cancel()
        for scope in list(self._read_scopes):
            scope.cancel()
        log(logging.INFO, "draining", in_flight=self._in_flight,
            connections=self.connections)
        with trio.move_on_after(timeout):
            await self._idle.wait()
        if self._in_flight:
            log(logging.WARNING, "drain timed out; cancelling the requests left",
                in_flight=self._in_flight, detail=f"drain_timeout {timeout:g} s")

    async def _serve_connection(self, stream: trio.SocketStream) -> None:
        peer = peer_credentials(stream.socket)
        conn = wire.Connection(wire.Role.SERVER, max_frame_size=self._max_frame)
        send_lock = trio.Lock()
        slots = trio.Semaphore(MAX_IN_FLIGHT_PER_CONNECTION)
        if not self._admit(peer):
            async with stream:
                await self._send(stream, send_lock, conn.send(wire.error_response(
                    ServiceUnavailableError("The agent has too many connections; "
                                            "close idle ones and retry."))))
            return
        self.connections += 1
        self._per_uid[peer.uid] = self._per_uid.get(peer.uid, 0) + 1
        try:
            async with stream, trio.open_nursery() as requests:
                session = _Session(peer, self._limits.handshake_timeout)
                await self._read_loop(stream, conn, session, send_lock, slots,
                                      requests)
                if not self._draining:
                    # The caller left, so no one can read a long poll's reply.
                    for wait in session.waits:
                        wait.cancel()
        finally:
            self.connections -= 1
            self._per_uid[peer.uid] -= 1
            if not self._per_uid[peer.uid]:
                del self._per_uid[peer.uid]

    def _admit(self, peer: Peer) -> bool:
        limits = self._limits
        if (self.connections < limits.max_connections and self._per_uid.get(
                peer.uid, 0) < limits.max_connections_per_uid):
            return True
        self._note("connection refused: too many connections", peer,
                   ServiceUnavailableError.code)
        return False

    def _note(self, message: str, peer: Peer, code: str,
              detail: str | None = None) -> None:
        # Callers can trigger these lines at will, so they are rate-limited.
        if self._log_throttle.allow():
            log(logging.INFO, message, code=code, peer_uid=peer.uid,
                peer_pid=peer.pid, detail=detail,
                count=self._log_throttle.take_suppressed())

    def _read_timeout(self, conn: wire.Connection, session: _Session,
                      slots: trio.Semaphore) -> float:
        limits = self._limits
        if not session.welcomed:
            return max(0.0, session.handshake_deadline - trio.current_time())
        if conn.in_frame:
            return limits.frame_timeout
        return limits.idle_timeout

    async def _read_loop(self, stream: trio.SocketStream, conn: wire.Connection,
                         session: _Session, send_lock: trio.Lock,
                         slots: trio.Semaphore, requests: trio.Nursery) -> None:
        peer = session.peer
        burst = 0
        while True:
            event = conn.next_event()
            if event is wire.NEED_DATA:
                if self._draining:
                    return
                burst = 0
                data = b""
                # Each read has a scope of its own, which drain cancels, so
                # a quick request running on this reader is never cancelled.
                with trio.move_on_after(self._read_timeout(conn, session, slots)) \
                        as timer:
                    self._read_scopes.add(timer)
                    try:
                        data = await stream.receive_some(READ_CHUNK_BYTES)
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        pass
                    finally:
                        self._read_scopes.discard(timer)
                if timer.cancelled_caught:
                    if self._draining:
                        return
                    busy = slots.value < MAX_IN_FLIGHT_PER_CONNECTION
                    if busy and session.welcomed and not conn.in_frame:
                        continue  # not idle while its requests run
                    self._note("connection closed: timed out", peer,
                               ReadTimeoutError.code)
                    return
                conn.receive_data(data)
            elif event is wire.CLOSED:
                return
            elif isinstance(event, wire.Request) and self._draining:
                # Read before the drain began but not started: the caller
                # learns to retry elsewhere instead of losing the reply.
                await self._send(stream, send_lock, conn.send(wire.error_response(
                    ServiceUnavailableError(STOPPING_MESSAGE), event.id)))
            elif isinstance(event, wire.Request) and event.op in INLINE_OPERATIONS:
                self._started()
                try:
                    await self._answer(stream, conn, send_lock, session, event)
                finally:
                    self._finished()
                burst += 1
                if burst == INLINE_BURST:
                    burst = 0
                    await trio.lowlevel.checkpoint()
            elif isinstance(event, wire.Request):
                try:
                    slots.acquire_nowait()  # no trip through the scheduler
                except trio.WouldBlock:
                    await slots.acquire()
                self._started()
                requests.start_soon(self._run_request, stream, conn, send_lock,
                                    slots, session, event)
            elif isinstance(event, (wire.Hello, wire.Proof)):
                reply = await self._handshake(session, event)
                session.welcomed = isinstance(reply, wire.Welcome)
                await self._send(stream, send_lock, conn.send(reply))
                if isinstance(reply, wire.Response):
                    return
            elif isinstance(event, wire.ProtocolError):
                self._note("protocol error", peer, event.error.code,
                           event.error.message)
                await self._send(stream, send_lock, conn.send(
                    wire.error_response(event.error, event.request_id)))
                if event.fatal:
                    return

    async def _handshake(self, session: _Session,
                         event: wire.Hello | wire.Proof) -> wire.Event:
        # Return the frame that answers a hello or a proof: a challenge,
        # the welcome, or the error reply that refuses the caller.
        welcome = wire.Welcome(wire.PROTOCOL_VERSION, wire.SERVER_NAME,
                               self._max_frame)
        if self._access is None:
            return welcome
        if isinstance(event, wire.Hello) and event.client_key_id is not None:
            session.offered_key_id = event.client_key_id
            session.nonce = os.urandom(NONCE_BYTES)
            return wire.Challenge(session.nonce)
        try:
            if isinstance(event, wire.Proof):
                await self._access.authenticate(
                    session.peer, session.offered_key_id, session.nonce,
                    event.signature)
                session.client_key_id = session.offered_key_id
            else:
                self._access.identify(session.peer)
        except KmsError as error:
            return self._refuse(session, error)
        except Exception as exc:
            logging.getLogger(LOGGER_NAME).exception(
                "caller identification failed",
                extra={"fields": {"peer_uid": session.peer.uid}})
            return self._refuse(session, InternalFailureError(), repr(exc))
        return welcome

    @staticmethod
    def _refuse(session: _Session, error: KmsError,
                detail: str | None = None) -> wire.Response:
        log(logging.INFO, "caller refused at handshake", code=error.code,
            peer_uid=session.peer.uid, peer_gid=session.peer.gid,
            peer_pid=session.peer.pid, client_key_id=session.offered_key_id,
            detail=detail or error.message)
        return wire.error_response(error, 0)

    def _started(self) -> None:
        self._in_flight += 1
        self._idle = trio.Event() if self._idle.is_set() else self._idle

    def _finished(self) -> None:
        self._in_flight -= 1
        if self._in_flight == 0:
            self._idle.set()

    async def _run_request(self, stream: trio.SocketStream, conn: wire.Connection,
                           send_lock: trio.Lock, slots: trio.Semaphore,
                           session: _Session, request: wire.Request) -> None:
        wait = trio.CancelScope()
        try:
            with wait:
                if request.op in CANCEL_ON_DISCONNECT:
                    session.waits.add(wait)
                await self._answer(stream, conn, send_lock, session, request)
        finally:
            session.waits.discard(wait)
            slots.release()
            self._finished()

    async def _answer(self, stream: trio.SocketStream, conn: wire.Connection,
                      send_lock: trio.Lock, session: _Session,
                      request: wire.Request) -> None:
        ctx = RequestContext.new(request.op, session.peer,
                                 client_key_id=session.client_key_id)
        try:
            result = await self._dispatcher.handle(ctx, request.params)
            response = wire.Response(request.id, result=result)
        except KmsError as error:
            response = wire.error_response(error, request.id)
        await self._send(stream, send_lock, conn.send(response))

    @staticmethod
    async def _send(stream: trio.SocketStream, send_lock: trio.Lock,
                    data: bytes) -> None:
        # The lock keeps each reply's bytes together on the socket. When it
        # is free, the reply is written at once, and only what the socket
        # buffer cannot take waits in trio. A client that went away
        # mid-request must not disturb the others.
        try:
            send_lock.acquire_nowait()
        except trio.WouldBlock:
            async with send_lock:
                await _send_all(stream, data)
            return
        try:
            try:
                sent = os.write(stream.socket.fileno(), data)
            except BlockingIOError:
                sent = 0
            except OSError:
                return
            if sent < len(data):
                await _send_all(stream, memoryview(data)[sent:])
        finally:
            send_lock.release()


async def _send_all(stream: trio.SocketStream, data: bytes | memoryview) -> None:
    try:
        await stream.send_all(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass

