"""Point lookups of the SQLite store, remembered until the database changes.

A request reads the same few rows again and again: the key, its alias,
its version, its resource policy. Turning those rows into records costs
more than the query. ``LookupCache`` keeps the records of the lookups
marked with ``remembered`` and drops them all as soon as the database
changes.

SQLite tells when: ``PRAGMA data_version`` on a connection takes a new
value after any other connection commits, whether it is this store's
writer or another agent's process on the same file. Each lookup reads
it first, which costs about as much as a one-row query, and starts from
an empty cache when it moved. A commit that lands between that check
and the lookup's query is seen at the next check, so a remembered record
is never older than the last commit this process could have seen.

Only frozen records may be remembered: every caller gets the same object.
"""

from __future__ import annotations

import functools
import sqlite3
from typing import Any, Awaitable, Callable, TypeVar

from agent.store.base import StoreError

T = TypeVar("T")

# More distinct lookups than this between two commits start the cache over.
MAX_ENTRIES = 65536


class LookupCache:
    """Records of point lookups, valid for one ``data_version`` of a connection."""

    def __init__(self, conn: sqlite3.Connection, max_entries: int = MAX_ENTRIES):
        self._conn = conn
        self._max_entries = max_entries
        self._version: int | None = None
        self._entries: dict[tuple[Any, ...], Any] = {}
        self.hits = 0
        self.misses = 0

    def current(self) -> dict[tuple[Any, ...], Any]:
        """Return the entries, emptied first if the database changed.

        Raises:
            StoreError: the database cannot be read (or is closed).
        """
        try:
            version = self._conn.execute("PRAGMA data_version").fetchone()[0]
        except sqlite3.Error as exc:
            raise StoreError(f"store read failed: {exc}") from exc
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
