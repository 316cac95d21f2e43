"""Wake-ups for clients waiting on a secret's ACSCurrent version.

A waiter takes the secret's ``trio.Event`` before it reads the current
version, so a change that lands between the read and the wait still
wakes it. ``notify`` sets the event and starts a fresh one for later
waiters. ``close`` wakes every waiter and makes new waits return at
once, so a draining server never waits for a long poll to time out.
Waiting holds no lock, no thread and no store connection.
"""

from __future__ import annotations

import trio


class ChangeNotifier:
    """One event per secret name that has waiters."""

    def __init__(self) -> None:
        self.closed = False
        self._events: dict[str, trio.Event] = {}
        self._waiters: dict[str, int] = {}

    def event(self, secret_name: str) -> trio.Event:
        """Return the event that the next change of ``secret_name`` sets."""
        event = self._events.get(secret_name)
        if event is None:
            event = self._events[secret_name] = trio.Event()
            if self.closed:
                event.set()
        return event

    async def wait(self, event: trio.Event, secret_name: str, timeout: float) -> None:
        """Wait for ``event`` up to ``timeout`` seconds."""
        self._waiters[secret_name] = self._waiters.get(secret_name, 0) + 1
        try:
            with trio.move_on_after(timeout):
                await event.wait()
        finally:
            self._waiters[secret_name] -= 1
            if not self._waiters[secret_name]:
                del self._waiters[secret_name]
                if self._events.get(secret_name) is event:
                    del self._events[secret_name]

    def notify(self, secret_name: str) -> None:
        """Wake the waiters of ``secret_name``."""
        event = self._events.pop(secret_name, None)
        if event is not None:
            event.set()

    def close(self) -> None:
        """Wake every waiter; later waits return immediately."""
        self.closed = True
        for event in self._events.values():
            event.set()
        self._events.clear()

    def waiting(self) -> int:
        """Return the number of requests waiting now."""
        return sum(self._waiters.values())
