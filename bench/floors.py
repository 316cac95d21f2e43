"""In-process floors: what the HSM and the cipher cost without the agent.

- AES-256-GCM encrypt of 32 bytes in the HSM and in software, with a
  fresh 12-byte IV per call and no AAD;
- RSA_2048 (PKCS#1 v1.5 over a SHA-256 DigestInfo) and EC_P256 (ECDSA,
  raw r || s) signatures of a 32-byte digest in the HSM, the mechanisms
  the agent's AsymmetricSign uses;
- AES-256-GCM throughput over chunks of the size ``encrypt-file`` uses.

The HSM floors create their own SoftHSM2 token and load the module
through the keystore's loader, which initialises it with
CKF_OS_LOCKING_OK as the agent does. Their keys are sensitive,
non-extractable session objects, like the agent's unwrapped keys. Every
floor runs on one thread.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Callable

import pkcs11
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pkcs11 import Attribute, KeyType, Mechanism
from pkcs11.constants import MechanismFlag
from pkcs11.mechanisms import GCMParams
from pkcs11.util.ec import encode_named_curve_parameters

from agent.keystore import pkcs11 as keystore_pkcs11
from agent.keystore import softhsm
from agent.keystore.asymmetric import SHA256_DIGEST_INFO
from bench.stats import rate_figure
from client.envelope import DEFAULT_CHUNK_SIZE

PLAINTEXT = bytes(range(32))
DIGEST = hashlib.sha256(b"kms-agent benchmark").digest()
TOKEN_LABEL = "kms-bench-floor"
IV_BYTES = 12

# Operations between two clock reads, so reading the clock costs little.
_BATCH = 64

_PRIVATE = {Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False}
_SIGNING = MechanismFlag.SIGN | MechanismFlag.VERIFY


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


def stream_for(seconds: float) -> dict[str, float]:
    """Measure AES-256-GCM over ``encrypt-file``'s chunks for ``seconds``.

    Each call seals one chunk with a fresh IV and 41 bytes of AAD, as
    ``client.envelope`` does. The figure is ``bytes_per_s``.
    """
    aead = AESGCM(AESGCM.generate_key(256))
    chunk = bytes(DEFAULT_CHUNK_SIZE)
    aad = bytes(41)
    count, elapsed = _repeat(lambda: aead.encrypt(os.urandom(IV_BYTES), chunk, aad),
                             seconds)
    return {"bytes_per_s": count * len(chunk) / elapsed}


def software_encrypt() -> Callable[[], bytes]:
    """Return one AES-256-GCM encrypt call with cryptography's AESGCM."""
    aead = AESGCM(AESGCM.generate_key(256))

    def encrypt() -> bytes:
        return aead.encrypt(os.urandom(IV_BYTES), PLAINTEXT, None)

    return encrypt


class HsmFloor:
    """A token of the benchmark's own, logged in, with an AES-256 key and two pairs.

    Raises (from the constructor):
        TokenSetupError: the token could not be created.
        KeystoreUnavailable: the module could not be loaded safely.
    """

    def __init__(self, directory: Path):
        info = softhsm.init_token(directory, TOKEN_LABEL)
        module_path = softhsm.find_softhsm_module()
        # Loaded as the agent loads it, with OS locking on.
        self._module = keystore_pkcs11.load_module(module_path, str(info.conf_path))
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
            template=_PRIVATE,
        )
        self._rsa = self._session.generate_keypair(
            KeyType.RSA, 2048, store=False, capabilities=_SIGNING,
            private_template=_PRIVATE)[1]
        curve = self._session.create_domain_parameters(KeyType.EC, {
            Attribute.EC_PARAMS: encode_named_curve_parameters("secp256r1"),
        }, local=True)
        self._ec = curve.generate_keypair(store=False, capabilities=_SIGNING,
                                          private_template=_PRIVATE)[1]

    def encrypt(self) -> bytes:
        """Encrypt the 32-byte plaintext once in the token."""
        iv = os.urandom(IV_BYTES)
        return self._key.encrypt(PLAINTEXT, mechanism=Mechanism.AES_GCM,
                                 mechanism_param=GCMParams(iv, b"", 128))

    def sign_rsa(self) -> bytes:
        """Sign the 32-byte digest once with RSA_2048, PKCS#1 v1.5."""
        return self._rsa.sign(SHA256_DIGEST_INFO + DIGEST, mechanism=Mechanism.RSA_PKCS)

    def sign_ec(self) -> bytes:
        """Sign the 32-byte digest once with ECDSA on P-256."""
        return self._ec.sign(DIGEST, mechanism=Mechanism.ECDSA)

    def close(self) -> None:
        """Close the session, which logs out, and release the module."""
        try:
            self._session.close()
        except pkcs11.PKCS11Error:
            pass
        self._release_module()

    def _release_module(self) -> None:
        keystore_pkcs11.unload_module(self._module)
