"""The PKCS#11 keystore: a domain key in the token seals every key version.

Sealed material is ``len(id) || domain key CKA_ID || iv(12) || ciphertext
|| tag(16)``, AES-GCM under that token key with AAD = the version id, so
it fails to open under another version id.
- wrap_format 1 (HSM): an AES key made in the token and wrapped there with
  AES_KEY_WRAP_PAD (RFC 5649), then sealed. Key wrap binds nothing to the
  version id and SoftHSM2 2.6 cannot wrap with GCM, hence the GCM layer.
  The key never leaves the token in the clear.
- wrap_format 2 (SOFTWARE, Aliyun_SM4): token RNG bytes, sealed, and used
  in ``software.SoftwareKey``.
Loading, sessions and caches: ``_Module``, ``_Slot``, ``Pkcs11Keystore``.
"""

from __future__ import annotations

import ctypes
import hashlib
import hmac
import os
import queue
import threading
import time
from contextlib import ExitStack
from typing import TYPE_CHECKING, Callable, TypeVar

import pkcs11
import pkcs11._pkcs11 as pkcs11_native
import trio
from cachetools import LRUCache
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11.constants import MechanismFlag
from pkcs11.mechanisms import GCMParams

from agent.keystore.base import (
    GCM_IV_BYTES,
    HSM,
    SOFTWARE,
    SYMMETRIC_KEY_BYTES,
    DecryptionFailed,
    KeyMaterial,
    Keystore,
    KeystoreUnavailable,
)
from agent.keystore.pkcs11_asymmetric import Pkcs11AsymmetricMixin
from agent.keystore.software import (
    SEALED_GCM,
    MaterialCache,
    Offload,
    SoftwareKey,
    check_gcm_input,
    check_software_material,
    sm4_available,
    software_key_from,
    version_aad,
)

if TYPE_CHECKING:
    from agent.keystore import KeystoreSettings

T = TypeVar("T")

# wrap_format of an HSM key wrapped with AES_KEY_WRAP_PAD, then sealed.
WRAPPED_KWP_GCM = 1

_HSM_SPECS = ("Aliyun_AES_256", "Aliyun_AES_192", "Aliyun_AES_128")
_HSM_MECHANISMS = (Mechanism.AES_KEY_GEN, Mechanism.AES_KEY_WRAP_PAD)
_USE_CAPABILITIES = MechanismFlag.ENCRYPT | MechanismFlag.DECRYPT
_DOMAIN_CAPABILITIES = _USE_CAPABILITIES | MechanismFlag.WRAP | MechanismFlag.UNWRAP

# Errors that mean the token or the login is gone, not that the input is bad.
_UNAVAILABLE_ERRORS = (
    pkcs11.DeviceError,
    pkcs11.DeviceMemory,
    pkcs11.DeviceRemoved,
    pkcs11.HostMemory,
    pkcs11.SessionClosed,
    pkcs11.SessionCount,
    pkcs11.SessionHandleInvalid,
    pkcs11.TokenNotPresent,
    pkcs11.TokenNotRecognised,
    pkcs11.UserNotLoggedIn,
)

_OPEN_ATTEMPTS = 3

# Sealed material starts with one length byte and the domain key's CKA_ID.
_MAX_DOMAIN_KEY_ID = 255

_CKF_OS_LOCKING_OK = 0x2
_CKR_CRYPTOKI_ALREADY_INITIALIZED = 0x191
_CK_FUNCTION = ctypes.CFUNCTYPE(ctypes.c_ulong, ctypes.c_void_p)


class _CkVersion(ctypes.Structure):
    _fields_ = [("major", ctypes.c_ubyte), ("minor", ctypes.c_ubyte)]


class _CkFunctionListHead(ctypes.Structure):
    """The first fields of CK_FUNCTION_LIST, enough to initialise."""

    _fields_ = [
        ("version", _CkVersion),
        ("C_Initialize", _CK_FUNCTION),
        ("C_Finalize", _CK_FUNCTION),
    ]


class _CkInitializeArgs(ctypes.Structure):
    _fields_ = [
        ("CreateMutex", ctypes.c_void_p),
        ("DestroyMutex", ctypes.c_void_p),
        ("LockMutex", ctypes.c_void_p),
        ("UnlockMutex", ctypes.c_void_p),
        ("flags", ctypes.c_ulong),
        ("pReserved", ctypes.c_void_p),
    ]


