"""Bring your own key: GetParametersForImport, ImportKeyMaterial,
DeleteKeyMaterial, and the expiry of imported material.

A key created with Origin EXTERNAL (AES or SM4 specs) waits in
PendingImport without a version. GetParametersForImport makes a fresh
wrapping key pair in the key's keystore and returns its public key (DER)
and an ImportToken valid for 24 hours, bound to that key and to the
wrapping algorithm. The pair is RSA_2048, in the HSM where the token
allows it so the unwrap happens there, with RSAES_PKCS1_V1_5,
RSAES_OAEP_SHA_1 or RSAES_OAEP_SHA_256 (MGF1 with the same hash); or
EC_SM2 with SM2PKE, which no PKCS#11 token here offers, so only keys
with ProtectionLevel SOFTWARE take it. ImportKeyMaterial consumes the token once;
an unknown, used or foreign token is InvalidImportToken, an old one
ExpiredImportToken. Material that does not unwrap or has the wrong
length (32 bytes for AES-256, 16 for SM4) is InvalidKeyMaterial, and
nothing changes, except that a token of RSAES_PKCS1_V1_5 is spent as
its one unwrap starts, so only one call gets an unwrap result, even
among concurrent calls (no padding oracle). The key becomes Enabled (a Disabled key stays
Disabled).

The first import stores a key check value: the encryption of a block
derived from the key id under the material. Later imports must match
it, so only the same material can return, under the same version id, and
ciphertext made before a DeleteKeyMaterial decrypts again.

KeyMaterialExpireUnix (seconds, 0 = never) sets MaterialExpireTime. The
material is unusable from that moment (Rejected.PendingImport), and the
expiry job deletes it as DeleteKeyMaterial does: the key goes back to
PendingImport (a key pending deletion keeps that state) until the same
material is imported again.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import hmac
import logging
import secrets
import uuid
from typing import Any

import trio

from agent.context import RequestContext
from agent.keys import states
from agent.keys.ops import KEY_ID
from agent.keys.service import ORIGIN_EXTERNAL, KeyService
from agent.keystore.base import HSM, SOFTWARE, InvalidImportedMaterial, KeyMaterial
from agent.keystore.asymmetric import RSAES_PKCS1_V1_5, SM2PKE
from agent.keystore.software_asymmetric import WRAPPING_ALGORITHMS
from agent.logs import log
from agent.rpc.dispatch import WRITE, Operation
from agent.rpc.params import BYTES, INT, Param
from agent.store.base import ConflictError
from agent.store.imports import ImportTokenRecord, ImportTokenSpentError
from agent.store.records import (
    ENABLED, PENDING_DELETION, PENDING_IMPORT, KeyRecord, KeyVersionRecord,
    format_time,
)
from client.errors import (
    ExpiredImportTokenError, InternalFailureError, InvalidImportTokenError,
    InvalidKeyMaterialError, InvalidParameterError, UnsupportedOriginError,
    UnsupportedProtectionLevelError,
)

TOKEN_LIFETIME = datetime.timedelta(hours=24)
WRAPPING_KEY_SPEC = "RSA_2048"
SM2_WRAPPING_KEY_SPEC = "EC_SM2"
# The wrapping algorithms of each wrapping key spec.
WRAPPING_ALGORITHMS_BY_SPEC = {WRAPPING_KEY_SPEC: WRAPPING_ALGORITHMS,
                               SM2_WRAPPING_KEY_SPEC: (SM2PKE,)}
# Expired tokens stay this long, so a late import still gets
# ExpiredImportToken, then the expiry job deletes them.
EXPIRED_TOKEN_RETENTION = datetime.timedelta(days=7)
_CHECK_BLOCK_LABEL = b"kms-agent key check value\x00"
_ATTEMPTS = 5


def token_hash(token: str) -> str:
    """Return the hex SHA-256 of an import token, as the store keys it."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def check_block(key_id: str) -> bytes:
    """Return the 16-byte block whose encryption is a key's check value."""
    return hashlib.sha256(_CHECK_BLOCK_LABEL + key_id.encode("utf-8")).digest()[:16]


def _wrapping_version_id(record_hash: str) -> str:
    # The keystore seals the wrapping key with this id as AAD.
    return f"import-token:{record_hash}"


async def _external_key(service: KeyService, key_ref: str) -> KeyRecord:
    key = await service.resolve(key_ref)
    if key.origin != ORIGIN_EXTERNAL:
        raise UnsupportedOriginError(
            f"The key {key.key_id} has Origin {key.origin}; key material can be "
            f"imported only into keys with Origin {ORIGIN_EXTERNAL}.")
    return key


