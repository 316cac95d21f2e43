"""The HTTP request and response the gateway's protocols work on.

``server`` reads an ``HttpRequest`` off the connection with h11 and
writes back the ``HttpResponse`` a protocol module returns; the protocol
modules never touch sockets. ``GatewayServices`` is what a protocol
needs to serve a request: the dispatcher, the credentials, the nonce
cache and the clock. ``Outcome`` adds, for a request refused before it
reached the dispatcher, the error, so the server can log it.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
from typing import Any
from urllib.parse import urlsplit

from agent.context import Clock, Peer, RequestContext
from agent.gateway.credentials import CredentialsFile
from agent.gateway.identity import GatewayPeer
from agent.gateway.replay import NonceCache
from client.errors import KmsError

MAX_CLOCK_SKEW = datetime.timedelta(minutes=15)


@dataclasses.dataclass(frozen=True)
class HttpRequest:
    """One HTTP request: header names are lower-case, values Latin-1 text."""

    method: str
    target: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    peer: Peer

    @property
    def path(self) -> str:
        """Return the path part of the target."""
        return urlsplit(self.target).path

    @property
    def query(self) -> str:
        """Return the raw query string of the target, without the '?'."""
        return urlsplit(self.target).query

    def header_values(self, name: str) -> list[str]:
        """Return every value of header ``name`` (lower-case), in order."""
        return [value for key, value in self.headers if key == name]

    def body_sha256(self) -> str:
        """Return the lower-case hex SHA-256 of the body."""
        return hashlib.sha256(self.body).hexdigest()


@dataclasses.dataclass
class HttpResponse:
    """An HTTP response to send: status, headers and the whole body."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes


@dataclasses.dataclass
class Outcome:
    """A response, and the error of a request refused before dispatch.

    Requests that reach the dispatcher are logged there; ``refused`` is
    set only for those the gateway turned away itself.
    """

    response: HttpResponse
    refused: KmsError | None = None
    operation: str | None = None


@dataclasses.dataclass
class GatewayServices:
    """What the protocol modules need to authenticate and run requests."""

    dispatcher: Any
    credentials: CredentialsFile
    nonces: NonceCache
    clock: Clock = dataclasses.field(default_factory=Clock)
    max_skew: datetime.timedelta = MAX_CLOCK_SKEW

    def within_skew(self, moment: datetime.datetime) -> bool:
        """Return whether ``moment`` is within the allowed clock skew."""
        return abs(self.clock.now() - moment) <= self.max_skew

    async def dispatch(self, operation: str, peer: Peer, principal: str,
                       credential_id: str, params: dict[str, Any]) -> dict[str, Any]:
        """Run ``operation`` for an authenticated gateway caller.

        Raises:
            KmsError: from the dispatcher, with ``request_id`` set.
        """
        caller = GatewayPeer(peer.uid, peer.gid, peer.pid, peer.groups,
                             peer.start_time, principal=principal,
                             credential_id=credential_id)
        ctx = RequestContext.new(operation, caller)
        return await self.dispatcher.handle(ctx, params)
