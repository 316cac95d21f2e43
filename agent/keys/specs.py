"""Key specs, their usages and the operations each kind of key allows.

Symmetric keys (``Aliyun_AES_*``, ``Aliyun_SM4``) have KeyUsage
ENCRYPT/DECRYPT. Asymmetric keys have SIGN/VERIFY or ENCRYPT/DECRYPT;
without a KeyUsage they get SIGN/VERIFY, since every asymmetric spec can
sign (the Alibaba Cloud API reference's rule), and EC_P256 and EC_P256K
can only sign. HMAC keys (``HMAC_SHA_256``, ``HMAC_SHA_384``,
``HMAC_SHA_512``, ``HMAC_SM3``; the cloud's exact spec names are not
documented) have GENERATE/VERIFY_MAC. An operation on a key of the wrong
kind or usage raises UnsupportedOperation; a wrong Algorithm for the key
spec raises InvalidParameter.
"""

from __future__ import annotations

from agent.keystore.asymmetric import ENCRYPT_ALGORITHMS, SIGN_ALGORITHMS
from agent.keystore.base import ASYMMETRIC_SPECS, HMAC_KEY_BYTES, SYMMETRIC_KEY_BYTES
from agent.keystore.software_asymmetric import IMPORTABLE_SPECS
from agent.store.records import KeyRecord
from client.errors import InvalidParameterError, UnsupportedOperationError

ENCRYPT_DECRYPT = "ENCRYPT/DECRYPT"
SIGN_VERIFY = "SIGN/VERIFY"
GENERATE_VERIFY_MAC = "GENERATE/VERIFY_MAC"
ALL_SPECS = (*SYMMETRIC_KEY_BYTES, *ASYMMETRIC_SPECS, *HMAC_KEY_BYTES)


def usages(key_spec: str) -> tuple[str, ...]:
    """Return the KeyUsage values a spec allows; the first is the default."""
    if key_spec in SYMMETRIC_KEY_BYTES:
        return (ENCRYPT_DECRYPT,)
    if key_spec in HMAC_KEY_BYTES:
        return (GENERATE_VERIFY_MAC,)
    if key_spec in ENCRYPT_ALGORITHMS:
        return (SIGN_VERIFY, ENCRYPT_DECRYPT)
    return (SIGN_VERIFY,)


def key_usage(key_spec: str, requested: str | None) -> str:
    """Return the KeyUsage of a new key of ``key_spec``.

    Raises:
        UnsupportedOperationError: the spec is unknown.
        InvalidParameterError: the spec does not allow ``requested``.
    """
    if key_spec not in ALL_SPECS:
        raise UnsupportedOperationError(
            f"KeySpec {key_spec} is not supported by this agent; supported: "
            f"{', '.join(ALL_SPECS)}.")
    allowed = usages(key_spec)
    if requested is None:
        return allowed[0]
    if requested not in allowed:
        raise InvalidParameterError(
            f"KeyUsage {requested} is not valid for KeySpec {key_spec}; use "
            f"{' or '.join(allowed)}.")
    return requested


def require_usage(key: KeyRecord, usage: str, operation: str) -> None:
    """Raise UnsupportedOperationError unless ``key`` has ``usage``."""
    if key.key_usage != usage:
        raise UnsupportedOperationError(
            f"{operation} needs a key with KeyUsage {usage}; the key {key.key_id} "
            f"({key.key_spec}) has KeyUsage {key.key_usage}.")


def require_symmetric(key: KeyRecord, operation: str) -> None:
    """Raise UnsupportedOperationError unless ``key`` is a symmetric key."""
    if key.key_spec not in SYMMETRIC_KEY_BYTES:
        raise UnsupportedOperationError(
            f"{operation} needs a symmetric key; the key {key.key_id} has KeySpec "
            f"{key.key_spec}.")


def require_algorithm(key: KeyRecord, algorithm: str, sign: bool) -> None:
    """Raise InvalidParameterError unless the key spec supports ``algorithm``."""
    table = SIGN_ALGORITHMS if sign else ENCRYPT_ALGORITHMS
    allowed = table.get(key.key_spec, ())
    if algorithm not in allowed:
        raise InvalidParameterError(
            f"Algorithm {algorithm} is not valid for KeySpec {key.key_spec}; use "
            f"{' or '.join(allowed) or 'another key'}.")
