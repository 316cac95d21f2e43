"""The gateway's HTTP/1.1 server: trio streams, h11 for the protocol.

Each connection reads one request at a time (keep-alive: the next one
after the reply), picks the protocol by its headers (``dkms`` for
``x-kms-*`` or protobuf, ``openapi`` otherwise) and writes the reply
that protocol returns. Transport failures get the protocol's error
shape too: a malformed request is ParseRequestParameterException, a
body over ``max_body_bytes`` RequestEntityTooLarge, and more than
``max_in_flight`` concurrent requests Rejected.Throttling (429), which
the SDKs retry. After a malformed request or an oversized body the
connection closes; the server keeps serving others. A connection idle
longer than ``idle_timeout`` is closed, and one that does not deliver a
whole request within ``request_timeout`` of its first byte too.

Requests refused before they reach the dispatcher are logged here, at
most ``_REFUSAL_LOG_BURST`` lines a second; the dispatcher logs the rest.
"""

from __future__ import annotations

import logging
import socket
import time
import uuid
from typing import Any, Callable

import h11
import trio

from agent.context import Peer
from agent.gateway import dkms, openapi
from agent.gateway.http import GatewayServices, HttpRequest, HttpResponse, Outcome
from agent.logs import LOGGER_NAME, log
from agent.rpc.server import peer_credentials
from client.errors import (
    InternalFailureError, KmsError, ParseRequestError, RequestTooLargeError,
    ServiceUnavailableError, ThrottlingError,
)

READ_CHUNK_BYTES = 65536
MAX_HEADER_BYTES = 65536
_REFUSAL_LOG_BURST = 20
_REASONS = {200: b"OK", 400: b"Bad Request", 401: b"Unauthorized", 403: b"Forbidden",
            404: b"Not Found", 409: b"Conflict", 413: b"Payload Too Large",
            429: b"Too Many Requests", 500: b"Internal Server Error",
            503: b"Service Unavailable"}


class Limits:
    """The server's size, count and time limits."""

    def __init__(self, max_body_bytes: int, max_connections: int, max_in_flight: int,
                 idle_timeout: float, request_timeout: float):
        self.max_body_bytes = max_body_bytes
        self.max_connections = max_connections
        self.max_in_flight = max_in_flight
        self.idle_timeout = idle_timeout
        self.request_timeout = request_timeout


class _RefusalLog:
    """Log refused requests, at most ``burst`` lines a second."""

    def __init__(self, burst: int = _REFUSAL_LOG_BURST,
                 clock: Callable[[], float] = time.monotonic):
        self._burst, self._clock = burst, clock
        self._second, self._lines, self._dropped = 0, 0, 0

    def __call__(self, error: KmsError, operation: str | None, peer: Peer) -> None:
        second = int(self._clock())
        if second != self._second:
            self._second, self._lines = second, 0
        if self._lines >= self._burst:
            self._dropped += 1
            return
        self._lines += 1
        log(logging.INFO, "gateway request refused", op=operation, code=error.code,
            http_status=error.http_status, request_id=error.request_id,
            peer_uid=peer.uid, detail=error.message,
            count=self._dropped + 1 if self._dropped else None)
        self._dropped = 0


