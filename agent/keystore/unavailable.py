"""A stand-in for a keystore that failed to open.

The agent serves its other keystores when one of them cannot be opened
(a missing token, a wrong PIN). This object takes the failed keystore's
place, so every use of it fails with ServiceUnavailableTemporary (503)
instead of reaching a backend that is not there. The open error stays
in ``reason`` for the operator's log and is never sent to callers.
"""

from __future__ import annotations

import inspect

from agent.keystore.base import Keystore
from client.errors import ServiceUnavailableError


class UnavailableKeystore(Keystore):
    """A keystore that failed to open; every operation raises 503."""

    def __init__(self, name: str, reason: str):
        self.name = name
        self.reason = reason

    def _error(self) -> ServiceUnavailableError:
        return ServiceUnavailableError(
            f"The keystore {self.name} is unavailable; try again later.")

    def supports(self, key_spec: str, protection_level: str) -> bool:
        return True

    def supports_spec(self, key_spec: str, protection_level: str) -> bool:
        return True

    def status(self) -> dict:
        return {"type": "unavailable", "ready": False}

    async def aclose(self) -> None:
        pass


def _refuse(name: str):
    async def refuse(self: UnavailableKeystore, *args: object, **kwargs: object):
        raise self._error()
    refuse.__name__ = name
    return refuse


# Every coroutine of the interface fails the same way, including ones added
# to Keystore later, so a new operation can never reach a missing backend.
for _name, _member in inspect.getmembers(Keystore, inspect.iscoroutinefunction):
    if _name != "aclose":
        setattr(UnavailableKeystore, _name, _refuse(_name))
UnavailableKeystore.__abstractmethods__ = frozenset()
