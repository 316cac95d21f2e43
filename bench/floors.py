"""In-process floors: AES-256-GCM encrypt of 32 bytes in the HSM and in software.

The HSM floor creates its own SoftHSM2 token and loads the module through
the keystore's loader, which initialises it with CKF_OS_LOCKING_OK as
the agent does. Its key is a sensitive, non-extractable AES-256 session
object, like the agent's unwrapped keys. Both floors draw a fresh 12-byte
IV per call and use no AAD, on one thread.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable

import pkcs11
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pkcs11 import Attribute, KeyType, Mechanism
from pkcs11.constants import MechanismFlag
from pkcs11.mechanisms import GCMParams

from agent.keystore import pkcs11 as keystore_pkcs11
from agent.keystore import softhsm
from bench.stats import rate_figure

PLAINTEXT = bytes(range(32))
TOKEN_LABEL = "kms-bench-floor"
IV_BYTES = 12

# Operations between two clock reads, so reading the clock costs little.
_BATCH = 64


def run_for(operation: Callable[[], object], warmup_s: float,
            seconds: float) -> dict[str, float]:
    """Call ``operation`` for ``warmup_s``, then measure it for ``seconds``."""
    _repeat(operation, warmup_s)
    count, elapsed = _repeat(operation, seconds)
    return rate_figure(count, elapsed)


def _repeat(operation: Callable[[], object], seconds: float) -> tuple[int, float]:
    # Return how many calls ran and how long they took, in seconds.
    start = time.perf_counter()
    deadline = start + seconds
    count = 0
    while True:
        for _ in range(_BATCH):
            operation()
        count += _BATCH
        now = time.perf_counter()
        if now >= deadline:
            return count, now - start


def software_encrypt() -> Callable[[], bytes]:
    """Return one AES-256-GCM encrypt call with cryptography's AESGCM."""
    aead = AESGCM(AESGCM.generate_key(256))

    def encrypt() -> bytes:
        return aead.encrypt(os.urandom(IV_BYTES), PLAINTEXT, None)

    return encrypt


class HsmFloor:
    """A token of the benchmark's own, logged in, with one AES-256 key.

    Raises (from the constructor):
        TokenSetupError: the token could not be created.
        KeystoreUnavailable: the module could not be loaded safely.
    """

    def __init__(self, directory: Path):
        info = softhsm.init_token(directory, TOKEN_LABEL)
        module_path = softhsm.find_softhsm_module()
        # NOTE: _acquire_module is the keystore's private loader. It is
        # used so the floor loads SoftHSM2 exactly as the agent does.
        with keystore_pkcs11._registry_lock:
            self._module = keystore_pkcs11._acquire_module(
                module_path, str(info.conf_path))
        try:
            token = self._module.lib.get_token(token_label=TOKEN_LABEL)
            pin = info.pin_file.read_text(encoding="utf-8").strip()
            self._session = token.open(rw=True, user_pin=pin)
        except BaseException:
            self._release_module()
            raise
        self._key = self._session.generate_key(
            KeyType.AES, 256, store=False,
            capabilities=MechanismFlag.ENCRYPT | MechanismFlag.DECRYPT,
            template={Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False},
        )

    def encrypt(self) -> bytes:
        """Encrypt the 32-byte plaintext once in the token."""
        iv = os.urandom(IV_BYTES)
        return self._key.encrypt(PLAINTEXT, mechanism=Mechanism.AES_GCM,
                                 mechanism_param=GCMParams(iv, b"", 128))

    def close(self) -> None:
        """Close the session, which logs out, and release the module."""
        try:
            self._session.close()
        except pkcs11.PKCS11Error:
            pass
        self._release_module()

    def _release_module(self) -> None:
        with keystore_pkcs11._registry_lock:
            self._module.release()
