"""The interface every keystore backend implements.

A keystore owns one domain key and does all cryptography with the key
material under it. Key material never leaves a keystore in the clear:
``generate`` returns a ``KeyMaterial`` whose ``wrapped`` bytes are sealed
under the domain key, the store keeps those bytes, and every later call
passes them back. A backend may cache unwrapped handles by version id,
since the material of a version never changes.

Backends: ``pkcs11.Pkcs11Keystore`` (HSM and software protection, domain
key in the token) and ``software.SoftwareKeystore`` (software protection
only, domain key in a file), both built by ``open_keystore``.
"""

from __future__ import annotations

import abc
import dataclasses

# Protection levels, as the KMS API names them.
HSM = "HSM"
SOFTWARE = "SOFTWARE"

# Symmetric key specs and their key lengths in bytes.
SYMMETRIC_KEY_BYTES = {
    "Aliyun_AES_256": 32,
    "Aliyun_AES_192": 24,
    "Aliyun_AES_128": 16,
    "Aliyun_SM4": 16,
}

GCM_IV_BYTES = 12
GCM_TAG_BYTES = 16


@dataclasses.dataclass(frozen=True)
class KeyMaterial:
    """The sealed material of one key version, as the store keeps it.

    ``wrap_format`` names how ``wrapped`` was sealed, so that a backend
    can change its format and still read old rows.
    """

    version_id: str
    key_spec: str
    protection_level: str
    wrap_format: int
    wrapped: bytes = dataclasses.field(repr=False)


class DecryptionFailed(Exception):
    """Authenticated decryption failed; the cause is deliberately absent."""


class KeystoreUnavailable(Exception):
    """The keystore cannot serve requests (token missing, login lost)."""


class Keystore(abc.ABC):
    """Generate, seal and use key material under one domain key.

    Every method may be called concurrently from the trio thread; a
    backend decides itself which calls run inline and which in worker
    threads.
    """

    name: str

    @abc.abstractmethod
    def supports(self, key_spec: str, protection_level: str) -> bool:
        """Return whether this keystore can create keys of that kind."""

    @abc.abstractmethod
    async def generate(self, version_id: str, key_spec: str,
                       protection_level: str) -> KeyMaterial:
        """Create fresh material for a key version and return it sealed.

        Raises:
            ValueError: the spec or protection level is not supported.
            KeystoreUnavailable: the backend cannot be reached.
        """

    @abc.abstractmethod
    async def encrypt(self, material: KeyMaterial, plaintext: bytes,
                      aad: bytes) -> tuple[bytes, bytes]:
        """Encrypt with a fresh random 12-byte IV.

        Returns:
            ``(iv, ciphertext_with_tag)``; the tag is the last 16 bytes.
        """

    @abc.abstractmethod
    async def decrypt(self, material: KeyMaterial, iv: bytes,
                      ciphertext_with_tag: bytes, aad: bytes) -> bytes:
        """Decrypt and authenticate.

        Raises:
            DecryptionFailed: for any failure to authenticate or decrypt,
                including an IV that is not 12 bytes long.
        """

    @abc.abstractmethod
    async def random_bytes(self, length: int) -> bytes:
        """Return ``length`` random bytes from the backend's generator."""

    @abc.abstractmethod
    def status(self) -> dict:
        """Return a small map describing health, for logs and health checks."""

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Release sessions and threads; the keystore is unusable after."""