async def get_parameters(service: KeyService, key_ref: str, algorithm: str,
                         wrapping_spec: str = WRAPPING_KEY_SPEC
                         ) -> tuple[KeyRecord, str, bytes, str]:
    """GetParametersForImport: a wrapping public key and an import token.

    Returns:
        The key, the token, the SubjectPublicKeyInfo DER of the wrapping
        key and the token's expiry time.
    Raises:
        UnsupportedOriginError: the key's Origin is not EXTERNAL.
        InvalidParameterError: the algorithm does not go with the spec.
        UnsupportedProtectionLevelError: an EC_SM2 wrapping key for an
            HSM key, whose material must unwrap in the token.
    """
    if algorithm not in WRAPPING_ALGORITHMS_BY_SPEC[wrapping_spec]:
        raise InvalidParameterError(
            f"WrappingAlgorithm {algorithm} does not go with WrappingKeySpec "
            f"{wrapping_spec}; use one of "
            f"{', '.join(WRAPPING_ALGORITHMS_BY_SPEC[wrapping_spec])}.")
    key = await _external_key(service, key_ref)
    keystore = service.keystore_of(key)
    level = HSM if keystore.supports_spec(wrapping_spec, HSM) else SOFTWARE
    if key.protection_level == HSM and level != HSM:
        raise UnsupportedProtectionLevelError(
            f"The key {key.key_id} has ProtectionLevel HSM, and its token cannot "
            f"unwrap with {wrapping_spec}; use WrappingKeySpec {WRAPPING_KEY_SPEC}.")
    token = secrets.token_urlsafe(32)
    hashed = token_hash(token)
    wrapping = await keystore.generate_key_pair(_wrapping_version_id(hashed),
                                                wrapping_spec, level)
    now = service.clock.now()
    expire_time = format_time(now + TOKEN_LIFETIME)
    await service.store.insert_import_token(ImportTokenRecord(
        token_hash=hashed, key_id=key.key_id, wrapping_algorithm=algorithm,
        wrapping_key_spec=wrapping_spec, protection_level=level,
        wrap_format=wrapping.wrap_format, wrapped=wrapping.wrapped,
        public_key=wrapping.public_key, creation_date=format_time(now),
        expire_time=expire_time))
    return key, token, wrapping.public_key, expire_time


def _token_used(key: KeyRecord) -> InvalidImportTokenError:
    return InvalidImportTokenError(
        f"The import token is not valid for the key {key.key_id}: it is "
        "unknown, used already or issued for another key. Call "
        "GetParametersForImport for a new one.")


async def _usable_token(service: KeyService, key: KeyRecord,
                        token: str) -> ImportTokenRecord:
    record = await service.store.get_import_token(token_hash(token))
    if record is None or record.key_id != key.key_id or record.used:
        raise _token_used(key)
    if record.expire_time <= service.now():
        raise ExpiredImportTokenError(
            f"The import token expired at {record.expire_time}. Call "
            "GetParametersForImport for a new one.")
    return record


def _expire_time(service: KeyService, expire_unix: int) -> str | None:
    if expire_unix == 0:
        return None
    moment = datetime.datetime.fromtimestamp(expire_unix, datetime.timezone.utc)
    if moment <= service.clock.now():
        raise InvalidParameterError(
            f"KeyMaterialExpireUnix {expire_unix} is not in the future; use 0 "
            "for material that never expires.")
    return format_time(moment)


async def import_key_material(service: KeyService, key_ref: str, encrypted: bytes,
                              token: str, expire_unix: int) -> KeyRecord:
    """ImportKeyMaterial: unwrap, check and store the key's material.

    Raises:
        UnsupportedOriginError: the key's Origin is not EXTERNAL.
        StateModifiedFailedError: the key is pending deletion.
        InvalidImportTokenError, ExpiredImportTokenError: see the module.
        InvalidKeyMaterialError: the material does not unwrap, has the
            wrong length, or differs from the material imported before.
        InvalidParameterError: the expiry time is in the past.
    """
    key = await _external_key(service, key_ref)
    states.require_state(key, states.SCHEDULE)
    record = await _usable_token(service, key, token)
    expire_time = _expire_time(service, expire_unix)
    previous = await service.store.get_imported_material(key.key_id)
    version_id = previous.version_id if previous else str(uuid.uuid4())
    wrapping = KeyMaterial(_wrapping_version_id(record.token_hash),
                           record.wrapping_key_spec, record.protection_level,
                           record.wrap_format, record.wrapped, record.public_key)
    # A PKCS#1 v1.5 token is spent before its one unwrap, so concurrent
    # calls cannot each get a result and use the agent as a padding oracle.
    token_spent = record.wrapping_algorithm == RSAES_PKCS1_V1_5
    if token_spent and not await service.store.spend_import_token(record.token_hash):
        raise _token_used(key)
    try:
        material, fingerprint = await service.keystore_of(key).import_material(
            version_id, key.key_spec, key.protection_level, wrapping,
            record.wrapping_algorithm, encrypted, check_block(key.key_id))
    except InvalidImportedMaterial:
        raise InvalidKeyMaterialError(
            f"EncryptedKeyMaterial does not unwrap with {record.wrapping_algorithm} "
            f"to a {key.key_spec} key.") from None
    if previous is not None and not hmac.compare_digest(previous.fingerprint,
                                                        fingerprint):
        raise InvalidKeyMaterialError(
            f"The key material differs from the material imported into the key "
            f"{key.key_id} before; only the same material can be imported again.")
    version = KeyVersionRecord(
        version_id=version_id, key_id=key.key_id, creation_date=service.now(),
        protection_level=material.protection_level,
        wrap_format=material.wrap_format, wrapped=material.wrapped)
    return await _store_import(service, key, version, record.token_hash,
                               fingerprint, expire_time, token_spent)


