"""SOFTWARE key pairs, HMAC keys and key import, for both keystore backends.

Sealed material of a SOFTWARE version (``wrap_format`` 2, AES-GCM under
the domain key with AAD = the version id, as for symmetric keys) holds:
the private key as PKCS#8 DER for an asymmetric spec, the raw secret for
an HMAC spec, and the raw key for an imported symmetric key.

``SoftwareAsymmetricMixin`` adds these keys to ``SoftwareKeystore``; the
PKCS#11 keystore uses the helpers here for its SOFTWARE-level keys (see
``pkcs11_asymmetric``). RSA key generation took 70 to 430 ms for 2048
to 4096 bits (cryptography 50, 2 cores), so it runs in a worker thread.
"""

from __future__ import annotations

import os

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as crypto_hmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from agent.keystore.asymmetric import (
    RSAES_OAEP_SHA_1, RSAES_OAEP_SHA_256, RSAES_PKCS1_V1_5, SoftwareKeyPair,
    generate_software_pair,
)
from agent.keystore.base import (
    ASYMMETRIC_SPECS, GCM_IV_BYTES, HMAC_KEY_BYTES, SM2_SPEC, SOFTWARE,
    SYMMETRIC_KEY_BYTES, DecryptionFailed, InvalidImportedMaterial, KeyMaterial,
    Keystore,
)
from agent.keystore.key_transfer import pair_public_key

# A size above ``software.INLINE_MAX_BYTES``, so ``Offload`` runs the call
# in a worker thread.
WORKER = 2**31
WRAPPING_ALGORITHMS = (RSAES_PKCS1_V1_5, RSAES_OAEP_SHA_1, RSAES_OAEP_SHA_256)
MAC_HASHES = {
    "HMAC_SHA_256": hashes.SHA256,
    "HMAC_SHA_384": hashes.SHA384,
    "HMAC_SHA_512": hashes.SHA512,
    "HMAC_SM3": hashes.SM3,
}
# Specs whose imported material the agent accepts.
IMPORTABLE_SPECS = ("Aliyun_AES_256", "Aliyun_AES_192", "Aliyun_AES_128", "Aliyun_SM4")


def _software():
    # The keystore module imports this one for its base class, so this
    # one reads the keystore's sealing constants at call time.
    from agent.keystore import software

    return software


def software_material(version_id: str, key_spec: str, sealed: bytes,
                      public_key: bytes = b"") -> KeyMaterial:
    """Return SOFTWARE material sealed with AES-GCM under the domain key."""
    return KeyMaterial(version_id, key_spec, SOFTWARE, _software().SEALED_GCM, sealed,
                       public_key)


class SoftwareMacKey:
    """An HMAC secret in process memory; its repr is redacted."""

    __slots__ = ("key_spec", "_secret")

    def __init__(self, key_spec: str, secret: bytes):
        if len(secret) != HMAC_KEY_BYTES[key_spec]:
            raise DecryptionFailed()
        self.key_spec = key_spec
        self._secret = secret

    def __repr__(self) -> str:
        return f"SoftwareMacKey({self.key_spec}, <redacted>)"

    def __reduce__(self):
        raise TypeError("SoftwareMacKey contains key material and cannot be pickled")

    def mac(self, message: bytes) -> bytes:
        """Return the HMAC of ``message``."""
        context = crypto_hmac.HMAC(self._secret, MAC_HASHES[self.key_spec]())
        context.update(message)
        return context.finalize()


def supports_software_spec(key_spec: str) -> bool:
    """Return whether a SOFTWARE key of an asymmetric or HMAC spec can exist."""
    return key_spec in ASYMMETRIC_SPECS or key_spec in HMAC_KEY_BYTES


def key_check_value(key_spec: str, key: bytes, check_block: bytes) -> bytes:
    """Encrypt one 16-byte block under an AES or SM4 key (ECB), as a KCV."""
    cipher = algorithms.SM4(key) if key_spec == "Aliyun_SM4" else algorithms.AES(key)
    encryptor = Cipher(cipher, modes.ECB()).encryptor()
    return encryptor.update(check_block) + encryptor.finalize()


def check_imported_length(key_spec: str, key: bytes) -> None:
    """Raise InvalidImportedMaterial unless ``key`` fits ``key_spec``."""
    if key_spec not in IMPORTABLE_SPECS or len(key) != SYMMETRIC_KEY_BYTES[key_spec]:
        raise InvalidImportedMaterial()


def software_unwrap(pair: SoftwareKeyPair, algorithm: str, encrypted: bytes) -> bytes:
    """Decrypt imported material with a SOFTWARE wrapping key.

    Raises:
        InvalidImportedMaterial: the ciphertext does not decrypt.
    """
    try:
        return pair.decrypt(algorithm, encrypted)
    except DecryptionFailed:
        raise InvalidImportedMaterial() from None


def software_pair_from(material: KeyMaterial, plain: bytes) -> SoftwareKeyPair:
    """Build the key pair of an unsealed version.

    Raises:
        DecryptionFailed: the unsealed bytes are not a key of the spec.
    """
    try:
        return SoftwareKeyPair(material.key_spec, plain)
    except ValueError:
        raise DecryptionFailed() from None