class _PreinitialisedLib(pkcs11_native.lib):
    """python-pkcs11's library class without its ``C_Initialize(NULL)``."""

    def initialize(self):
        # _Module has initialised the module with OS locking already.
        pass


class _Module:
    """One PKCS#11 module, initialised with CKF_OS_LOCKING_OK.

    python-pkcs11 calls ``C_Initialize(NULL)``, and SoftHSM2 2.6.1 then
    runs without locks and crashes under concurrent threads. So this class
    initialises the module through ctypes on the same path first (dlopen
    returns the same instance) and python-pkcs11 skips its own call. The
    module is finalised when its last keystore closes. The ctypes handle
    is never closed, so the module stays mapped for stale objects.
    """

    def __init__(self, path: str):
        self.path = path
        try:
            library = ctypes.CDLL(path)
        except OSError as error:
            raise KeystoreUnavailable(
                f"cannot load PKCS#11 module {path}: {error}"
            ) from None
        get_function_list = library.C_GetFunctionList
        get_function_list.argtypes = [
            ctypes.POINTER(ctypes.POINTER(_CkFunctionListHead))
        ]
        get_function_list.restype = ctypes.c_ulong
        self._functions = ctypes.POINTER(_CkFunctionListHead)()
        self._check_rv("C_GetFunctionList", get_function_list(
            ctypes.byref(self._functions)))
        self._library = library
        self.lib: pkcs11_native.lib | None = None
        self.users = 0

    def acquire(self) -> pkcs11_native.lib:
        """Return the python-pkcs11 library, initialising it on first use."""
        if self.users == 0:
            arguments = _CkInitializeArgs(flags=_CKF_OS_LOCKING_OK)
            rv = self._functions.contents.C_Initialize(
                ctypes.cast(ctypes.pointer(arguments), ctypes.c_void_p))
            if rv == _CKR_CRYPTOKI_ALREADY_INITIALIZED:
                raise KeystoreUnavailable(
                    f"PKCS#11 module {self.path} was initialised by other code in "
                    "this process, perhaps without locking; load it only through "
                    "the keystore"
                )
            self._check_rv("C_Initialize", rv)
            try:
                self.lib = _PreinitialisedLib(self.path)
            except pkcs11.PKCS11Error:
                self._functions.contents.C_Finalize(None)
                raise
        self.users += 1
        return self.lib

    def release(self) -> None:
        """Finalise the module once its last user releases it."""
        self.users -= 1
        if self.users == 0:
            self.lib = None
            self._functions.contents.C_Finalize(None)

    def _check_rv(self, function: str, rv: int) -> None:
        if rv != 0:
            raise KeystoreUnavailable(
                f"{function} of PKCS#11 module {self.path} failed with CKR 0x{rv:x}"
            )


class _Login:
    """The logged-in session of one token, shared within this process.

    Login state belongs to the application and token, not the session,
    so keystores on one token share it; closing it logs out.
    """

    def __init__(self, session: pkcs11.Session, pin_digest: bytes):
        self.session = session
        self.pin_digest = pin_digest
        self.users = 1


# Registries shared by the keystores of this process, under _registry_lock.
_registry_lock = threading.Lock()
_modules: dict[str, _Module] = {}
_logins: dict[tuple[str, int], _Login] = {}
# The SOFTHSM2_CONF of the first module load; empty until then.
_first_softhsm2_conf: list[str | None] = []
_pin_digest_key = os.urandom(32)


def _acquire_module(path: str, softhsm2_conf: str | None) -> _Module:
    # SoftHSM2 reads SOFTHSM2_CONF once per process, so one process can
    # serve the tokens of one SoftHSM2 configuration only.
    if softhsm2_conf is not None:
        if _first_softhsm2_conf and _first_softhsm2_conf[0] != softhsm2_conf:
            raise KeystoreUnavailable(
                f"SoftHSM2 configuration {softhsm2_conf} differs from "
                f"{_first_softhsm2_conf[0]}, which this process loaded first; one "
                "process can use one SoftHSM2 configuration only"
            )
        os.environ["SOFTHSM2_CONF"] = softhsm2_conf
    module = _modules.get(path)
    if module is None:
        module = _Module(path)
        _modules[path] = module
    module.acquire()
    if not _first_softhsm2_conf:
        _first_softhsm2_conf.append(os.environ.get("SOFTHSM2_CONF"))
    return module


