"""Fakes for unit tests: an in-memory keystore on cryptography's AESGCM.

The fake seals material with a random per-instance domain key and AAD =
version id, like the real backends, so tests of the services see the same
contract without a token. Integration tests never use it.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from agent.keystore.base import (
    HSM, SOFTWARE, SYMMETRIC_KEY_BYTES, DecryptionFailed, KeyMaterial, Keystore,
)


class FakeKeystore(Keystore):
    """A keystore whose "HSM" is an in-memory AES key."""

    def __init__(self, name: str = "default"):
        self.name = name
        self._domain = AESGCM(os.urandom(32))
        self.generated = 0

    def supports(self, key_spec: str, protection_level: str) -> bool:
        if key_spec == "Aliyun_SM4":
            return protection_level == SOFTWARE
        return key_spec in SYMMETRIC_KEY_BYTES and protection_level in (HSM, SOFTWARE)

    async def generate(self, version_id, key_spec, protection_level):
        if not self.supports(key_spec, protection_level):
            raise ValueError(key_spec)
        self.generated += 1
        iv = os.urandom(12)
        raw = os.urandom(32 if key_spec == "Aliyun_SM4" else SYMMETRIC_KEY_BYTES[key_spec])
        sealed = iv + self._domain.encrypt(iv, raw, version_id.encode())
        return KeyMaterial(version_id, key_spec, protection_level, 99, sealed)

    def _key(self, material: KeyMaterial) -> AESGCM:
        raw = self._domain.decrypt(material.wrapped[:12], material.wrapped[12:],
                                   material.version_id.encode())
        return AESGCM(raw)

    async def encrypt(self, material, plaintext, aad):
        iv = os.urandom(12)
        return iv, self._key(material).encrypt(iv, plaintext, aad)

    async def decrypt(self, material, iv, ciphertext_with_tag, aad):
        if len(iv) != 12:
            raise DecryptionFailed()
        try:
            return self._key(material).decrypt(iv, ciphertext_with_tag, aad)
        except InvalidTag:
            raise DecryptionFailed() from None

    async def random_bytes(self, length):
        return os.urandom(length)

    def status(self):
        return {"type": "fake", "ready": True}

    async def aclose(self):
        pass
