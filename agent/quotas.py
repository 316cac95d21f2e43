"""Request quotas: a token bucket per caller and operation group.

The caller is the principal that access control named, or the peer uid
when it named none. Each operation group (``Operation.group``: create,
cryptographic, read, write) has its own rate and burst, and the
cryptographic group has two buckets: one for symmetric keys (AES, SM4)
and one for asymmetric keys (RSA, EC, SM2), chosen by the key spec of
the key the request names. A request over its bucket is refused with
Rejected.Throttling (HTTP 429, "QPS Limit Exceeded") before its handler
runs, so a client may safely retry it.

``QuotaStage`` runs after the access stage: the caller is known, keys
were resolved and requests refused there cost no tokens. A bucket that
has been idle long enough to refill is deleted, which changes nothing
for its caller; at most ``max_callers`` buckets are kept, and under
that pressure the least recently used go first. Buckets live in one
agent process, so several agents on one store each apply the rates.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from agent.context import RequestContext
from agent.keys.blob import VERSION_ID_BYTES
from agent.rpc.dispatch import CREATE, CRYPTO, READ, WRITE, Operation, Stage
from client.errors import KmsError, ThrottlingError

SYMMETRIC_CRYPTO = "cryptographic"
ASYMMETRIC_CRYPTO = "cryptographic_asymmetric"
BUCKETS = (CREATE, SYMMETRIC_CRYPTO, ASYMMETRIC_CRYPTO, READ, WRITE)
ASYMMETRIC_SPEC_PREFIXES = ("RSA_", "EC_")
# Key specs by key id and key id by version id, which never change.
SPEC_CACHE_ENTRIES = 10000


@dataclasses.dataclass(frozen=True)
class Rate:
    """Tokens added per second and the bucket size; a rate of 0 is no limit."""

    per_second: float
    burst: float


class QuotaTable:
    """Token buckets by caller and bucket name.

    Args:
        rates: the ``Rate`` of each name in ``BUCKETS``.
        clock: returns seconds from a monotonic clock.
        max_callers: the maximum number of buckets kept at once.
    """

    def __init__(self, rates: dict[str, Rate], clock: Callable[[], float],
                 max_callers: int = 10000):
        self.rates = rates
        self.clock = clock
        self.max_callers = max_callers
        # (caller, bucket) -> [tokens, time of the last refill]; in order of
        # last use, oldest first.
        self._buckets: dict[tuple[Any, str], list[float]] = {}
        # A bucket idle this long is full again and may be deleted.
        self._idle_seconds = max(
            (rate.burst / rate.per_second for rate in rates.values()
             if rate.per_second > 0), default=0.0)
        self._next_sweep = clock() + self._idle_seconds

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, caller: Any, bucket: str) -> bool:
        """Take one token from a caller's bucket; return False if it is empty."""
        rate = self.rates[bucket]
        if rate.per_second <= 0:
            return True
        now = self.clock()
        if now >= self._next_sweep:
            self._sweep(now)
        key = (caller, bucket)
        state = self._buckets.pop(key, None)
        if state is None:
            state = [rate.burst, now]
            if len(self._buckets) >= self.max_callers:
                del self._buckets[next(iter(self._buckets))]
        tokens = min(rate.burst, state[0] + (now - state[1]) * rate.per_second)
        allowed = tokens >= 1.0
        state[0], state[1] = tokens - 1.0 if allowed else tokens, now
        self._buckets[key] = state
        return allowed

    def _sweep(self, now: float) -> None:
        # Delete every bucket that has refilled completely since its last use.
        self._next_sweep = now + self._idle_seconds
        idle = [key for key, (_, stamp) in self._buckets.items()
                if now - stamp >= self._idle_seconds]
        for key in idle:
            del self._buckets[key]


def caller_of(ctx: RequestContext) -> tuple[str, Any]:
    """Return the quota caller of a request: its principal, else its uid."""
    if ctx.principal is not None:
        return ("principal", ctx.principal)
    return ("uid", ctx.peer.uid)


class QuotaStage(Stage):
    """Refuse requests over their caller's quota with Rejected.Throttling.

    Args:
        table: the buckets.
        keys: the ``KeyService``, to find the key spec of a cryptographic
            request's key.
    """

    def __init__(self, table: QuotaTable, keys: Any):
        self.table = table
        self.keys = keys
        self._spec_by_key: dict[str, str] = {}
        self._key_by_version: dict[str, str] = {}

    async def before(self, ctx: RequestContext, operation: Operation,
                     values: dict[str, Any]) -> None:
        bucket = operation.group
        if bucket == CRYPTO:
            bucket = await self.crypto_bucket(values)
        if bucket in self.table.rates and not self.table.take(caller_of(ctx), bucket):
            raise ThrottlingError()

    async def crypto_bucket(self, values: dict[str, Any]) -> str:
        """Return the bucket of a cryptographic request, by its keys' specs.

        A request that names an asymmetric key anywhere counts as
        asymmetric. A key that cannot be found counts as symmetric; the
        handler reports the error.
        """
        specs = []
        for name in ("KeyId", "DestinationKeyId", "SourceKeyId"):
            reference = values.get(name)
            if isinstance(reference, str):
                specs.append(await self._spec_of_reference(reference))
        blob = values.get("CiphertextBlob")
        if isinstance(blob, (bytes, bytearray)) and "SourceKeyId" not in values:
            specs.append(await self._spec_of_blob(bytes(blob[:VERSION_ID_BYTES])))
        if any(spec.startswith(ASYMMETRIC_SPEC_PREFIXES) for spec in specs):
            return ASYMMETRIC_CRYPTO
        return SYMMETRIC_CRYPTO

    async def _spec_of_reference(self, reference: str) -> str:
        spec = self._spec_by_key.get(reference)
        if spec is not None:
            return spec
        try:
            key = await self.keys.resolve(reference)
        except KmsError:
            return ""
        # Only key ids are cached: an alias may move to another key.
        self._remember(self._spec_by_key, key.key_id, key.key_spec)
        return key.key_spec

    async def _spec_of_blob(self, head: bytes) -> str:
        try:
            version_id = head.decode("ascii")
        except UnicodeDecodeError:
            return ""
        key_id = self._key_by_version.get(version_id)
        if key_id is None:
            version = await self.keys.store.get_version(version_id)
            if version is None:
                return ""
            key_id = version.key_id
            self._remember(self._key_by_version, version_id, key_id)
        return await self._spec_of_reference(key_id)

    @staticmethod
    def _remember(cache: dict[str, str], name: str, value: str) -> None:
        if len(cache) >= SPEC_CACHE_ENTRIES:
            cache.clear()
        cache[name] = value
