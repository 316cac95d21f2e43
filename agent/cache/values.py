"""The cache of decrypted secret values.

Entries are keyed by a tuple whose first item is the secret name, such
as ``(name, None, "ACSCurrent")``. An entry is fresh for ``ttl``
seconds. After that it is kept only for stale serving, until
``stale_max_age``: a caller may use it when the store or keystore fails.

``invalidate(name)`` is the one way to drop a secret's entries, and
every write to a secret calls it before the write returns. A reader
that fetched a value before an invalidation must not store it after:
``token()`` is taken before the fetch and ``put`` refuses a token older
than the latest invalidation of that name. So once a write has
returned, no reader of this agent sees the old value.

Another agent on the same database cannot call ``invalidate`` here.
``SecretService.get_value`` covers its writes: before serving an entry
it compares the secret's record, which the store re-reads after any
commit, with the record the value was read with.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Hashable

from agent.cache.bounded import BoundedLRU, CacheStats

# A rough per-entry cost of the key tuple, record and bookkeeping.
ENTRY_OVERHEAD_BYTES = 256
# Forget per-name invalidation marks beyond this many names; tokens
# taken before the reset are then refused for every name.
MAX_MARKED_NAMES = 10000


@dataclasses.dataclass(frozen=True)
class _Entry:
    value: Any = dataclasses.field(repr=False)
    stored_at: float
    size: int


class ValueCache:
    """A TTL and LRU cache with stale serving; see the module docstring.

    ``timer`` returns seconds on a monotonic scale. A ``ttl`` of 0
    disables caching; a ``stale_max_age`` of 0 disables stale serving.
    """

    def __init__(self, ttl: float, max_entries: int, max_bytes: int,
                 stale_max_age: float, timer: Callable[[], float]):
        self.ttl = ttl
        self.stale_max_age = stale_max_age
        self.max_bytes = max_bytes
        self.stats = CacheStats()
        self._timer = timer
        self._entries = BoundedLRU(max_entries, max_bytes,
                                   lambda entry: entry.size, self.stats)
        self._clock = 0
        self._floor = 0
        self._marks: dict[str, int] = {}

    def token(self) -> int:
        """Return a token to pass to ``put`` for a value fetched from now on."""
        return self._clock

    def get(self, key: tuple[str, Hashable, ...]) -> Any | None:
        """Return a fresh value, or None (counted as a miss)."""
        entry = self._live_entry(key)
        if entry is None or self._timer() - entry.stored_at > self.ttl:
            self.stats.misses += 1
            return None
        self.stats.hits += 1
        return entry.value

    def get_stale(self, key: tuple[str, Hashable, ...]) -> tuple[Any, float] | None:
        """Return ``(value, age_seconds)`` of an entry within the stale age."""
        entry = self._live_entry(key)
        if entry is None:
            return None
        age = self._timer() - entry.stored_at
        if age > self.stale_max_age:
            return None
        self.stats.stale_serves += 1
        return entry.value, age

    def put(self, key: tuple[str, Hashable, ...], value: Any, size: int,
            token: int) -> bool:
        """Store a value fetched after ``token()`` returned ``token``.

        Returns False, storing nothing, if the secret was invalidated
        since, caching is off, or the value exceeds the byte bound.
        """
        name = key[0]
        if self.ttl <= 0 or token < self._floor or self._marks.get(name, -1) >= token:
            return False
        size += ENTRY_OVERHEAD_BYTES
        if size > self.max_bytes:
            return False
        self._entries[key] = _Entry(value, self._timer(), size)
        return True

    def invalidate(self, name: str) -> None:
        """Drop every entry of the secret ``name`` and refuse older fetches."""
        self._marks[name] = self._clock
        self._clock += 1
        if len(self._marks) > MAX_MARKED_NAMES:
            self._marks.clear()
            self._floor = self._clock
        for key in [key for key in self._entries if key[0] == name]:
            del self._entries[key]
        self.stats.invalidations += 1

    def invalidate_all(self) -> None:
        """Drop every entry and refuse values fetched before this call."""
        self._clock += 1
        self._floor = self._clock
        self._marks.clear()
        for key in list(self._entries):
            del self._entries[key]
        self.stats.invalidations += 1

    def _live_entry(self, key: tuple[str, Hashable, ...]) -> _Entry | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if self._timer() - entry.stored_at > max(self.ttl, self.stale_max_age):
            del self._entries[key]
            return None
        return entry

    def describe(self) -> dict[str, int]:
        """Return counters and sizes with the API's PascalCase names."""
        return {
            "Hits": self.stats.hits, "Misses": self.stats.misses,
            "Evictions": self.stats.evictions,
            "Invalidations": self.stats.invalidations,
            "StaleServes": self.stats.stale_serves,
            "Entries": len(self._entries), "Bytes": int(self._entries.currsize),
        }
