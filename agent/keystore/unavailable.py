"""A stand-in for a keystore that failed to open.

The agent serves its other keystores when one of them cannot be opened
(a missing token, a wrong PIN). This object takes the failed keystore's
place, so every use of it fails with ServiceUnavailableTemporary (503)
instead of reaching a backend that is not there. The open error stays
in ``reason`` for the operator's log and is never sent to callers.
"""

from __future__ import annotations

from agent.keystore.base import KeyMaterial, Keystore
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

    async def generate(self, version_id: str, key_spec: str,
                       protection_level: str) -> KeyMaterial:
        raise self._error()

    async def encrypt(self, material: KeyMaterial, plaintext: bytes,
                      aad: bytes) -> tuple[bytes, bytes]:
        raise self._error()

    async def decrypt(self, material: KeyMaterial, iv: bytes,
                      ciphertext_with_tag: bytes, aad: bytes) -> bytes:
        raise self._error()

    async def random_bytes(self, length: int) -> bytes:
        raise self._error()

    def status(self) -> dict:
        return {"type": "unavailable", "ready": False}

    async def aclose(self) -> None:
        pass
