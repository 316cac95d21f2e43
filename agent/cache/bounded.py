"""An LRU map bounded both in entries and in bytes, counting evictions."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import cachetools


@dataclasses.dataclass
class CacheStats:
    """Counters of one cache since the agent started."""

    hits: int = 0
    misses: int = 0
    evictions: int = 0
    invalidations: int = 0
    stale_serves: int = 0


class BoundedLRU(cachetools.LRUCache):
    """An LRU cache of at most ``max_entries`` items and ``max_bytes`` bytes.

    ``getsizeof`` gives the size of a value in bytes; without it only
    the entry bound applies. Inserting a value larger than ``max_bytes``
    raises ValueError, as ``cachetools`` does. Items pushed out by either
    bound are counted in ``stats.evictions``.
    """

    def __init__(self, max_entries: int, max_bytes: int | None,
                 getsizeof: Callable[[Any], int] | None, stats: CacheStats):
        if getsizeof is None or max_bytes is None:
            super().__init__(maxsize=max_entries)
        else:
            super().__init__(maxsize=max_bytes, getsizeof=getsizeof)
        self.max_entries = max_entries
        self.stats = stats

    def __setitem__(self, key: Any, value: Any) -> None:
        super().__setitem__(key, value)
        while len(self) > self.max_entries:
            self.popitem()

    def popitem(self) -> tuple[Any, Any]:
        """Remove the least recently used item and count an eviction."""
        item = super().popitem()
        self.stats.evictions += 1
        return item
