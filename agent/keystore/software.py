"""Software AES-GCM and SM4-GCM, and the keystore that uses only them.

``SoftwareKey`` is the engine: one symmetric key in process memory, with
encrypt and decrypt under a fresh random 12-byte IV per call. Its repr is
redacted and pickling it raises TypeError, so key bytes do not reach a
log by accident. ``Pkcs11Keystore`` uses it for SOFTWARE-protected keys.

``SoftwareKeystore`` serves hosts without an HSM: its domain key is 32
random bytes in a file of mode 0600, and every version is sealed under it
with AES-GCM and AAD = the version id (``wrap_format`` 2), so sealed
material of one version does not open under another version id.
``Offload`` decides which calls run inline.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Callable, TypeVar

import trio
from cachetools import LRUCache
from cryptography.exceptions import InvalidTag, UnsupportedAlgorithm
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from agent.keystore.base import (
    GCM_IV_BYTES,
    GCM_TAG_BYTES,
    SOFTWARE,
    SYMMETRIC_KEY_BYTES,
    DecryptionFailed,
    KeyMaterial,
    Keystore,
    KeystoreUnavailable,
)
from agent.keystore.software_asymmetric import SoftwareAsymmetricMixin

# Largest payload that runs on the calling thread when inline_crypto is on.
INLINE_MAX_BYTES = 64 * 1024
# Inline calls yield to other tasks once in this many; see ``Offload.run``.
INLINE_YIELD_EVERY = 16

# wrap_format of material sealed with AES-GCM under the domain key.
SEALED_GCM = 2

DOMAIN_KEY_BYTES = 32
_LOOSE_MODE_BITS = 0o077

T = TypeVar("T")


class SoftwareKey:
    """One symmetric key held in process memory, with GCM under it."""

    __slots__ = ("key_spec", "_aesgcm", "_sm4_key")

    def __init__(self, key_spec: str, key: bytes):
        expected = SYMMETRIC_KEY_BYTES.get(key_spec)
        if expected is None:
            raise ValueError(f"unsupported key spec {key_spec!r}")
        if len(key) != expected:
            raise ValueError(f"a {key_spec} key must be {expected} bytes long")
        self.key_spec = key_spec
        self._aesgcm = None if key_spec == "Aliyun_SM4" else AESGCM(key)
        self._sm4_key = key if key_spec == "Aliyun_SM4" else None

    def __repr__(self) -> str:
        return f"SoftwareKey({self.key_spec}, <redacted>)"

    def __reduce__(self):
        raise TypeError("SoftwareKey contains key material and cannot be pickled")

    def encrypt(self, plaintext: bytes, aad: bytes) -> tuple[bytes, bytes]:
        """Encrypt under a fresh random 12-byte IV.

        Returns:
            ``(iv, ciphertext_with_tag)``, the tag being the last 16 bytes.
        """
        iv = os.urandom(GCM_IV_BYTES)
        if self._aesgcm is not None:
            return iv, self._aesgcm.encrypt(iv, plaintext, aad)
        encryptor = Cipher(algorithms.SM4(self._sm4_key), modes.GCM(iv)).encryptor()
        encryptor.authenticate_additional_data(aad)
        body = encryptor.update(plaintext) + encryptor.finalize()
        return iv, body + encryptor.tag

    def decrypt(self, iv: bytes, ciphertext_with_tag: bytes, aad: bytes) -> bytes:
        """Decrypt and authenticate.

        Raises:
            DecryptionFailed: the IV is not 12 bytes, the input is shorter
                than a tag, or authentication failed.
        """
        check_gcm_input(iv, ciphertext_with_tag)
        try:
            if self._aesgcm is not None:
                return self._aesgcm.decrypt(iv, ciphertext_with_tag, aad)
            return self._sm4_decrypt(iv, ciphertext_with_tag, aad)
        except InvalidTag:
            raise DecryptionFailed() from None

    def _sm4_decrypt(self, iv: bytes, ciphertext_with_tag: bytes, aad: bytes) -> bytes:
        body = ciphertext_with_tag[:-GCM_TAG_BYTES]
        tag = ciphertext_with_tag[-GCM_TAG_BYTES:]
        mode = modes.GCM(iv, tag)
        decryptor = Cipher(algorithms.SM4(self._sm4_key), mode).decryptor()
        decryptor.authenticate_additional_data(aad)
        return decryptor.update(body) + decryptor.finalize()


def check_gcm_input(iv: bytes, ciphertext_with_tag: bytes) -> None:
    """Raise DecryptionFailed unless the IV and the input can be GCM input.

    Only 12-byte IVs pass. SoftHSM2 2.6.1 accepts empty and 1-byte IVs,
    and an empty IV makes its GCM deterministic.
    """
    if len(iv) != GCM_IV_BYTES:
        raise DecryptionFailed()
    if len(ciphertext_with_tag) < GCM_TAG_BYTES:
        raise DecryptionFailed()


def sm4_available() -> bool:
    """Return whether this build of cryptography can run SM4-GCM."""
    try:
        SoftwareKey("Aliyun_SM4", bytes(16)).encrypt(b"", b"")
    except UnsupportedAlgorithm:
        return False
    return True


def version_aad(version_id: str) -> bytes:
    """Return the AAD that binds sealed material to its version id."""
    return version_id.encode("utf-8")


class Offload:
    """The runner of a keystore's calls, inline or in worker threads.

    A trio-to-thread hand-off costs more than a small GCM operation. So
    with ``inline_crypto``, calls on at most ``INLINE_MAX_BYTES`` run on
    the calling thread, and the rest in at most ``worker_threads`` threads.
    After ``close``, every call raises KeystoreUnavailable.
    """

    def __init__(self, name: str, inline_crypto: bool, worker_threads: int):
        if worker_threads < 1:
            raise ValueError("worker_threads must be at least 1")
        self.name = name
        self.inline_crypto = inline_crypto
        self.worker_threads = worker_threads
        self.limiter = trio.CapacityLimiter(worker_threads)
        self.closed = False
        self._inline_calls = 0

    def is_inline(self, size: int) -> bool:
        """Return whether a call on ``size`` bytes runs on the calling thread."""
        return self.inline_crypto and size <= INLINE_MAX_BYTES

    async def run(self, size: int, function: Callable[..., T], *args) -> T:
        """Run ``function(*args)`` inline or in a worker thread, by ``size``.

        An inline call raises ``trio.Cancelled`` if the calling task is
        cancelled. It yields to other tasks only every ``INLINE_YIELD_EVERY``
        calls: a yield costs more than a small call, and requests yield
        anyway when they read and reply, but a task that loops over inline
        calls must still let other tasks and finished worker threads run.

        Raises:
            KeystoreUnavailable: the keystore is closed, or closed while
                this call waited.
        """
        self._check_open()
        if not self.is_inline(size):
            # No checkpoint before the limiter queues this call, so a call
            # that passed the check is served before ``close`` gets slots.
            return await trio.to_thread.run_sync(function, *args,
                                                 limiter=self.limiter)
        self._inline_calls += 1
        if self._inline_calls % INLINE_YIELD_EVERY:
            await trio.lowlevel.checkpoint_if_cancelled()
        else:
            await trio.lowlevel.checkpoint()
            self._check_open()
        return function(*args)

    async def close(self) -> None:
        """Reject new calls and wait until no worker thread runs."""
        self.closed = True
        for _ in range(self.worker_threads):
            await self.limiter.acquire_on_behalf_of(object())

    def _check_open(self) -> None:
        if self.closed:
            raise KeystoreUnavailable(f"keystore {self.name!r} is closed")


def read_domain_key_file(path: Path) -> SoftwareKey:
    """Load the domain key from ``path``, creating it on first use.

    A new file gets 32 random bytes with mode 0600. It is written to a
    temporary name and linked into place, so two agents starting together
    end up with the one file that was linked first.

    Raises:
        KeystoreUnavailable: the file is accessible to group or others,
            has the wrong length or cannot be read or created.
    """
    try:
        if not path.exists():
            _create_domain_key_file(path)
        with open(path, "rb") as file:
            mode = os.fstat(file.fileno()).st_mode & 0o777
            if mode & _LOOSE_MODE_BITS:
                raise KeystoreUnavailable(
                    f"domain key file {path} has mode {mode:04o}; it must not be "
                    f"accessible to group or others (chmod 600 {path})"
                )
            key = file.read(DOMAIN_KEY_BYTES + 1)
    except OSError as error:
        raise KeystoreUnavailable(
            f"cannot read domain key file {path}: {error.strerror}"
        ) from None
    if len(key) != DOMAIN_KEY_BYTES:
        raise KeystoreUnavailable(
            f"domain key file {path} must contain exactly {DOMAIN_KEY_BYTES} bytes"
        )
    return SoftwareKey("Aliyun_AES_256", key)


def _create_domain_key_file(path: Path) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(os.urandom(DOMAIN_KEY_BYTES))
            file.flush()
            os.fsync(file.fileno())
        os.link(temporary, path)
    except FileExistsError:
        pass
    finally:
        temporary.unlink(missing_ok=True)


class MaterialCache:
    """A bounded LRU map from version id to ``SoftwareKey``, for any thread."""

    def __init__(self, size: int):
        self._keys: LRUCache = LRUCache(maxsize=size)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._keys)

    def get(self, version_id: str) -> SoftwareKey | None:
        with self._lock:
            return self._keys.get(version_id)

    def put(self, version_id: str, key: SoftwareKey) -> None:
        with self._lock:
            self._keys[version_id] = key

    def clear(self) -> None:
        with self._lock:
            self._keys.clear()


class SoftwareKeystore(SoftwareAsymmetricMixin, Keystore):
    """SOFTWARE-protected keys sealed under a domain key kept in a file."""

    def __init__(self, name: str, domain_key: SoftwareKey, offload: Offload,
                 cache_size: int):
        self.name = name
        self._domain_key = domain_key
        self._offload = offload
        self._materials = MaterialCache(cache_size)
        self._sm4 = sm4_available()

    @classmethod
    async def open(cls, settings) -> SoftwareKeystore:
        """Open the keystore described by a ``KeystoreSettings``.

        Raises:
            KeystoreUnavailable: no domain key file is configured, or it
                cannot be used.
        """
        if settings.domain_key_file is None:
            raise KeystoreUnavailable(
                f"keystore {settings.name!r} of type software needs domain_key_file"
            )
        domain_key = read_domain_key_file(settings.domain_key_file)
        offload = Offload(settings.name, settings.inline_crypto,
                          settings.worker_threads)
        return cls(settings.name, domain_key, offload, settings.cache_size)

    def supports(self, key_spec: str, protection_level: str) -> bool:
        if protection_level != SOFTWARE or key_spec not in SYMMETRIC_KEY_BYTES:
            return False
        return key_spec != "Aliyun_SM4" or self._sm4

    async def generate(self, version_id: str, key_spec: str,
                       protection_level: str) -> KeyMaterial:
        if not self.supports(key_spec, protection_level):
            raise ValueError(f"{key_spec} with {protection_level} is not supported")
        sealed = await self._offload.run(0, self._seal_new, version_id, key_spec)
        return KeyMaterial(version_id, key_spec, SOFTWARE, SEALED_GCM, sealed)

    async def encrypt(self, material: KeyMaterial, plaintext: bytes,
                      aad: bytes) -> tuple[bytes, bytes]:
        return await self._offload.run(len(plaintext), self._encrypt, material,
                                       plaintext, aad)

    async def decrypt(self, material: KeyMaterial, iv: bytes,
                      ciphertext_with_tag: bytes, aad: bytes) -> bytes:
        check_gcm_input(iv, ciphertext_with_tag)
        return await self._offload.run(len(ciphertext_with_tag), self._decrypt,
                                       material, iv, ciphertext_with_tag, aad)

    async def random_bytes(self, length: int) -> bytes:
        if length < 0:
            raise ValueError("length must not be negative")
        return await self._offload.run(length, os.urandom, length)

    def status(self) -> dict:
        return {
            "type": "software",
            "name": self.name,
            "ready": not self._offload.closed,
            "cached_keys": len(self._materials),
        }

    async def aclose(self) -> None:
        if self._offload.closed:
            return
        await self._offload.close()
        self._materials.clear()

    def _seal_new(self, version_id: str, key_spec: str) -> bytes:
        material = os.urandom(SYMMETRIC_KEY_BYTES[key_spec])
        iv, sealed = self._domain_key.encrypt(material, version_aad(version_id))
        return iv + sealed

    def _encrypt(self, material: KeyMaterial, plaintext: bytes,
                 aad: bytes) -> tuple[bytes, bytes]:
        return self._software_key(material).encrypt(plaintext, aad)

    def _decrypt(self, material: KeyMaterial, iv: bytes, ciphertext_with_tag: bytes,
                 aad: bytes) -> bytes:
        return self._software_key(material).decrypt(iv, ciphertext_with_tag, aad)

    def _software_key(self, material: KeyMaterial) -> SoftwareKey:
        key = self._materials.get(material.version_id)
        if key is not None:
            return key
        check_software_material(material)
        sealed = material.wrapped
        plain = self._domain_key.decrypt(
            sealed[:GCM_IV_BYTES], sealed[GCM_IV_BYTES:],
            version_aad(material.version_id),
        )
        key = software_key_from(material, plain)
        self._materials.put(material.version_id, key)
        return key


def check_software_material(material: KeyMaterial) -> None:
    """Raise ValueError unless ``material`` is sealed SOFTWARE material."""
    if (material.protection_level != SOFTWARE or material.wrap_format != SEALED_GCM
            or material.key_spec not in SYMMETRIC_KEY_BYTES):
        raise ValueError(
            f"key version {material.version_id} is not SOFTWARE material "
            f"sealed with wrap format {SEALED_GCM}"
        )


def software_key_from(material: KeyMaterial, plain: bytes) -> SoftwareKey:
    """Build the key of an unsealed version, checking its length.

    Raises:
        DecryptionFailed: the unsealed bytes do not fit the key spec.
    """
    if len(plain) != SYMMETRIC_KEY_BYTES[material.key_spec]:
        raise DecryptionFailed()
    return SoftwareKey(material.key_spec, plain)