async def _store_import(service: KeyService, key: KeyRecord,
                        version: KeyVersionRecord, hashed: str, fingerprint: bytes,
                        expire_time: str | None, token_spent: bool) -> KeyRecord:
    for _ in range(_ATTEMPTS):
        state = ENABLED if key.state == PENDING_IMPORT else key.state
        updated = dataclasses.replace(
            key, state=state, primary_version_id=version.version_id,
            material_expire_time=expire_time)
        try:
            return await service.store.complete_import(updated, version, hashed,
                                                       fingerprint, token_spent)
        except ImportTokenSpentError:
            raise InvalidImportTokenError(
                "The import token was used by a concurrent import.") from None
        except ConflictError:
            key = await _external_key(service, key.key_id)
            states.require_state(key, states.SCHEDULE)
    raise InternalFailureError()


async def delete_key_material(service: KeyService, key_ref: str,
                              expired_only: bool = False) -> KeyRecord | None:
    """DeleteKeyMaterial: erase the material; the key waits for an import.

    The key goes to PendingImport, or keeps PendingDeletion. With
    ``expired_only`` (the expiry job) a key whose material has not
    expired is left alone and None is returned.

    Raises:
        UnsupportedOriginError: the key's Origin is not EXTERNAL.
    """
    for _ in range(_ATTEMPTS):
        key = await _external_key(service, key_ref)
        expire_time = key.material_expire_time
        if expired_only and (expire_time is None or expire_time > service.now()):
            return None
        state = key.state if key.state == PENDING_DELETION else PENDING_IMPORT
        updated = dataclasses.replace(key, state=state, primary_version_id=None,
                                      material_expire_time=None)
        try:
            return await service.store.delete_key_material(updated)
        except ConflictError:
            continue
    raise InternalFailureError()


async def expire_material(service: KeyService) -> list[str]:
    """Delete the imported material that has expired; return the key ids.

    Safe on several agents at once: each deletion is a compare-and-swap,
    and a loser rereads the key and finds nothing left to expire. Also
    deletes import tokens that expired more than 7 days ago.
    """
    expired = []
    for key_id in await service.store.keys_with_expired_material(service.now()):
        if await delete_key_material(service, key_id, expired_only=True):
            expired.append(key_id)
    cutoff = service.clock.now() - EXPIRED_TOKEN_RETENTION
    await service.store.delete_import_tokens_before(format_time(cutoff))
    return expired


async def expiry_loop(service: KeyService, interval: float) -> None:
    """Run ``expire_material`` every ``interval`` seconds (a background job)."""
    while True:
        try:
            for key_id in await expire_material(service):
                log(logging.INFO, "imported key material expired", key_id=key_id)
        except Exception as exc:  # a failed run is retried on the next tick
            log(logging.ERROR, "key material expiry failed", error=repr(exc))
        await trio.sleep(interval)


# --- operations --------------------------------------------------------------


async def get_parameters_op(services: Any, ctx: RequestContext, values: dict) -> dict:
    key, token, public_key, expire_time = await get_parameters(
        services.keys, values["KeyId"], values["WrappingAlgorithm"],
        values["WrappingKeySpec"])
    ctx.key_id = key.key_id
    return {"KeyId": key.key_id, "ImportToken": token, "PublicKey": public_key,
            "TokenExpireTime": expire_time}


async def import_op(services: Any, ctx: RequestContext, values: dict) -> dict:
    key = await import_key_material(
        services.keys, values["KeyId"], values["EncryptedKeyMaterial"],
        values["ImportToken"], values.get("KeyMaterialExpireUnix", 0))
    ctx.key_id = key.key_id
    ctx.key_version_id = key.primary_version_id
    return {}


async def delete_op(services: Any, ctx: RequestContext, values: dict) -> dict:
    key = await delete_key_material(services.keys, values["KeyId"])
    ctx.key_id = key.key_id
    return {}


def _op(name: str, handler, *params: Param) -> Operation:
    return Operation(name, handler, params, permission=f"kms:{name}", group=WRITE)


OPERATIONS = [
    _op("GetParametersForImport", get_parameters_op, KEY_ID,
        Param("WrappingAlgorithm", required=True,
              choices=(*WRAPPING_ALGORITHMS, SM2PKE)),
        Param("WrappingKeySpec", required=True,
              choices=tuple(WRAPPING_ALGORITHMS_BY_SPEC))),
    _op("ImportKeyMaterial", import_op, KEY_ID,
        Param("EncryptedKeyMaterial", BYTES, required=True, low=1, high=1024),
        Param("ImportToken", required=True, low=1, high=256),
        Param("KeyMaterialExpireUnix", INT, low=0, high=2**40)),
    _op("DeleteKeyMaterial", delete_op, KEY_ID),
]
