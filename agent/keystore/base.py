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

# Asymmetric key specs: RSA modulus lengths in bits and EC curve names.
RSA_KEY_BITS = {"RSA_2048": 2048, "RSA_3072": 3072, "RSA_4096": 4096}
EC_CURVE_NAMES = {"EC_P256": "secp256r1", "EC_P256K": "secp256k1"}
SM2_SPEC = "EC_SM2"
ASYMMETRIC_SPECS = (*RSA_KEY_BITS, *EC_CURVE_NAMES, SM2_SPEC)

# HMAC key specs and their key lengths in bytes, the length of the hash
# output (SoftHSM2 2.6.1 refuses shorter keys for SHA-384 and SHA-512).
HMAC_KEY_BYTES = {
    "HMAC_SHA_256": 32,
    "HMAC_SHA_384": 48,
    "HMAC_SHA_512": 64,
    "HMAC_SM3": 32,
}


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
    # SubjectPublicKeyInfo DER of an asymmetric version; empty otherwise.
    public_key: bytes = b""


class DecryptionFailed(Exception):
    """Authenticated decryption failed; the cause is deliberately absent."""


class InvalidImportedMaterial(Exception):
    """Imported key material failed to unwrap or has the wrong length."""


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

    # --- asymmetric, HMAC and imported keys ---------------------------------
    # A backend without them keeps these defaults, which raise ValueError.

    def supports_spec(self, key_spec: str, protection_level: str) -> bool:
        """Return whether this keystore can create keys of any spec."""
        return self.supports(key_spec, protection_level)

    async def generate_key_pair(self, version_id: str, key_spec: str,
                                protection_level: str) -> KeyMaterial:
        """Create a key pair for a version of an asymmetric key.

        Returns:
            The private key sealed, with ``public_key`` set.
        Raises:
            ValueError: the spec or protection level is not supported.
        """
        raise ValueError(f"keystore {self.name} has no asymmetric keys")

    async def generate_mac_key(self, version_id: str, key_spec: str,
                               protection_level: str) -> KeyMaterial:
        """Create the secret of an HMAC key and return it sealed.

        Raises:
            ValueError: the spec or protection level is not supported.
        """
        raise ValueError(f"keystore {self.name} has no HMAC keys")

    async def sign(self, material: KeyMaterial, algorithm: str,
                   digest: bytes) -> bytes:
        """Sign a precomputed digest; the caller checked both for the spec."""
        raise ValueError(f"keystore {self.name} has no asymmetric keys")

    async def asymmetric_decrypt(self, material: KeyMaterial, algorithm: str,
                                 ciphertext: bytes) -> bytes:
        """Decrypt with the private key of ``material``.

        Raises:
            DecryptionFailed: for any failure to decrypt, whatever the cause.
        """
        raise ValueError(f"keystore {self.name} has no asymmetric keys")

    async def mac(self, material: KeyMaterial, message: bytes) -> bytes:
        """Return the HMAC of ``message`` with the hash of the key spec."""
        raise ValueError(f"keystore {self.name} has no HMAC keys")

    async def import_material(self, version_id: str, key_spec: str,
                              protection_level: str, wrapping_key: KeyMaterial,
                              wrapping_algorithm: str, encrypted: bytes,
                              check_block: bytes) -> tuple[KeyMaterial, bytes]:
        """Unwrap imported symmetric key material and seal it.

        ``wrapping_key`` is an RSA_2048 pair from ``generate_key_pair``
        and ``encrypted`` the material encrypted to it with
        ``wrapping_algorithm``. The fingerprint is the encryption of the
        16-byte ``check_block`` under the material (a key check value),
        so a later import can be compared without keeping the material.

        Returns:
            ``(sealed material, fingerprint)``.
        Raises:
            InvalidImportedMaterial: the material does not unwrap or has
                the wrong length for ``key_spec``.
            ValueError: the spec or protection level is not supported.
        """
        raise ValueError(f"keystore {self.name} cannot import key material")

    async def import_key_pair(self, version_id: str, key_spec: str,
                              protection_level: str, pkcs8: bytes) -> KeyMaterial:
        """Seal an existing private key (PKCS#8 DER) as a version's key pair.

        Returns:
            The private key sealed, with ``public_key`` set.
        Raises:
            ValueError: the key is not of ``key_spec``, or the spec or
                protection level is not supported.
        """
        raise ValueError(f"keystore {self.name} cannot import key pairs")

    async def export_private_key(self, material: KeyMaterial) -> bytes:
        """Return the private key of a key pair as unencrypted PKCS#8 DER.

        The keystore exports any key pair it holds; the caller decides
        whether the key may leave (see ``agent.certificates``).

        Raises:
            DecryptionFailed: the material does not unseal.
            ValueError: the material is not a key pair of this keystore.
        """
        raise ValueError(f"keystore {self.name} cannot export key pairs")

    @abc.abstractmethod
    def status(self) -> dict:
        """Return a small map describing health, for logs and health checks."""

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Release sessions and threads; the keystore is unusable after."""
