"""The trio client: many requests in flight on one connection.

Use it as ``async with AsyncKmsClient() as client``. Entering opens the
connection, does the handshake and starts a reader task that hands each
reply to the call waiting on its request id, so calls from many tasks
share one connection and their replies may come in any order. When the
connection breaks, every waiting call fails with ``ServerUnreachableError``
and the next call opens a new connection. The typed wrappers come from
``client.sync.KmsOperations`` and the protocol from ``client.wire``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Awaitable
from typing import Any

import trio

from client.client_key import ClientKey, resolve_client_key
from client.errors import (
    InvalidParameterError,
    KmsError,
    ReadTimeoutError,
    ServerUnreachableError,
    error_from_wire,
)
from client.retry import RetryPolicy, acall_with_retries, as_policy, mark_not_sent
from client.sync import MAX_REPLY_FRAME_SIZE, KmsOperations, resolve_socket_path
from client.wire import (
    CLOSED,
    NEED_DATA,
    SOCKET_ENV,
    Challenge,
    Connection,
    Event,
    Hello,
    Proof,
    ProtocolError,
    Request,
    Response,
    Role,
    Welcome,
)

_RECEIVE_SIZE = 65536
_STREAM_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)


class _Waiter:
    """The slot where the reader task puts the outcome of one call."""

    __slots__ = ("done", "response", "error")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.response: Response | None = None
        self.error: KmsError | None = None

    def resolve(self, response: Response) -> None:
        self.response = response
        self.done.set()

    def fail(self, error: KmsError) -> None:
        self.error = error
        self.done.set()

    def result(self) -> dict[str, Any]:
        if self.error is not None:
            raise self.error
        if self.response.error is not None:
            raise error_from_wire(self.response.error)
        return self.response.result


class _Link:
    """One open connection: its stream, protocol state and waiting calls."""

    def __init__(self, stream: trio.SocketStream, connection: Connection):
        self.stream = stream
        self.connection = connection
        self.waiters: dict[int, _Waiter] = {}
        self.send_lock = trio.Lock()
        self.reader_scope = trio.CancelScope()
        self.broken = False
        self.peer_closed = False

    def close(self, message: str, cause: BaseException | None = None) -> None:
        """Fail every waiting call and stop the reader, which closes the stream."""
        if self.broken:
            return
        self.broken = True
        for waiter in self.waiters.values():
            error = ServerUnreachableError(message)
            error.__cause__ = cause
            waiter.fail(error)
        self.waiters.clear()
        self.reader_scope.cancel()


class AsyncKmsClient(KmsOperations[Awaitable[dict[str, Any]]]):
    """A trio client of the agent; enter it with ``async with``.

    Args:
        socket_path: the agent's socket; defaults to ``$KMS_AGENT_SOCKET``,
            then ``/run/kms-agent/agent.sock``.
        timeout: seconds each call waits for its reply. It is also sent to
            the agent as the request's ``timeout_ms``.
        connect_timeout: seconds allowed for connecting and the handshake.
        client_key: a ``ClientKey`` or the path of a client key file to
            prove at handshake; defaults to ``$KMS_AGENT_CLIENT_KEY``, and
            without either the agent knows the caller by its uid alone.
        retries: how many times a failed call is sent again, or a
            ``client.retry.RetryPolicy``; the default 0 turns retrying
            off. Which errors are retried depends on the operation (see
            ``client.retry``); by default no retry starts after
            ``timeout`` seconds.
    """

    def __init__(self, socket_path: str | os.PathLike[str] | None = None, *,
                 timeout: float = 30.0, connect_timeout: float = 5.0,
                 client_key: ClientKey | str | os.PathLike[str] | None = None,
                 retries: int | RetryPolicy = 0):
        self.socket_path = resolve_socket_path(socket_path)
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.client_key = resolve_client_key(client_key)
        self.retry_policy = as_policy(retries)
        self._nursery: trio.Nursery | None = None
        self._exit_stack: contextlib.AsyncExitStack | None = None
        self._link: _Link | None = None
        self._connect_lock = trio.Lock()
        self._last_request_id = 0

    def __repr__(self) -> str:
        return f"AsyncKmsClient(socket_path={self.socket_path!r})"

    async def __aenter__(self) -> AsyncKmsClient:
        if self._nursery is not None:
            raise RuntimeError("AsyncKmsClient is already open")
        stack = contextlib.AsyncExitStack()
        self._nursery = await stack.enter_async_context(trio.open_nursery())
        try:
            self._link = await self._open_link()
        except BaseException:
            self._nursery = None
            await stack.aclose()
            raise
        self._exit_stack = stack
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        # The body's exception is not passed to the nursery, so that it
        # reaches the caller as itself rather than in an ExceptionGroup.
        await self.aclose()

    async def aclose(self) -> None:
        """Fail the calls still waiting, close the connection and stop the reader."""
        if self._nursery is None:
            return
        if self._link is not None:
            self._link.close("The client was closed.")
        self._nursery.cancel_scope.cancel()
        stack = self._exit_stack
        self._nursery = self._exit_stack = self._link = None
        await stack.aclose()

    async def call(self, operation: str, **params: Any) -> dict[str, Any]:
        """Call ``operation`` with PascalCase ``params`` and return the result map.

        Raises:
            KmsError: the typed error the agent returned, such as
                ``KeyNotFoundError``.
            ServerUnreachableError: the socket cannot be reached or the
                connection broke before the reply.
            ReadTimeoutError: no reply came within ``timeout`` seconds.
            RuntimeError: the client is not open.
        Each is the error of the last attempt when retries are on.
        """
        if not isinstance(operation, str) or not operation:
            raise InvalidParameterError("The operation name must be a non-empty str.")
        return await acall_with_retries(
            self.retry_policy, operation, lambda: self._call_once(operation, params),
            self.timeout, trio.sleep, trio.current_time, lambda: self._nursery is None)

    async def _call_once(self, operation: str, params: dict[str, Any]
                         ) -> dict[str, Any]:
        try:
            link = await self._get_link()
        except KmsError as error:
            raise mark_not_sent(error)
        self._last_request_id += 1
        request = Request(self._last_request_id, operation, params,
                          timeout_ms=int(self.timeout * 1000))
        data = link.connection.send(request)
        waiter = _Waiter()
        link.waiters[request.id] = waiter
        sent = False
        try:
            with trio.move_on_after(self.timeout):
                await self._write(link, data)
                sent = True
                await waiter.done.wait()
        except KmsError as error:
            # A write that failed or was cut short leaves the agent without
            # a whole request frame, so it did not run the request.
            raise mark_not_sent(error)
        finally:
            # A reply that comes after this point finds no waiter and is
            # dropped by the reader.
            link.waiters.pop(request.id, None)
        if not waiter.done.is_set():
            error = ReadTimeoutError(
                f"The agent did not reply within {self.timeout} seconds.")
            raise error if sent else mark_not_sent(error)
        return waiter.result()

    async def _get_link(self) -> _Link:
        if self._nursery is None:
            raise RuntimeError("Open the client with 'async with' before calling it.")
        if self._link is not None and not self._link.broken:
            return self._link
        async with self._connect_lock:
            if self._link is None or self._link.broken:
                self._link = await self._open_link()
            return self._link

    async def _write(self, link: _Link, data: bytes) -> None:
        async with link.send_lock:
            if link.broken:
                raise ServerUnreachableError("The connection to the agent is closed.")
            try:
                await link.stream.send_all(data)
            except _STREAM_ERRORS as exc:
                link.close("The connection to the agent broke.", exc)
                message = "The connection to the agent broke."
                raise ServerUnreachableError(message) from exc
            except BaseException:
                # A send_all cut short by cancellation may leave part of a
                # frame on the stream, which would corrupt every later frame.
                link.close("A write to the agent was cancelled midway.")
                raise

    # --- connecting -----------------------------------------------------------

    async def _open_link(self) -> _Link:
        stream = await self._connect()
        connection = Connection(Role.CLIENT, max_frame_size=MAX_REPLY_FRAME_SIZE)
        try:
            with trio.fail_after(self.connect_timeout):
                await self._handshake(stream, connection)
        except trio.TooSlowError as exc:
            await trio.aclose_forcefully(stream)
            raise ReadTimeoutError(
                f"The agent did not reply to the hello within {self.connect_timeout} "
                f"seconds."
            ) from exc
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise
        link = _Link(stream, connection)
        self._nursery.start_soon(self._read_replies, link)
        return link

    async def _connect(self) -> trio.SocketStream:
        try:
            with trio.fail_after(self.connect_timeout):
                return await trio.open_unix_socket(self.socket_path)
        except (OSError, trio.TooSlowError) as exc:
            reason = getattr(exc, "strerror", None) or "timed out"
            raise ServerUnreachableError(
                f"Cannot connect to the agent socket {self.socket_path}: {reason}. "
                f"Check that kms-agent is running and that {SOCKET_ENV} names "
                f"its socket."
            ) from exc

    async def _handshake(self, stream: trio.SocketStream,
                         connection: Connection) -> None:
        key = self.client_key
        hello = Hello(client_key_id=key.client_key_id if key else None)
        try:
            await stream.send_all(connection.send(hello))
            event, peer_closed = await self._handshake_event(stream, connection)
            if type(event) is Challenge and key is not None:
                proof = Proof(key.sign_challenge(event.nonce))
                await stream.send_all(connection.send(proof))
                event, peer_closed = await self._handshake_event(stream, connection)
        except _STREAM_ERRORS as exc:
            raise ServerUnreachableError("The connection to the agent broke.") from exc
        if type(event) is Welcome:
            return
        # A fatal error before the stream ended is the agent's rejection of
        # the hello (an unsupported version, say), so it is raised as is.
        if type(event) is ProtocolError and not peer_closed:
            raise event.error
        cause = event.error if type(event) is ProtocolError else None
        raise ServerUnreachableError(
            "The agent closed the connection during the handshake."
        ) from cause

    @staticmethod
    async def _handshake_event(stream: trio.SocketStream,
                               connection: Connection) -> tuple[Event, bool]:
        # Return the next event and whether the agent closed the stream.
        peer_closed = False
        event = connection.next_event()
        while event is NEED_DATA:
            data = await stream.receive_some(_RECEIVE_SIZE)
            peer_closed = not data
            connection.receive_data(data)
            event = connection.next_event()
        return event, peer_closed

    # --- reading replies ------------------------------------------------------

    async def _read_replies(self, link: _Link) -> None:
        message, cause = "The agent closed the connection.", None
        try:
            with link.reader_scope:
                event = link.connection.next_event()
                while event is not CLOSED:
                    if event is NEED_DATA:
                        data = await link.stream.receive_some(_RECEIVE_SIZE)
                        link.peer_closed = not data
                        link.connection.receive_data(data)
                    else:
                        self._dispatch(link, event)
                    event = link.connection.next_event()
        except _STREAM_ERRORS as exc:
            message, cause = "The connection to the agent broke.", exc
        finally:
            link.close(message, cause)
            with trio.CancelScope(shield=True):
                await link.stream.aclose()

    def _dispatch(self, link: _Link, event: Event) -> None:
        # Hand a reply or a protocol error to its waiting call. An error
        # that names no request cannot be matched to a call, and the call
        # it belongs to would wait forever, so the connection is dropped.
        if type(event) is Response:
            if event.id == 0:
                link.close("The agent reported an error about no particular request.",
                           error_from_wire(event.error))
            elif event.id in link.waiters:
                link.waiters.pop(event.id).resolve(event)
            return
        # After the handshake a client Connection yields only responses
        # and protocol errors.
        if event.fatal:
            message = ("The agent closed the connection in the middle of a frame."
                       if link.peer_closed else "The agent broke the protocol.")
            link.close(message, event.error)
        elif event.request_id in link.waiters:
            link.waiters.pop(event.request_id).fail(event.error)
        elif event.request_id == 0:
            link.close("The agent sent a frame that could not be read.", event.error)
