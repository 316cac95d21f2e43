"""Each dedicated-instance API, mapped onto the shared operation table.

The dedicated instance's messages differ from the OpenAPI ones, so each
API is a small adapter: decoded request fields in, one or two
dispatcher calls, response fields out. Empty fields are absent, as in
proto3, so a required one raises MissingParameter in the dispatcher.

- Encrypt, Decrypt, GenerateDataKey and their Advance forms run the
  symmetric operations. The agent chooses the IV, so Encrypt takes no
  Iv; the reply's Iv is the one inside the blob, and Decrypt accepts it
  back. Algorithm is AES_GCM or SM4_GCM (or empty), the modes of the
  agent's keys. ``Aad`` becomes the EncryptionContext: a JSON object of
  strings, as the Alibaba transfer client sends, is that context, and
  any other bytes are the context ``{"Aad": base64(bytes)}``.
- Sign, Verify and GetPublicKey act on the key's primary version, which
  a DescribeKey call finds first, because the dedicated protocol names
  no version. MessageType RAW hashes the message with SHA-256 here; an
  SM2DSA signature of a raw message needs the SM3 digest with Z_A,
  which the caller computes and sends as the digest.
- GetSecretValue returns binary values as Base64 text and maps as JSON
  text, since the message's fields are strings.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
from typing import Any, Awaitable, Callable

from agent.context import Peer
from agent.gateway.credentials import ClientKey
from agent.gateway.http import GatewayServices
from agent.keys.blob import HEADER_BYTES
from agent.keystore.base import GCM_IV_BYTES
from client.errors import (
    InvalidParameterError, MissingParameterError, UnsupportedOperationError,
)

SYMMETRIC_ALGORITHMS = ("AES_GCM", "SM4_GCM")
PADDING_MODES = ("NoPadding",)
DEFAULT_DATA_KEY_BYTES = 32
_SHA256_SIGNING = ("RSA_PSS_SHA_256", "RSA_PKCS1_SHA_256", "ECDSA_SHA_256")

Run = Callable[[GatewayServices, Peer, ClientKey, dict[str, Any]],
               Awaitable[dict[str, Any]]]


@dataclasses.dataclass(frozen=True)
class DkmsApi:
    """One dedicated-instance API and the adapter that serves it."""

    name: str
    run: Run


class _Call:
    """Dispatcher calls on behalf of one authenticated caller."""

    def __init__(self, services: GatewayServices, peer: Peer, key: ClientKey):
        self.services, self.peer, self.key = services, peer, key

    async def __call__(self, operation: str, **params: Any) -> dict[str, Any]:
        present = {name: value for name, value in params.items() if value}
        return await self.services.dispatch(
            operation, self.peer, self.key.principal, self.key.client_key_id,
            present)

    async def primary_version(self, key_ref: str) -> tuple[str, str]:
        """Return the key id and primary version id of ``key_ref``."""
        metadata = (await self("DescribeKey", KeyId=key_ref))["KeyMetadata"]
        return metadata["KeyId"], metadata.get("PrimaryKeyVersion", "")


def encryption_context(aad: bytes) -> dict[str, str] | None:
    """Return the EncryptionContext that ``Aad`` bytes stand for."""
    if not aad:
        return None
    try:
        context = json.loads(aad.decode("utf-8"))
    except ValueError:
        context = None
    if isinstance(context, dict) and context and all(
            isinstance(k, str) and isinstance(v, str) for k, v in context.items()):
        return context
    return {"Aad": base64.b64encode(aad).decode("ascii")}


def _check_mode(request: dict[str, Any]) -> None:
    if request.get("Algorithm") and request["Algorithm"] not in SYMMETRIC_ALGORITHMS:
        raise UnsupportedOperationError(
            f"Algorithm {request['Algorithm']!r} is not supported; the agent's "
            f"symmetric keys use {' or '.join(SYMMETRIC_ALGORITHMS)}.")
    if request.get("PaddingMode") and request["PaddingMode"] not in PADDING_MODES:
        raise UnsupportedOperationError(
            f"PaddingMode {request['PaddingMode']!r} is not supported; GCM needs "
            "no padding.")


def _blob_iv(blob: bytes) -> bytes:
    return blob[HEADER_BYTES:HEADER_BYTES + GCM_IV_BYTES]


def _check_key_id(requested: str, actual: str) -> None:
    # An alias is not resolved again; a key id or ARN must name the
    # blob's key.
    if not requested or requested.startswith("alias/"):
        return
    reference = requested.rsplit("key/", 1)[-1] if requested.startswith(
        "acs:") else requested
    if reference != actual:
        raise InvalidParameterError(
            f"The ciphertext was not made under the key {requested!r}.")


def _encrypt(advance: bool) -> Run:
    async def run(services: GatewayServices, peer: Peer, key: ClientKey,
                  request: dict[str, Any]) -> dict[str, Any]:
        _check_mode(request)
        if request["Iv"]:
            raise InvalidParameterError(
                "Iv must be empty: the agent chooses a fresh IV for each "
                "encryption and returns it.")
        result = await _Call(services, peer, key)(
            "Encrypt", KeyId=request["KeyId"], Plaintext=request["Plaintext"],
            EncryptionContext=encryption_context(request["Aad"]))
        blob = result["CiphertextBlob"]
        reply = {"KeyId": result["KeyId"], "CiphertextBlob": blob,
                 "Iv": _blob_iv(blob), "RequestId": result["RequestId"],
                 "Algorithm": request["Algorithm"] or SYMMETRIC_ALGORITHMS[0],
                 "PaddingMode": request["PaddingMode"]}
        if advance:
            reply["KeyVersionId"] = result["KeyVersionId"]
        return reply
    return run


def _decrypt(advance: bool) -> Run:
    async def run(services: GatewayServices, peer: Peer, key: ClientKey,
                  request: dict[str, Any]) -> dict[str, Any]:
        _check_mode(request)
        blob = request["CiphertextBlob"]
        if request["Iv"] and request["Iv"] != _blob_iv(blob):
            raise InvalidParameterError(
                "Iv does not match the IV inside the ciphertext blob.")
        result = await _Call(services, peer, key)(
            "Decrypt", CiphertextBlob=blob,
            EncryptionContext=encryption_context(request["Aad"]))
        _check_key_id(request["KeyId"], result["KeyId"])
        reply = {"KeyId": result["KeyId"], "Plaintext": result["Plaintext"],
                 "RequestId": result["RequestId"],
                 "Algorithm": request["Algorithm"] or SYMMETRIC_ALGORITHMS[0],
                 "PaddingMode": request["PaddingMode"]}
        if advance:
            reply["KeyVersionId"] = result["KeyVersionId"]
        return reply
    return run


def _generate_data_key(advance: bool) -> Run:
    async def run(services: GatewayServices, peer: Peer, key: ClientKey,
                  request: dict[str, Any]) -> dict[str, Any]:
        _check_mode(request)
        result = await _Call(services, peer, key)(
            "GenerateDataKey", KeyId=request["KeyId"],
            NumberOfBytes=request["NumberOfBytes"] or DEFAULT_DATA_KEY_BYTES,
            EncryptionContext=encryption_context(request["Aad"]))
        blob = result["CiphertextBlob"]
        reply = {"KeyId": result["KeyId"], "Iv": _blob_iv(blob),
                 "Plaintext": result["Plaintext"], "CiphertextBlob": blob,
                 "RequestId": result["RequestId"],
                 "Algorithm": request.get("Algorithm") or SYMMETRIC_ALGORITHMS[0]}
        if advance:
            reply["KeyVersionId"] = result["KeyVersionId"]
        return reply
    return run


def _digest(request: dict[str, Any]) -> bytes:
    message_type = request["MessageType"] or ("RAW" if request["Message"] else "DIGEST")
    if message_type not in ("RAW", "DIGEST"):
        raise InvalidParameterError("MessageType must be RAW or DIGEST.")
    if request["Digest"]:
        return request["Digest"]
    if not request["Message"]:
        raise MissingParameterError("Sign and Verify need a Digest or a Message.")
    if message_type == "DIGEST":
        return request["Message"]
    if request["Algorithm"] not in _SHA256_SIGNING:
        raise UnsupportedOperationError(
            f"A RAW message is hashed here only for {', '.join(_SHA256_SIGNING)}; "
            f"send the digest for {request['Algorithm'] or 'this algorithm'}.")
    return hashlib.sha256(request["Message"]).digest()


async def _sign(services: GatewayServices, peer: Peer, key: ClientKey,
                request: dict[str, Any]) -> dict[str, Any]:
    digest = _digest(request)
    call = _Call(services, peer, key)
    key_id, version_id = await call.primary_version(request["KeyId"])
    result = await call("AsymmetricSign", KeyId=key_id, KeyVersionId=version_id,
                        Algorithm=request["Algorithm"], Digest=digest)
    return {"KeyId": key_id, "Signature": result["Value"],
            "RequestId": result["RequestId"], "Algorithm": request["Algorithm"],
            "MessageType": request["MessageType"]}


async def _verify(services: GatewayServices, peer: Peer, key: ClientKey,
                  request: dict[str, Any]) -> dict[str, Any]:
    digest = _digest(request)
    call = _Call(services, peer, key)
    key_id, version_id = await call.primary_version(request["KeyId"])
    result = await call("AsymmetricVerify", KeyId=key_id, KeyVersionId=version_id,
                        Algorithm=request["Algorithm"], Digest=digest,
                        Value=request["Signature"])
    return {"KeyId": key_id, "Value": bool(result["Value"]),
            "RequestId": result["RequestId"], "Algorithm": request["Algorithm"],
            "MessageType": request["MessageType"]}


async def _get_public_key(services: GatewayServices, peer: Peer, key: ClientKey,
                          request: dict[str, Any]) -> dict[str, Any]:
    call = _Call(services, peer, key)
    key_id, version_id = await call.primary_version(request["KeyId"])
    result = await call("GetPublicKey", KeyId=key_id, KeyVersionId=version_id)
    return {"KeyId": key_id, "PublicKey": result["PublicKey"],
            "RequestId": result["RequestId"]}


async def _generate_random(services: GatewayServices, peer: Peer, key: ClientKey,
                           request: dict[str, Any]) -> dict[str, Any]:
    result = await _Call(services, peer, key)("GenerateRandom",
                                              Length=request["Length"])
    return {"Random": result["Random"], "RequestId": result["RequestId"]}


async def _get_secret_value(services: GatewayServices, peer: Peer, key: ClientKey,
                            request: dict[str, Any]) -> dict[str, Any]:
    result = await _Call(services, peer, key)(
        "GetSecretValue", SecretName=request["SecretName"],
        VersionStage=request["VersionStage"], VersionId=request["VersionId"],
        FetchExtendedConfig=request["FetchExtendedConfig"])
    data = result["SecretData"]
    if isinstance(data, bytes):
        data = base64.b64encode(data).decode("ascii")
    extended = result.get("ExtendedConfig") or ""
    if not isinstance(extended, str):
        extended = json.dumps(extended, ensure_ascii=False)
    reply = {"SecretData": data, "ExtendedConfig": extended,
             "VersionStages": list(result.get("VersionStages", {}).get(
                 "VersionStage", []))}
    for name in ("SecretName", "SecretType", "SecretDataType", "VersionId",
                 "CreateTime", "RequestId", "LastRotationDate", "NextRotationDate",
                 "AutomaticRotation", "RotationInterval"):
        reply[name] = str(result.get(name) or "")
    return reply


APIS = {api.name: api for api in (
    DkmsApi("Encrypt", _encrypt(False)),
    DkmsApi("AdvanceEncrypt", _encrypt(True)),
    DkmsApi("Decrypt", _decrypt(False)),
    DkmsApi("AdvanceDecrypt", _decrypt(True)),
    DkmsApi("GenerateDataKey", _generate_data_key(False)),
    DkmsApi("AdvanceGenerateDataKey", _generate_data_key(True)),
    DkmsApi("Sign", _sign),
    DkmsApi("Verify", _verify),
    DkmsApi("GetPublicKey", _get_public_key),
    DkmsApi("GenerateRandom", _generate_random),
    DkmsApi("GetSecretValue", _get_secret_value),
)}