class GatewayServer:
    """Serve both gateway protocols on already-open trio listeners.

    Args:
        services: what the protocols need (dispatcher, credentials, ...).
        limits: sizes, counts and timeouts, from the configuration.
    """

    def __init__(self, services: GatewayServices, limits: Limits):
        self.services = services
        self.limits = limits
        self._refused = _RefusalLog()
        self._credentials_error: str | None = None
        self._accepting = trio.CancelScope()
        self._idle_scopes: set[trio.CancelScope] = set()
        self._draining = False
        self._in_flight = 0
        self._quiet = trio.Event()
        self.connections = 0

    async def serve(self, listeners: list[Any],
                    task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Accept connections until ``drain`` or cancellation."""
        async with trio.open_nursery() as connections:
            with self._accepting:
                task_status.started()
                await trio.serve_listeners(self._connection, listeners,
                                           handler_nursery=connections)
            for listener in listeners:
                await listener.aclose()

    async def drain(self, timeout: float) -> None:
        """Stop accepting, close idle connections, wait for open requests."""
        self._draining = True
        self._accepting.cancel()
        for scope in list(self._idle_scopes):
            scope.cancel()
        if self._in_flight:
            with trio.move_on_after(timeout):
                await self._quiet.wait()

    # --- one connection ---------------------------------------------------------

    async def _connection(self, stream: Any) -> None:
        self.connections += 1
        try:
            if self.connections > self.limits.max_connections:
                await self._refuse_connection(stream)
                return
            peer = self._peer(stream)
            conn = h11.Connection(h11.SERVER,
                                  max_incomplete_event_size=MAX_HEADER_BYTES)
            while not self._draining:
                request = await self._read_request(stream, conn, peer)
                if request is None:
                    break
                response = await self._run(request)
                await self._respond(stream, conn, response)
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    break
                conn.start_next_cycle()
        except (trio.BrokenResourceError, trio.ClosedResourceError,
                h11.LocalProtocolError):
            pass  # the client went away or the connection can carry no reply
        finally:
            self.connections -= 1
            with trio.CancelScope(shield=True):
                await stream.aclose()

    @staticmethod
    def _peer(stream: Any) -> Peer:
        # Only a Unix socket reports the peer's credentials. TCP and TLS
        # report none.
        sock = getattr(stream, "socket", None)
        if sock is not None and sock.family == socket.AF_UNIX:
            return peer_credentials(sock)
        return Peer(None, None, None)

    async def _refuse_connection(self, stream: Any) -> None:
        conn = h11.Connection(h11.SERVER)
        error = ServiceUnavailableError(
            "The gateway has too many open connections; try again later.")
        error.request_id = str(uuid.uuid4())
        await self._respond(stream, conn, openapi.error_response(error))

    async def _read_request(self, stream: Any, conn: h11.Connection,
                            peer: Peer) -> HttpRequest | None:
        # Returns None when the connection should close without a reply.
        deadline = trio.current_time() + self.limits.idle_timeout
        scope = trio.CancelScope(deadline=deadline)
        self._idle_scopes.add(scope)
        try:
            with scope:
                first = await self._next_event(stream, conn, peer)
        finally:
            self._idle_scopes.discard(scope)
        if scope.cancelled_caught or not isinstance(first, h11.Request):
            return None
        with trio.move_on_after(self.limits.request_timeout):
            return await self._read_body(stream, conn, peer, first)
        return None

    async def _next_event(self, stream: Any, conn: h11.Connection, peer: Peer) -> Any:
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError:
                await self._reply_malformed(stream, conn, peer)
                return None
            if event is not h11.NEED_DATA:
                return event
            conn.receive_data(await stream.receive_some(READ_CHUNK_BYTES))

    async def _read_body(self, stream: Any, conn: h11.Connection, peer: Peer,
                         head: h11.Request) -> HttpRequest | None:
        request = HttpRequest(
            method=head.method.decode("ascii", "replace"),
            target=head.target.decode("latin-1"),
            headers=tuple((name.decode("latin-1").lower(), value.decode("latin-1"))
                          for name, value in head.headers),
            body=b"", peer=peer)
        declared = request.header_values("content-length")
        body = bytearray()
        too_large = bool(declared) and declared[0].isdigit() and int(
            declared[0]) > self.limits.max_body_bytes
        while not too_large:
            event = await self._next_event(stream, conn, peer)
            if isinstance(event, h11.Data):
                body += event.data
                too_large = len(body) > self.limits.max_body_bytes
            elif isinstance(event, h11.EndOfMessage):
                return HttpRequest(request.method, request.target, request.headers,
                                   bytes(body), peer)
            else:
                return None
        error = RequestTooLargeError(
            f"The request body exceeds {self.limits.max_body_bytes} bytes.")
        await self._reply_refused(stream, conn, request, error)
        return None

    # --- replies ----------------------------------------------------------------

    async def _run(self, request: HttpRequest) -> HttpResponse:
        protocol = dkms if dkms.is_dkms_request(request) else openapi
        if self._in_flight >= self.limits.max_in_flight:
            error = ThrottlingError(
                "The gateway is serving its maximum of concurrent requests; "
                "try again shortly.")
            error.request_id = str(uuid.uuid4())
            self._refused(error, None, request.peer)
            return protocol.error_response(error)
        self._in_flight += 1
        try:
            outcome = await self._outcome(protocol, request)
        finally:
            self._in_flight -= 1
            if self._draining and not self._in_flight:
                self._quiet.set()
        if outcome.refused is not None:
            self._refused(outcome.refused, outcome.operation, request.peer)
        self._log_credentials_change()
        return outcome.response

    def _log_credentials_change(self) -> None:
        credentials = self.services.credentials
        if credentials.error == self._credentials_error:
            return
        self._credentials_error = credentials.error
        if credentials.error is not None:
            log(logging.ERROR, "gateway credentials file is invalid; the previous "
                "credentials stay in force", config=str(credentials.path),
                error=credentials.error)
        else:
            log(logging.INFO, "gateway credentials reloaded",
                config=str(credentials.path))

    async def _outcome(self, protocol: Any, request: HttpRequest) -> Outcome:
        try:
            return await protocol.handle(request, self.services)
        except Exception:
            # A bug in the gateway must not take the server down.
            error = InternalFailureError()
            error.request_id = str(uuid.uuid4())
            logging.getLogger(LOGGER_NAME).exception(
                "gateway request failed unexpectedly",
                extra={"fields": {"request_id": error.request_id}})
            return Outcome(protocol.error_response(error))

    async def _reply_malformed(self, stream: Any, conn: h11.Connection,
                               peer: Peer) -> None:
        # h11's message may quote the request line, and with it a plaintext.
        error = ParseRequestError(
            "The HTTP request is malformed; check the request line and headers.")
        error.request_id = str(uuid.uuid4())
        self._refused(error, None, peer)
        if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            await self._respond(stream, conn, openapi.error_response(error))

    async def _reply_refused(self, stream: Any, conn: h11.Connection,
                             request: HttpRequest, error: KmsError) -> None:
        error.request_id = str(uuid.uuid4())
        self._refused(error, None, request.peer)
        protocol = dkms if dkms.is_dkms_request(request) else openapi
        await self._respond(stream, conn, protocol.error_response(error))

    async def _respond(self, stream: Any, conn: h11.Connection,
                       response: HttpResponse) -> None:
        status = response.status
        headers = [("content-length", str(len(response.body))),
                   ("server", "kms-agent"), *response.headers]
        if self._draining:
            headers.append(("connection", "close"))
        await stream.send_all(conn.send(h11.Response(
            status_code=status, headers=headers, reason=_REASONS.get(status, b""))))
        await stream.send_all(conn.send(h11.Data(data=response.body)))
        await stream.send_all(conn.send(h11.EndOfMessage()))