def check_sealed_software(material: KeyMaterial, families) -> None:
    """Raise ValueError unless ``material`` is SOFTWARE material of a family."""
    sealed_gcm = _software().SEALED_GCM
    if (material.protection_level != SOFTWARE or material.wrap_format != sealed_gcm
            or material.key_spec not in families):
        raise ValueError(
            f"key version {material.version_id} is not SOFTWARE material of "
            f"spec {material.key_spec} sealed with wrap format {sealed_gcm}")


class SoftwareAsymmetricMixin(Keystore):
    """Key pairs, HMAC keys and imports for ``SoftwareKeystore``.

    Needs the keystore's ``_domain_key``, ``_offload``, ``_materials`` and
    ``_sm4``; every key here is SOFTWARE-protected.
    """

    def supports_spec(self, key_spec: str, protection_level: str) -> bool:
        if supports_software_spec(key_spec):
            return protection_level == SOFTWARE
        return self.supports(key_spec, protection_level)

    async def generate_key_pair(self, version_id: str, key_spec: str,
                                protection_level: str) -> KeyMaterial:
        if key_spec not in ASYMMETRIC_SPECS or protection_level != SOFTWARE:
            raise ValueError(f"{key_spec} with {protection_level} is not supported")
        pkcs8, spki = await self._offload.run(WORKER, generate_software_pair, key_spec)
        sealed = self._seal_secret(version_id, pkcs8)
        return software_material(version_id, key_spec, sealed, spki)

    async def generate_mac_key(self, version_id: str, key_spec: str,
                               protection_level: str) -> KeyMaterial:
        if key_spec not in HMAC_KEY_BYTES or protection_level != SOFTWARE:
            raise ValueError(f"{key_spec} with {protection_level} is not supported")
        sealed = self._seal_secret(version_id, os.urandom(HMAC_KEY_BYTES[key_spec]))
        return software_material(version_id, key_spec, sealed)

    async def sign(self, material: KeyMaterial, algorithm: str,
                   digest: bytes) -> bytes:
        pair = self._pair_of(material)
        size = WORKER if material.key_spec != SM2_SPEC else 0
        return await self._offload.run(size, pair.sign, algorithm, digest)

    async def asymmetric_decrypt(self, material: KeyMaterial, algorithm: str,
                                 ciphertext: bytes) -> bytes:
        pair = self._pair_of(material)
        return await self._offload.run(WORKER, pair.decrypt, algorithm, ciphertext)

    async def mac(self, material: KeyMaterial, message: bytes) -> bytes:
        key = self._materials.get(material.version_id)
        if key is None:
            check_sealed_software(material, HMAC_KEY_BYTES)
            key = SoftwareMacKey(material.key_spec, self._unseal_secret(material))
            self._materials.put(material.version_id, key)
        return await self._offload.run(len(message), key.mac, message)

    async def import_material(self, version_id: str, key_spec: str,
                              protection_level: str, wrapping_key: KeyMaterial,
                              wrapping_algorithm: str, encrypted: bytes,
                              check_block: bytes) -> tuple[KeyMaterial, bytes]:
        if protection_level != SOFTWARE or not self.supports(key_spec, SOFTWARE):
            raise ValueError(f"{key_spec} with {protection_level} is not supported")
        pair = self._pair_of(wrapping_key)
        key = await self._offload.run(WORKER, software_unwrap, pair,
                                      wrapping_algorithm, encrypted)
        check_imported_length(key_spec, key)
        fingerprint = key_check_value(key_spec, key, check_block)
        sealed = self._seal_secret(version_id, key)
        return software_material(version_id, key_spec, sealed), fingerprint

    async def import_key_pair(self, version_id: str, key_spec: str,
                              protection_level: str, pkcs8: bytes) -> KeyMaterial:
        if key_spec not in ASYMMETRIC_SPECS or protection_level != SOFTWARE:
            raise ValueError(f"{key_spec} with {protection_level} is not supported")
        spki = await self._offload.run(WORKER, pair_public_key, key_spec, pkcs8)
        sealed = self._seal_secret(version_id, pkcs8)
        return software_material(version_id, key_spec, sealed, spki)

    async def export_private_key(self, material: KeyMaterial) -> bytes:
        check_sealed_software(material, ASYMMETRIC_SPECS)
        return self._unseal_secret(material)

    def _pair_of(self, material: KeyMaterial) -> SoftwareKeyPair:
        pair = self._materials.get(material.version_id)
        if pair is None:
            check_sealed_software(material, ASYMMETRIC_SPECS)
            pair = software_pair_from(material, self._unseal_secret(material))
            self._materials.put(material.version_id, pair)
        return pair

    def _seal_secret(self, version_id: str, plain: bytes) -> bytes:
        aad = _software().version_aad(version_id)
        iv, sealed = self._domain_key.encrypt(plain, aad)
        return iv + sealed

    def _unseal_secret(self, material: KeyMaterial) -> bytes:
        sealed = material.wrapped
        return self._domain_key.decrypt(sealed[:GCM_IV_BYTES], sealed[GCM_IV_BYTES:],
                                        _software().version_aad(material.version_id))
