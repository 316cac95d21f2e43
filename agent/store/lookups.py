"""Point lookups of the SQLite store, remembered until the database changes.

A request reads the same few rows again and again: the key, its alias,
its version, its resource policy. Turning those rows into records costs
more than the query. ``LookupCache`` keeps the records of the lookups
marked with ``remembered`` and drops them all when the database changes.

The store's own commits drop them at once: ``SqliteStore`` calls
``forget`` when a write returns. Commits of other processes on the same
file (other agents) are noticed through ``PRAGMA data_version``, which
takes a new value on a connection after any other connection commits.
Reading it costs about as much as a one-row query, so it is read at most
once per ``RECHECK_SECONDS``: another agent's change is seen here within
that time, as if its request had come that much later.

Only frozen records may be remembered: every caller gets the same object.
"""

from __future__ import annotations

import functools
import sqlite3
import time
from typing import Any, Awaitable, Callable, TypeVar

from agent.store.base import StoreError

T = TypeVar("T")

# More distinct lookups than this between two commits start the cache over.
MAX_ENTRIES = 65536
# How often ``PRAGMA data_version`` is read, at most.
RECHECK_SECONDS = 0.001


class LookupCache:
    """Records of point lookups, valid until the database changes."""

    def __init__(self, conn: sqlite3.Connection, max_entries: int = MAX_ENTRIES,
                 recheck_seconds: float = RECHECK_SECONDS,
                 clock: Callable[[], float] = time.monotonic):
        self._conn = conn
        self._max_entries = max_entries
        self._recheck_seconds = recheck_seconds
        self._clock = clock
        self._next_check = float("-inf")
        self._version: int | None = None
        self._entries: dict[tuple[Any, ...], Any] = {}
        self.hits = 0
        self.misses = 0

    def current(self) -> dict[tuple[Any, ...], Any]:
        """Return the entries, emptied first if the database changed.

        Raises:
            StoreError: the database cannot be read (or is closed).
        """
        now = self._clock()
        if now < self._next_check:
            return self._entries
        try:
            version = self._conn.execute("PRAGMA data_version").fetchone()[0]
        except sqlite3.Error as exc:
            raise StoreError(f"store read failed: {exc}") from exc
        self._next_check = now + self._recheck_seconds
        if version != self._version:
            self._version = version
            self._entries.clear()
        return self._entries

    def remember(self, entries: dict[tuple[Any, ...], Any],
                 key: tuple[Any, ...], value: Any) -> None:
        """Keep ``value`` under ``key`` in ``entries`` from ``current``."""
        if len(entries) >= self._max_entries:
            entries.clear()
        entries[key] = value

    def forget(self) -> None:
        """Drop every entry and read ``data_version`` at the next lookup."""
        self._entries.clear()
        self._next_check = float("-inf")


def remembered(method: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
    """Serve a store lookup method from its owner's ``lookups`` cache.

    The method must take only hashable positional arguments, return a
    frozen record or None, and read without waiting on anything.
    """
    name = method.__name__

    @functools.wraps(method)
    async def lookup(self: Any, *args: Any) -> T:
        cache: LookupCache = self.lookups
        entries = cache.current()
        key = (name, *args)
        try:
            value = entries[key]
        except KeyError:
            cache.misses += 1
            value = await method(self, *args)
            cache.remember(entries, key, value)
            return value
        cache.hits += 1
        return value

    return lookup
