"""Per-request context and the clock, passed from transport to services.

``RequestContext`` travels with every request: who is calling (the peer
credentials read from the socket), the request id that appears in the
reply, the log line and later the audit record, and the deadline the
client set. Domain services take a ``Clock`` so tests can move time.
"""

from __future__ import annotations

import dataclasses
import datetime
import itertools
import uuid

from client.errors import KmsError


# Request ids look like UUIDs: a random prefix drawn once per process and a
# 48-bit counter, so ids are unique per agent without a system call each.
_REQUEST_ID_PREFIX = str(uuid.uuid4())[:24]
_request_counter = itertools.count(1)


def new_request_id() -> str:
    """Return a fresh request id in UUID form."""
    return f"{_REQUEST_ID_PREFIX}{next(_request_counter) & 0xFFFFFFFFFFFF:012x}"


@dataclasses.dataclass(frozen=True)
class Peer:
    """Kernel-reported credentials of the process at the other end.

    ``groups`` are the supplementary group ids, or None when the kernel
    did not report them. ``start_time`` is the process start time from
    ``/proc/<pid>/stat`` (clock ticks since boot), read when the
    connection was accepted, so a later look at ``/proc/<pid>`` can tell
    whether the pid still names the same process.
    """

    uid: int | None
    gid: int | None
    pid: int | None
    groups: tuple[int, ...] | None = None
    start_time: int | None = None


@dataclasses.dataclass
class RequestContext:
    """What the agent knows about one request while serving it."""

    request_id: str
    operation: str
    peer: Peer
    deadline: float | None = None
    # The principal access control identified; None until it names one.
    principal: str | None = None
    # The client key the connection proved possession of at handshake.
    client_key_id: str | None = None
    # The keystores whose resources this request may see, set by access
    # control; None means every keystore. List handlers filter by it.
    keystores: frozenset[str] | None = None
    # Filled by handlers for the request's log line: the key and version
    # the request touched.
    key_id: str | None = None
    key_version_id: str | None = None
    # Items of a batch request that access control refused, by the name
    # the caller gave; the handler reports each in place of its result.
    refused_items: dict[str, KmsError] | None = None

    def keystore_scope(self, requested: tuple[str, ...] = ()) -> tuple[str, ...] | None:
        """Return the keystores a listing may show, given a requested filter.

        An empty result means no keystore filter. None means the caller
        may see none of the requested keystores, so the listing is empty.
        """
        if self.keystores is None:
            return requested
        allowed = sorted(self.keystores if not requested
                         else self.keystores.intersection(requested))
        return tuple(allowed) or None

    @classmethod
    def new(cls, operation: str, peer: Peer, deadline: float | None = None,
            client_key_id: str | None = None) -> "RequestContext":
        """Create a context with a fresh request id."""
        return cls(new_request_id(), operation, peer, deadline,
                   client_key_id=client_key_id)


class Clock:
    """Wall-clock time in UTC; tests substitute a ``FakeClock``."""

    def now(self) -> datetime.datetime:
        """Return the current time as an aware UTC datetime."""
        return datetime.datetime.now(datetime.timezone.utc)


class FakeClock(Clock):
    """A clock that only moves when told to."""

    def __init__(self, start: datetime.datetime | None = None):
        self._now = start or datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)

    def now(self) -> datetime.datetime:
        return self._now

    def advance(self, **delta: float) -> None:
        """Move the clock forward by a ``timedelta(**delta)``."""
        self._now += datetime.timedelta(**delta)
