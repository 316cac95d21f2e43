"""Data keys exported to a caller's public key: GenerateAndExportDataKey
and ExportDataKey.

Both return ``ExportedDataKey``: the raw data key (the bytes that
GenerateDataKey returns as Plaintext) encrypted to ``PublicKeyBlob``, a
SubjectPublicKeyInfo public key in DER or PEM. WrappingKeySpec RSA_2048
takes RSAES_OAEP_SHA_256 (data keys of up to 190 bytes) or
RSAES_OAEP_SHA_1 (214 bytes); EC_SM2 takes SM2PKE. A public key of
another type or size, or an algorithm of the other spec, is
InvalidParameter. GenerateAndExportDataKey also returns the data key's
CiphertextBlob under the named key; ExportDataKey decrypts such a blob
(a data key blob only, with its EncryptionContext) and exports its key.
"""

from __future__ import annotations

from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from agent.context import RequestContext
from agent.keys.blob import FORMAT_DATA_KEY
from agent.keys.ops import CONTEXT, KEY_ID
from agent.keys.service import CryptoResult, KeyService
from agent.keystore import asymmetric, sm2
from agent.rpc.dispatch import CRYPTO, Operation
from agent.rpc.params import BYTES, INT, Param, string_map
from client.errors import InvalidParameterError

WRAPPING_KEY_SPECS = {
    "RSA_2048": (asymmetric.RSAES_OAEP_SHA_256, asymmetric.RSAES_OAEP_SHA_1),
    "EC_SM2": (asymmetric.SM2PKE,),
}
_PEM_PREFIX = b"-----BEGIN"


def _rsa_2048(blob: bytes) -> rsa.RSAPublicKey:
    try:
        if blob.lstrip().startswith(_PEM_PREFIX):
            key = serialization.load_pem_public_key(blob)
        else:
            key = serialization.load_der_public_key(blob)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        # cryptography raises UnsupportedAlgorithm for an SM2 key.
        key = None
    if not isinstance(key, rsa.RSAPublicKey) or key.key_size != 2048:
        raise InvalidParameterError(
            "PublicKeyBlob must be an RSA 2048-bit public key "
            "(SubjectPublicKeyInfo, DER or PEM) for WrappingKeySpec RSA_2048.")
    return key


def _sm2(blob: bytes):
    try:
        return sm2.load_public_key(blob, pem=blob.lstrip().startswith(_PEM_PREFIX))
    except ValueError:
        raise InvalidParameterError(
            "PublicKeyBlob must be an SM2 public key (SubjectPublicKeyInfo, DER "
            "or PEM) for WrappingKeySpec EC_SM2.") from None


def export_key(data_key: bytes, public_key_blob: bytes, algorithm: str,
               wrapping_spec: str) -> bytes:
    """Encrypt a data key to a caller's public key.

    Raises:
        InvalidParameterError: the algorithm does not fit the spec, the
            public key does not fit the spec, or the data key is longer
            than the algorithm encrypts.
    """
    _check_wrapping(algorithm, wrapping_spec)
    if wrapping_spec == "EC_SM2":
        return sm2.encrypt(_sm2(public_key_blob), data_key)
    key = _rsa_2048(public_key_blob)
    _check_length(len(data_key), wrapping_spec, algorithm)
    spki = key.public_bytes(serialization.Encoding.DER,
                            serialization.PublicFormat.SubjectPublicKeyInfo)
    return asymmetric.encrypt(wrapping_spec, spki, algorithm, data_key)


def _check_wrapping(algorithm: str, wrapping_spec: str) -> None:
    if algorithm not in WRAPPING_KEY_SPECS[wrapping_spec]:
        raise InvalidParameterError(
            f"WrappingAlgorithm {algorithm} is not valid for WrappingKeySpec "
            f"{wrapping_spec}; use {' or '.join(WRAPPING_KEY_SPECS[wrapping_spec])}.")


