"""Per-name locks that serialize writes to one resource within an agent.

Writes to a key or secret are compare-and-swap in the store, which is
right across agents but makes concurrent writers in one agent retry
against each other until they give up. Holding a lock per resource name
makes them queue instead; the store's check still guards against other
agents on the same database.
"""

from __future__ import annotations

import contextlib
from typing import AsyncIterator

import trio

from client.errors import ServiceUnavailableError


class NamedLocks:
    """One ``trio.Lock`` per name, kept only while someone uses it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[trio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, name: str) -> AsyncIterator[None]:
        """Hold the lock of ``name`` for the body of the ``async with``."""
        lock, users = self._locks.get(name, (trio.Lock(), 0))
        self._locks[name] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[name]
            if users == 1:
                del self._locks[name]
            else:
                self._locks[name] = (lock, users - 1)


def contention_error(resource: str) -> ServiceUnavailableError:
    """Return the retryable error for a write that lost every retry."""
    error = ServiceUnavailableError(
        f"The {resource} was changed by other writers; retry the request.")
    error.detail = "compare-and-swap retries exhausted"  # type: ignore[attr-defined]
    return error