def load_module(path: str, softhsm2_conf: str | None) -> _Module:
    """Load a PKCS#11 module as keystores do, for code outside a keystore.

    The module is initialised with CKF_OS_LOCKING_OK and shared with any
    keystore of this process; ``.lib`` is its python-pkcs11 library.
    Release it with ``unload_module``.

    Raises:
        KeystoreUnavailable: the module cannot be loaded or initialised,
            or SOFTHSM2_CONF differs from the one this process loaded.
    """
    with _registry_lock:
        return _acquire_module(path, softhsm2_conf)


def unload_module(module: _Module) -> None:
    """Release a module from ``load_module``; the last user finalises it."""
    with _registry_lock:
        module.release()


def _acquire_login(module: _Module, token: pkcs11.Token, pin: str,
                   pin_source: str) -> _Login:
    digest = hmac.new(_pin_digest_key, pin.encode("utf-8"), hashlib.sha256).digest()
    key = (module.path, token.slot.slot_id)
    login = _logins.get(key)
    if login is not None:
        if not hmac.compare_digest(login.pin_digest, digest):
            raise _pin_error(token, pin_source)
        login.users += 1
        return login
    try:
        session = token.open(rw=True, user_pin=pin)
    except (pkcs11.PinIncorrect, pkcs11.PinInvalid, pkcs11.PinLenRange):
        raise _pin_error(token, pin_source) from None
    except pkcs11.PinLocked:
        raise KeystoreUnavailable(
            f"the user PIN of token {token.label!r} is locked"
        ) from None
    _logins[key] = login = _Login(session, digest)
    return login


def _release_login(module: _Module, token: pkcs11.Token) -> None:
    key = (module.path, token.slot.slot_id)
    login = _logins[key]
    login.users -= 1
    if login.users == 0:
        del _logins[key]
        login.session.close()


def _pin_error(token: pkcs11.Token, pin_source: str) -> KeystoreUnavailable:
    return KeystoreUnavailable(
        f"login to token {token.label!r} failed: the PIN from {pin_source} "
        "is incorrect"
    )


def _find_token(lib: pkcs11_native.lib, label: str, path: str) -> pkcs11.Token:
    try:
        return lib.get_token(token_label=label)
    except pkcs11.NoSuchToken:
        raise KeystoreUnavailable(
            f"no token labelled {label!r} in PKCS#11 module {path}"
        ) from None
    except pkcs11.MultipleTokensReturned:
        raise KeystoreUnavailable(
            f"several tokens are labelled {label!r} in PKCS#11 module {path}"
        ) from None


def _domain_keys(session: pkcs11.Session, label: str) -> list:
    return list(session.get_objects({
        Attribute.CLASS: ObjectClass.SECRET_KEY,
        Attribute.KEY_TYPE: KeyType.AES,
        Attribute.LABEL: label,
        Attribute.TOKEN: True,
    }))


def _create_domain_key(session: pkcs11.Session, label: str):
    # The ID starts with the creation time, so the oldest key sorts first.
    key_id = time.time_ns().to_bytes(8, "big") + os.urandom(8)
    return session.generate_key(
        KeyType.AES, 256, id=key_id, label=label, store=True,
        capabilities=_DOMAIN_CAPABILITIES,
        template={
            Attribute.SENSITIVE: True,
            Attribute.EXTRACTABLE: False,
            Attribute.PRIVATE: True,
        },
    )


def _ensure_domain_key(session: pkcs11.Session, label: str) -> bytes:
    """Return the CKA_ID that new material is sealed under.

    The key is created if the token has none with ``label``. Agents that
    open a new token at the same time may each create one, and an agent
    may not see the other's key yet (measured with two processes on one
    SoftHSM2 directory). So every agent searches again after creating and
    picks the smallest CKA_ID, which is the oldest key. No key is ever
    destroyed, and sealed material names its key, so material sealed
    under either key stays readable. Later opens agree on the oldest.
    """
    keys = _domain_keys(session, label)
    if not keys:
        _create_domain_key(session, label)
        keys = _domain_keys(session, label)
    return min(key[Attribute.ID] for key in keys)


