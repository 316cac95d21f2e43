"""HMAC keys: GenerateMac and VerifyMac.

An HMAC key (KeyUsage GENERATE/VERIFY_MAC) has one version, which never
rotates. Its spec fixes the algorithm, and ``Algorithm`` must name it:
HMAC_SHA_256, HMAC_SHA_384 and HMAC_SHA_512 (computed in the HSM where
the token offers CKM_SHA*_HMAC, else in software) and HMAC_SM3 (always
software). The Alibaba Cloud reference lists these algorithm names but
not the key specs, so the specs carry the same names. The key is as
long as the hash output. ``Message`` is 1 byte to 4 KiB; VerifyMac
returns ``Value`` true or false and compares in constant time.
"""

from __future__ import annotations

import hmac
from typing import Any

from agent.context import RequestContext
from agent.keys import specs, states
from agent.keys.ops import KEY_ID
from agent.keys.service import KeyService
from agent.keystore.base import HMAC_KEY_BYTES
from agent.rpc.dispatch import CRYPTO, Operation
from agent.rpc.params import BYTES, PLAINTEXT, Param
from agent.store.records import KeyRecord
from client.errors import (
    InternalFailureError, InvalidParameterError, UnsupportedOperationError,
)

MAC_ALGORITHMS = tuple(HMAC_KEY_BYTES)
MAX_MESSAGE_BYTES = 4096
MAX_MAC_BYTES = 64


async def generate_mac(service: KeyService, key_ref: str, algorithm: str,
                       message: bytes) -> tuple[KeyRecord, str, bytes]:
    """GenerateMac: the HMAC of ``message`` under an HMAC key.

    Returns:
        The key, the version used and the MAC.
    Raises:
        UnsupportedOperationError: the key is not an HMAC key.
        InvalidParameterError: ``algorithm`` is not the key's.
        KeyDisabledError and the other 409 errors: the key is not Enabled.
    """
    key = await service.resolve(key_ref)
    if key.key_spec not in HMAC_KEY_BYTES:
        raise UnsupportedOperationError(
            f"The key {key.key_id} has KeySpec {key.key_spec}; MAC operations "
            f"need an HMAC key ({', '.join(MAC_ALGORITHMS)}).")
    states.require_state(key, states.USE)
    specs.require_usage(key, specs.GENERATE_VERIFY_MAC, "GenerateMac")
    if algorithm != key.key_spec:
        raise InvalidParameterError(
            f"Algorithm {algorithm} is not valid for the key {key.key_id}; use "
            f"{key.key_spec}.")
    if key.primary_version_id is None:
        raise InternalFailureError()
    material = await service.material(key, key.primary_version_id)
    mac = await service.keystore_of(key).mac(material, message)
    return key, material.version_id, mac


async def verify_mac(service: KeyService, key_ref: str, algorithm: str,
                     message: bytes, mac: bytes) -> tuple[KeyRecord, str, bool]:
    """VerifyMac: whether ``mac`` is the HMAC of ``message``."""
    key, version_id, expected = await generate_mac(service, key_ref, algorithm,
                                                   message)
    return key, version_id, hmac.compare_digest(expected, mac)


# --- operations --------------------------------------------------------------


def _note(ctx: RequestContext, key: KeyRecord, version_id: str) -> None:
    ctx.key_id = key.key_id
    ctx.key_version_id = version_id


async def generate_mac_op(services: Any, ctx: RequestContext, values: dict) -> dict:
    key, version_id, mac = await generate_mac(
        services.keys, values["KeyId"], values["Algorithm"], values["Message"])
    _note(ctx, key, version_id)
    return {"KeyId": key.key_id, "KeyVersionId": version_id, "Mac": mac}


async def verify_mac_op(services: Any, ctx: RequestContext, values: dict) -> dict:
    key, version_id, valid = await verify_mac(
        services.keys, values["KeyId"], values["Algorithm"], values["Message"],
        values["Mac"])
    _note(ctx, key, version_id)
    return {"KeyId": key.key_id, "KeyVersionId": version_id, "Value": valid}


MESSAGE = Param("Message", PLAINTEXT, required=True, low=1, high=MAX_MESSAGE_BYTES)
ALGORITHM = Param("Algorithm", required=True, choices=MAC_ALGORITHMS)

OPERATIONS = [
    Operation("GenerateMac", generate_mac_op, (KEY_ID, ALGORITHM, MESSAGE),
              permission="kms:GenerateMac", group=CRYPTO),
    Operation("VerifyMac", verify_mac_op,
              (KEY_ID, ALGORITHM, MESSAGE,
               Param("Mac", BYTES, required=True, low=1, high=MAX_MAC_BYTES)),
              permission="kms:VerifyMac", group=CRYPTO),
]