def _check_length(length: int, wrapping_spec: str, algorithm: str) -> None:
    limit = asymmetric.max_plaintext(wrapping_spec, algorithm)
    if length > limit:
        raise InvalidParameterError(
            f"A data key of {length} bytes is too long for {algorithm} with "
            f"{wrapping_spec}, which encrypts at most {limit} bytes.")


async def generate_and_export(service: KeyService, values: dict[str, Any],
                              context: dict | None) -> tuple[CryptoResult, bytes]:
    """GenerateAndExportDataKey: a new data key, sealed and exported."""
    algorithm = values["WrappingAlgorithm"]
    wrapping_spec = values["WrappingKeySpec"]
    _check_wrapping(algorithm, wrapping_spec)
    number = values.get("NumberOfBytes")
    if number is not None and wrapping_spec == "RSA_2048":
        _check_length(number, wrapping_spec, algorithm)
    if wrapping_spec == "EC_SM2":
        _sm2(values["PublicKeyBlob"])
    else:
        _rsa_2048(values["PublicKeyBlob"])
    result = await service.generate_data_key(values["KeyId"], number,
                                             values.get("KeySpec"), context)
    exported = export_key(result.plaintext, values["PublicKeyBlob"], algorithm,
                          wrapping_spec)
    return result, exported


async def export_data_key(service: KeyService, values: dict[str, Any],
                          context: dict | None) -> tuple[CryptoResult, bytes]:
    """ExportDataKey: decrypt a data key blob and export its key.

    Raises:
        InvalidCiphertextError: the blob does not decrypt.
        InvalidParameterError: the blob contains no data key, or as
            ``export_key``.
    """
    _check_wrapping(values["WrappingAlgorithm"], values["WrappingKeySpec"])
    result = await service.decrypt(values["CiphertextBlob"], context)
    if result.blob_format != FORMAT_DATA_KEY:
        raise InvalidParameterError(
            "CiphertextBlob contains Encrypt output, not a data key; ExportDataKey "
            "takes the CiphertextBlob of GenerateDataKey.")
    exported = export_key(result.plaintext, values["PublicKeyBlob"],
                          values["WrappingAlgorithm"], values["WrappingKeySpec"])
    return result, exported


# --- operations --------------------------------------------------------------


def _context(values: dict[str, Any]) -> dict | None:
    context = values.get("EncryptionContext")
    return None if context is None else string_map("EncryptionContext", context)


def _reply(ctx: RequestContext, result: CryptoResult, exported: bytes) -> dict:
    ctx.key_id = result.key.key_id
    ctx.key_version_id = result.version_id
    return {"KeyId": result.key.key_id, "KeyVersionId": result.version_id,
            "ExportedDataKey": exported}


async def generate_and_export_op(services: Any, ctx: RequestContext,
                                 values: dict) -> dict:
    result, exported = await generate_and_export(services.keys, values,
                                                 _context(values))
    return {**_reply(ctx, result, exported), "CiphertextBlob": result.blob}


async def export_op(services: Any, ctx: RequestContext, values: dict) -> dict:
    result, exported = await export_data_key(services.keys, values, _context(values))
    return _reply(ctx, result, exported)


WRAPPING = (
    Param("PublicKeyBlob", BYTES, required=True, low=1, high=8192),
    Param("WrappingAlgorithm", required=True, choices=(
        asymmetric.RSAES_OAEP_SHA_256, asymmetric.RSAES_OAEP_SHA_1,
        asymmetric.SM2PKE)),
    Param("WrappingKeySpec", required=True, choices=tuple(WRAPPING_KEY_SPECS)),
)

OPERATIONS = [
    Operation("GenerateAndExportDataKey", generate_and_export_op,
              (KEY_ID, Param("KeySpec", choices=("AES_256", "AES_128")),
               Param("NumberOfBytes", INT, low=1, high=1024), CONTEXT, *WRAPPING),
              permission="kms:GenerateAndExportDataKey", group=CRYPTO),
    Operation("ExportDataKey", export_op,
              (Param("CiphertextBlob", BYTES, required=True, high=65536), CONTEXT,
               *WRAPPING),
              permission="kms:ExportDataKey", group=CRYPTO),
]