def _find_domain_key(session: pkcs11.Session, label: str, key_id: bytes):
    """Return the domain key with ``key_id`` or None if there is none.

    Raises:
        KeystoreUnavailable: several keys have that ID, or the key is
            extractable or lacks a capability.
    """
    matches = [key for key in _domain_keys(session, label)
               if key[Attribute.ID] == key_id]
    if not matches:
        return None
    if len(matches) > 1:
        raise KeystoreUnavailable(
            f"{len(matches)} domain keys labelled {label!r} have CKA_ID "
            f"{key_id.hex() or '(empty)'}; keep exactly one"
        )
    key = matches[0]
    expected = {
        Attribute.SENSITIVE: True,
        Attribute.EXTRACTABLE: False,
        Attribute.ENCRYPT: True,
        Attribute.DECRYPT: True,
        Attribute.WRAP: True,
        Attribute.UNWRAP: True,
    }
    if key.get_attributes(list(expected)) != expected:
        raise KeystoreUnavailable(
            f"domain key {label!r} must be sensitive and non-extractable and "
            "allow encrypt, decrypt, wrap and unwrap"
        )
    return key


class _HandleCache(LRUCache):
    """Unwrapped keys by version id; an evicted key is destroyed."""

    def popitem(self):
        version_id, key = super().popitem()
        try:
            key.destroy()
        except pkcs11.PKCS11Error:
            # The object goes away with its session at the latest.
            pass
        return version_id, key


class _Slot:
    """One session, the domain keys bound to it and the keys it unwrapped.

    python-pkcs11 sessions must not be used by two threads at once, so a
    slot belongs to one thread at a time: the inline slot to the trio
    thread, worker slots to whichever worker checked them out. A key
    object is bound to the session that made it, so each slot unwraps and
    caches its own non-extractable session copies of HSM keys. The token
    itself stores only domain keys.
    """

    def __init__(self, session: pkcs11.Session, label: str, key_id: bytes,
                 cache_size: int):
        self.session = session
        self.label = label
        self.domain_key_id = key_id
        self._domain_keys: dict[bytes, object] = {}
        self.domain_key = self.find_domain_key(key_id)
        if self.domain_key is None:
            raise KeystoreUnavailable(
                f"domain key {label!r} disappeared from the token"
            )
        self.keys = _HandleCache(maxsize=cache_size)

    def find_domain_key(self, key_id: bytes):
        """Return this session's copy of the domain key ``key_id``, or None."""
        key = self._domain_keys.get(key_id)
        if key is None:
            token_key = _find_domain_key(self.session, self.label, key_id)
            if token_key is None:
                return None
            key = self._domain_keys[key_id] = _session_copy(token_key)
        return key


def _session_copy(token_key):
    """Return a session-object copy of a token key, or the key if it can't copy.

    Sealing 32 bytes took 48 us with the token object and 16 us with a
    session copy (SoftHSM2 2.6.1, file object store). The copy keeps
    SENSITIVE and non-EXTRACTABLE, and dies with its session.
    """
    try:
        return token_key.copy({Attribute.TOKEN: False})
    except pkcs11.PKCS11Error:
        # A token rejects copies of a key whose CKA_COPYABLE is false.
        return token_key


def _gcm(iv: bytes, aad: bytes) -> dict:
    return {"mechanism": Mechanism.AES_GCM, "mechanism_param": GCMParams(iv, aad, 128)}


def _token_decrypt(key, iv: bytes, ciphertext_with_tag: bytes, aad: bytes) -> bytes:
    try:
        return key.decrypt(ciphertext_with_tag, **_gcm(iv, aad))
    except _UNAVAILABLE_ERRORS:
        raise
    except pkcs11.PKCS11Error:
        # SoftHSM2 reports a wrong tag or AAD as GeneralError.
        raise DecryptionFailed() from None


def _seal(slot: _Slot, version_id: str, plain: bytes) -> bytes:
    iv = os.urandom(GCM_IV_BYTES)
    body = slot.domain_key.encrypt(plain, **_gcm(iv, version_aad(version_id)))
    key_id = slot.domain_key_id
    return bytes([len(key_id)]) + key_id + iv + body


