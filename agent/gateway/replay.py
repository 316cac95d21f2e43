"""The nonce cache that turns away replayed OpenAPI requests.

Every signed OpenAPI request carries a nonce (``x-acs-signature-nonce``
or ``SignatureNonce``) and a time within 15 minutes of the agent's
clock. A nonce is remembered for as long as a request bearing it could
still pass the time check, so a replay inside that window is refused
and one after it fails the time check instead. Nonces are recorded only
after the signature verified, so unsigned traffic cannot fill the cache.
"""

from __future__ import annotations

import collections
from typing import Callable

DEFAULT_WINDOW_SECONDS = 15 * 60
DEFAULT_MAX_ENTRIES = 200_000


class NonceCache:
    """Nonces seen in the last window, per AccessKey id.

    Args:
        clock: monotonic seconds, such as ``time.monotonic``.
        window: seconds a nonce is remembered; twice the allowed clock
            skew, since a request may be signed up to one skew ahead.
        max_entries: the most nonces kept. When full, the oldest is
            forgotten early; a replay of it inside its window would then
            pass, which costs less than refusing fresh requests.
    """

    def __init__(self, clock: Callable[[], float],
                 window: float = 2 * DEFAULT_WINDOW_SECONDS,
                 max_entries: int = DEFAULT_MAX_ENTRIES):
        self._clock = clock
        self._window = window
        self._max_entries = max_entries
        self._seen: collections.OrderedDict[tuple[str, str], float] = (
            collections.OrderedDict())

    def __len__(self) -> int:
        return len(self._seen)

    def check_and_add(self, access_key_id: str, nonce: str) -> bool:
        """Record a nonce; return False if it was already recorded."""
        now = self._clock()
        self._expire(now)
        entry = (access_key_id, nonce)
        if entry in self._seen:
            return False
        self._seen[entry] = now + self._window
        while len(self._seen) > self._max_entries:
            self._seen.popitem(last=False)
        return True

    def _expire(self, now: float) -> None:
        # Entries are added in time order, so the expired ones come first.
        while self._seen:
            entry, expires = next(iter(self._seen.items()))
            if expires > now:
                return
            del self._seen[entry]
