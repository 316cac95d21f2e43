"""Reuse of data keys by GenerateDataKey, only when the caller requests it.

A caller that sends ``AllowCachedDataKey=true`` may get a data key (and
its blob) that an earlier such call for the same key, encryption context
and length already returned. A cached data key is retired after
``max_age`` seconds, ``max_uses`` calls, or when the bytes callers
declare they will encrypt with it (``DataKeyUsageBytes``) would pass
``max_bytes``. The key's state is checked on every call, so a disabled
key stops serving cached data keys at once.

Security trade-off: every caller that shares a cached data key can
decrypt what the others encrypted with it, observers can link messages
by the identical blob, disabling the master key does not revoke data
keys already handed out, and an AES-GCM key used for many messages
with random IVs brings IV collisions closer. The limits bound all four,
and the cache is off unless a caller asks for it.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

from agent.cache.bounded import BoundedLRU, CacheStats
from agent.keys import states
from agent.keys.blob import canonical_context
from agent.keys.service import DATA_KEY_SPEC_BYTES, CryptoResult, KeyService


@dataclasses.dataclass
class _Entry:
    result: CryptoResult
    created_at: float
    uses: int
    bytes_used: int


class DataKeyCache:
    """Cached GenerateDataKey results; see the module docstring."""

    def __init__(self, max_age: float, max_uses: int, max_bytes: int,
                 max_entries: int, timer: Callable[[], float]):
        self.max_age = max_age
        self.max_uses = max_uses
        self.max_bytes = max_bytes
        self.stats = CacheStats()
        self._timer = timer
        self._entries = BoundedLRU(max_entries, None, None, self.stats)

    async def generate(self, keys: KeyService, key_ref: str,
                       number_of_bytes: int | None, key_spec: str | None,
                       context: dict[str, str] | None,
                       usage_bytes: int) -> tuple[CryptoResult, bool]:
        """Return a data key and whether it came from the cache.

        Raises:
            The errors of ``KeyService.generate_data_key``.
        """
        key = await keys.resolve(key_ref)
        states.require_state(key, states.USE)
        if number_of_bytes is None:
            number_of_bytes = DATA_KEY_SPEC_BYTES.get(key_spec or "AES_256", 32)
        cache_key = (key.key_id, canonical_context(context), number_of_bytes)
        entry = self._entries.get(cache_key)
        if entry is not None and self._usable(entry, usage_bytes):
            entry.uses += 1
            entry.bytes_used += usage_bytes
            self.stats.hits += 1
            return entry.result, True
        if entry is not None:
            del self._entries[cache_key]
            self.stats.evictions += 1
        self.stats.misses += 1
        result = await keys.generate_data_key(
            key.key_id, number_of_bytes, None, context)
        if usage_bytes <= self.max_bytes and self.max_uses > 0:
            self._entries[cache_key] = _Entry(result, self._timer(), 1, usage_bytes)
        return result, False

    def _usable(self, entry: _Entry, usage_bytes: int) -> bool:
        return (self._timer() - entry.created_at <= self.max_age
                and entry.uses < self.max_uses
                and entry.bytes_used + usage_bytes <= self.max_bytes)

    def invalidate(self, key_id: str | None = None) -> None:
        """Drop the cached data keys of one master key, or all of them."""
        for cache_key in [k for k in self._entries if key_id in (None, k[0])]:
            del self._entries[cache_key]
        self.stats.invalidations += 1

    def describe(self) -> dict[str, int]:
        """Return counters and size with the API's PascalCase names."""
        return {
            "Hits": self.stats.hits, "Misses": self.stats.misses,
            "Evictions": self.stats.evictions,
            "Invalidations": self.stats.invalidations,
            "Entries": len(self._entries),
        }


async def generate_for_request(services, values: dict, context: dict | None
                               ) -> tuple[CryptoResult, bool | None]:
    """Serve a GenerateDataKey request, from the cache if it allows that.

    Returns:
        The data key and whether it came from the cache, or None as the
        second item when the request did not set ``AllowCachedDataKey``.
    """
    cache: DataKeyCache | None = getattr(services, "data_keys", None)
    if not values.get("AllowCachedDataKey") or cache is None:
        result = await services.keys.generate_data_key(
            values["KeyId"], values.get("NumberOfBytes"), values.get("KeySpec"),
            context)
        return result, None
    return await cache.generate(
        services.keys, values["KeyId"], values.get("NumberOfBytes"),
        values.get("KeySpec"), context, values.get("DataKeyUsageBytes", 0))