def _unseal(slot: _Slot, material: KeyMaterial) -> tuple[bytes, object]:
    """Open sealed material; return the plaintext and the domain key used.

    Raises:
        DecryptionFailed: the blob is malformed, names no domain key of
            this token, or fails authentication.
    """
    sealed = material.wrapped
    id_end = 1 + sealed[0] if sealed else 0
    iv, body = sealed[id_end:id_end + GCM_IV_BYTES], sealed[id_end + GCM_IV_BYTES:]
    check_gcm_input(iv, body)
    domain_key = slot.find_domain_key(sealed[1:id_end])
    if domain_key is None:
        raise DecryptionFailed()
    aad = version_aad(material.version_id)
    return _token_decrypt(domain_key, iv, body, aad), domain_key


def _kwp_length(key_bytes: int) -> int:
    # RFC 5649 pads to a multiple of 8 and prepends an 8-byte block.
    return -(-key_bytes // 8) * 8 + 8


def _generate_hsm(slot: _Slot, version_id: str, key_spec: str) -> bytes:
    key = slot.session.generate_key(
        KeyType.AES, SYMMETRIC_KEY_BYTES[key_spec] * 8,
        capabilities=_USE_CAPABILITIES,
        template={Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: True},
    )
    try:
        wrapped = slot.domain_key.wrap_key(key, mechanism=Mechanism.AES_KEY_WRAP_PAD)
    finally:
        key.destroy()
    return _seal(slot, version_id, wrapped)


def _generate_software(slot: _Slot, version_id: str, key_spec: str) -> bytes:
    material = slot.session.generate_random(SYMMETRIC_KEY_BYTES[key_spec] * 8)
    return _seal(slot, version_id, material)


def _hsm_key(slot: _Slot, material: KeyMaterial):
    key = slot.keys.get(material.version_id)
    if key is not None:
        return key
    wrapped, domain_key = _unseal(slot, material)
    if len(wrapped) != _kwp_length(SYMMETRIC_KEY_BYTES[material.key_spec]):
        raise DecryptionFailed()
    key = domain_key.unwrap_key(
        ObjectClass.SECRET_KEY, KeyType.AES, wrapped,
        mechanism=Mechanism.AES_KEY_WRAP_PAD, store=False,
        capabilities=_USE_CAPABILITIES,
        template={Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False},
    )
    slot.keys[material.version_id] = key
    return key


def _hsm_encrypt(slot: _Slot, material: KeyMaterial, plaintext: bytes,
                 aad: bytes) -> tuple[bytes, bytes]:
    key = _hsm_key(slot, material)
    iv = os.urandom(GCM_IV_BYTES)
    return iv, key.encrypt(plaintext, **_gcm(iv, aad))


def _hsm_decrypt(slot: _Slot, material: KeyMaterial, iv: bytes,
                 ciphertext_with_tag: bytes, aad: bytes) -> bytes:
    return _token_decrypt(_hsm_key(slot, material), iv, ciphertext_with_tag, aad)


def _random(slot: _Slot, length: int) -> bytes:
    if length == 0:
        return b""
    return slot.session.generate_random(length * 8)


class Pkcs11Keystore(Pkcs11AsymmetricMixin, Keystore):
    """Keys sealed under a domain key that lives in a PKCS#11 token.

    With ``inline_crypto``, calls on at most 64 KiB run on the calling
    thread with the inline slot. Larger calls run in worker threads, each
    with its own slot. Key generation (about 0.3 ms) and unwrapping on a
    cache miss (about 0.25 ms) run inline too, because on the 2-core host
    measured a hand-off to a thread cost 0.16 ms and threads added no
    throughput.
    """

    def __init__(self, settings: KeystoreSettings, module: _Module,
                 token: pkcs11.Token, slots: list[_Slot], hsm_available: bool):
        self.name = settings.name
        self._label = settings.token_label
        self._module = module
        self._token = token
        self._offload = Offload(settings.name, settings.inline_crypto,
                                settings.worker_threads)
        self._slots = slots
        self._inline_slot = slots[0] if settings.inline_crypto else None
        self._worker_slots: queue.SimpleQueue[_Slot] = queue.SimpleQueue()
        for slot in slots[-settings.worker_threads:]:
            self._worker_slots.put(slot)
        self._materials = MaterialCache(settings.cache_size)
        self._hsm_available = hsm_available
        self._sm4_available = sm4_available()
        self._ready = True

    @classmethod
    async def open(cls, settings: KeystoreSettings, pin: str) -> Pkcs11Keystore:
        """Load the module, log in to the token and find the domain key.

        The domain key is created if the token has none. This blocks the
        calling thread during login and the object search.

        Raises:
            KeystoreUnavailable: the module, token, PIN or domain key
                cannot be used. The message names the cause, never the PIN.
        """
        if settings.module is None or settings.token_label is None:
            raise KeystoreUnavailable(
                f"keystore {settings.name!r} of type pkcs11 needs module and "
                "token_label"
            )
        if settings.worker_threads < 1:
            raise KeystoreUnavailable(
                f"keystore {settings.name!r}: worker_threads must be at least 1"
            )
        for attempt in range(1, _OPEN_ATTEMPTS + 1):
            try:
                with _registry_lock, ExitStack() as cleanup:
                    keystore = cls._open_locked(settings, pin, cleanup)
                    cleanup.pop_all()
                return keystore
            except pkcs11.GeneralError:
                # SoftHSM2 2.6.1 raised this from C_GetTokenInfo while two
                # processes opened one new token at once.
                if attempt == _OPEN_ATTEMPTS:
                    raise KeystoreUnavailable(
                        f"opening token {settings.token_label!r} failed "
                        f"{_OPEN_ATTEMPTS} times with GeneralError"
                    ) from None
                await trio.sleep(0.05 * attempt)
            except pkcs11.PKCS11Error as error:
                raise KeystoreUnavailable(
                    f"opening token {settings.token_label!r} failed: "
                    f"{type(error).__name__}"
                ) from None

    @classmethod
    def _open_locked(cls, settings: KeystoreSettings, pin: str,
                     cleanup: ExitStack) -> Pkcs11Keystore:
        conf = str(settings.softhsm2_conf) if settings.softhsm2_conf else None
        module = _acquire_module(settings.module, conf)
        cleanup.callback(module.release)
        token = _find_token(module.lib, settings.token_label, settings.module)
        mechanisms = token.slot.get_mechanisms()
        if Mechanism.AES_GCM not in mechanisms:
            raise KeystoreUnavailable(
                f"token {settings.token_label!r} does not offer CKM_AES_GCM"
            )
        _acquire_login(module, token, pin, _pin_source(settings))
        cleanup.callback(_release_login, module, token)
        count = settings.worker_threads + (1 if settings.inline_crypto else 0)
        sessions = []
        for _ in range(count):
            sessions.append(token.open(rw=True))
            cleanup.callback(sessions[-1].close)
        label = settings.domain_key_label
        key_id = _ensure_domain_key(sessions[0], label)
        if len(key_id) > _MAX_DOMAIN_KEY_ID:
            raise KeystoreUnavailable(
                f"domain key {label!r} has a CKA_ID over {_MAX_DOMAIN_KEY_ID} bytes"
            )
        slots = [_Slot(session, label, key_id, settings.cache_size)
                 for session in sessions]
        hsm_available = all(mechanism in mechanisms for mechanism in _HSM_MECHANISMS)
        return cls(settings, module, token, slots, hsm_available)

    def supports(self, key_spec: str, protection_level: str) -> bool:
        if protection_level == HSM:
            return self._hsm_available and key_spec in _HSM_SPECS
        if protection_level == SOFTWARE and key_spec in SYMMETRIC_KEY_BYTES:
            return key_spec != "Aliyun_SM4" or self._sm4_available
        return False

    async def generate(self, version_id: str, key_spec: str,
                       protection_level: str) -> KeyMaterial:
        if not self.supports(key_spec, protection_level):
            raise ValueError(f"{key_spec} with {protection_level} is not supported")
        if protection_level == HSM:
            sealed = await self._run(0, _generate_hsm, version_id, key_spec)
            return KeyMaterial(version_id, key_spec, HSM, WRAPPED_KWP_GCM, sealed)
        sealed = await self._run(0, _generate_software, version_id, key_spec)
        return KeyMaterial(version_id, key_spec, SOFTWARE, SEALED_GCM, sealed)

    async def encrypt(self, material: KeyMaterial, plaintext: bytes,
                      aad: bytes) -> tuple[bytes, bytes]:
        if _is_hsm_material(material):
            return await self._run(len(plaintext), _hsm_encrypt, material,
                                   plaintext, aad)
        return await self._run(len(plaintext), self._software_encrypt, material,
                               plaintext, aad)

    async def decrypt(self, material: KeyMaterial, iv: bytes,
                      ciphertext_with_tag: bytes, aad: bytes) -> bytes:
        check_gcm_input(iv, ciphertext_with_tag)
        function = (_hsm_decrypt if _is_hsm_material(material)
                    else self._software_decrypt)
        return await self._run(len(ciphertext_with_tag), function, material, iv,
                               ciphertext_with_tag, aad)

    async def random_bytes(self, length: int) -> bytes:
        if length < 0:
            raise ValueError("length must not be negative")
        return await self._run(length, _random, length)

    def status(self) -> dict:
        return {
            "type": "pkcs11",
            "name": self.name,
            "token": self._label,
            "module": self._module.path,
            "ready": self._ready and not self._offload.closed,
            "hsm_protection": self._hsm_available,
            "sessions": len(self._slots),
            "cached_handles": sum(len(slot.keys) for slot in self._slots),
            "cached_software_keys": len(self._materials),
        }

    async def aclose(self) -> None:
        if self._offload.closed:
            return
        await self._offload.close()
        self._materials.clear()
        with _registry_lock:
            for slot in self._slots:
                _close_quietly(slot.session)
            self._slots = []
            try:
                _release_login(self._module, self._token)
            except pkcs11.PKCS11Error:
                pass
            self._module.release()

    async def _run(self, size: int, function: Callable[..., T], *args) -> T:
        try:
            if self._offload.is_inline(size):
                return await self._offload.run(size, function, self._inline_slot,
                                               *args)
            return await self._offload.run(size, self._in_worker, function, args)
        except _UNAVAILABLE_ERRORS as error:
            # NOTE: nothing reconnects; the keystore stays not ready until
            # it is closed and opened again.
            self._ready = False
            raise KeystoreUnavailable(
                f"token {self._label!r} failed with {type(error).__name__}; "
                "reopen the keystore"
            ) from None

    def _in_worker(self, function: Callable[..., T], args: tuple) -> T:
        slot = self._worker_slots.get()
        try:
            return function(slot, *args)
        finally:
            self._worker_slots.put(slot)

    def _software_key(self, slot: _Slot, material: KeyMaterial) -> SoftwareKey:
        key = self._materials.get(material.version_id)
        if key is None:
            key = software_key_from(material, _unseal(slot, material)[0])
            self._materials.put(material.version_id, key)
        return key

    def _software_encrypt(self, slot: _Slot, material: KeyMaterial, plaintext: bytes,
                          aad: bytes) -> tuple[bytes, bytes]:
        return self._software_key(slot, material).encrypt(plaintext, aad)

    def _software_decrypt(self, slot: _Slot, material: KeyMaterial, iv: bytes,
                          ciphertext_with_tag: bytes, aad: bytes) -> bytes:
        key = self._software_key(slot, material)
        return key.decrypt(iv, ciphertext_with_tag, aad)


def _is_hsm_material(material: KeyMaterial) -> bool:
    """Return whether ``material`` is HSM material; raise if it is neither kind.

    Raises:
        ValueError: the material has an unknown protection level, wrap
            format or key spec.
    """
    if material.protection_level == HSM:
        if (material.wrap_format != WRAPPED_KWP_GCM
                or material.key_spec not in _HSM_SPECS):
            raise ValueError(
                f"key version {material.version_id} is not HSM material sealed "
                f"with wrap format {WRAPPED_KWP_GCM}"
            )
        return True
    check_software_material(material)
    return False


def _pin_source(settings: KeystoreSettings) -> str:
    if settings.pin_file is not None:
        return f"PIN file {settings.pin_file}"
    return f"environment variable {settings.pin_env}"


def _close_quietly(session: pkcs11.Session) -> None:
    try:
        session.close()
    except pkcs11.PKCS11Error:
        # A session of a lost token is gone already.
        pass
