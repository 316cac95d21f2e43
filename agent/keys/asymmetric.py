"""Asymmetric key operations: GetPublicKey, AsymmetricSign and Verify,
AsymmetricEncrypt and Decrypt.

Every call names the key and the version (KeyVersionId is required, and
a version of another key is Forbidden.KeyVersionNotFound), and follows
the Encrypt state rules. The key's usage decides what it may do: a
SIGN/VERIFY key neither encrypts nor decrypts and an ENCRYPT/DECRYPT key
neither signs nor verifies (UnsupportedOperation). An Algorithm the spec
lacks is InvalidParameter (algorithms per spec: ``keystore.asymmetric``).

``Digest`` is the 32-byte hash the caller computed, never hashed again:
SHA-256 of the message for RSA and ECDSA, and for SM2DSA the SM3 hash
e = SM3(Z_A || M), with Z_A = SM3(ENTL || ID || a || b || xG || yG || xA
|| yA) over the key from GetPublicKey and the default ID
``1234567812345678`` (``keystore.sm2.message_digest``). Signatures are
PKCS#1 for RSA and DER SEQUENCE {r, s} for ECDSA and SM2DSA. Verify
returns ``Value`` true or false; a signature in any other encoding is
false. Public-key operations run in software, private-key operations in
the keystore.
"""

from __future__ import annotations

from typing import Any

from agent.context import RequestContext
from agent.keys import specs, states
from agent.keys.ops import KEY_ID
from agent.keys.service import CryptoResult, KeyService
from agent.keystore import asymmetric, sm2
from agent.keystore.base import ASYMMETRIC_SPECS, DecryptionFailed, KeyMaterial
from agent.rpc.dispatch import CRYPTO, READ, Operation
from agent.rpc.params import BYTES, PLAINTEXT, Param
from agent.store.records import KeyRecord
from client.errors import (
    InvalidCiphertextError, InvalidParameterError, KeyVersionNotFoundError,
    UnsupportedOperationError,
)

SIGN_ALGORITHMS = ("RSA_PSS_SHA_256", "RSA_PKCS1_SHA_256", "ECDSA_SHA_256", "SM2DSA")
ENCRYPT_ALGORITHMS = ("RSAES_OAEP_SHA_256", "RSAES_OAEP_SHA_1", "SM2PKE")
MAX_SIGNATURE_BYTES = 1024


async def key_version(service: KeyService, key_ref: str, version_id: str,
                      usage: str | None, operation: str
                      ) -> tuple[KeyRecord, KeyMaterial]:
    """Return an asymmetric key and the material of one of its versions.

    Raises:
        KeyNotFoundError: no key matches ``key_ref``.
        UnsupportedOperationError: the key is not asymmetric or lacks
            ``usage`` (None accepts either usage).
        KeyVersionNotFoundError: the version is not one of the key's.
        KeyDisabledError and the other 409 errors: the key is not Enabled.
    """
    key = await service.resolve(key_ref)
    if key.key_spec not in ASYMMETRIC_SPECS:
        raise UnsupportedOperationError(
            f"{operation} needs an asymmetric key; the key {key.key_id} has "
            f"KeySpec {key.key_spec}.")
    version = await service.store.get_version(version_id)
    if version is None or version.key_id != key.key_id:
        raise KeyVersionNotFoundError(
            f"The key {key.key_id} has no version {version_id!r}.")
    states.require_state(key, states.USE)
    if usage is not None:
        specs.require_usage(key, usage, operation)
    return key, await service.material(key, version_id)


def _check_digest(key: KeyRecord, algorithm: str, digest: bytes) -> None:
    specs.require_algorithm(key, algorithm, sign=True)
    if len(digest) != asymmetric.DIGEST_BYTES:
        raise InvalidParameterError(
            f"Digest is {len(digest)} bytes; {algorithm} takes a "
            f"{asymmetric.DIGEST_BYTES}-byte digest (SHA-256, or SM3 for SM2DSA).")


async def get_public_key(service: KeyService, key_ref: str,
                         version_id: str) -> tuple[KeyRecord, str]:
    """GetPublicKey: the version's public key as SubjectPublicKeyInfo PEM."""
    key, material = await key_version(service, key_ref, version_id, None,
                                      "GetPublicKey")
    return key, asymmetric.public_key_pem(material.public_key)


async def sign(service: KeyService, key_ref: str, version_id: str, algorithm: str,
               digest: bytes) -> tuple[KeyRecord, bytes]:
    """AsymmetricSign: sign a precomputed digest in the keystore.

    Raises:
        InvalidParameterError: a wrong algorithm or digest length.
        And the errors of ``key_version``.
    """
    key, material = await key_version(service, key_ref, version_id,
                                      specs.SIGN_VERIFY, "AsymmetricSign")
    _check_digest(key, algorithm, digest)
    signature = await service.keystore_of(key).sign(material, algorithm, digest)
    return key, signature


async def verify(service: KeyService, key_ref: str, version_id: str, algorithm: str,
                 digest: bytes, signature: bytes) -> tuple[KeyRecord, bool]:
    """AsymmetricVerify: check a signature with the version's public key."""
    key, material = await key_version(service, key_ref, version_id,
                                      specs.SIGN_VERIFY, "AsymmetricVerify")
    _check_digest(key, algorithm, digest)
    valid = asymmetric.verify(key.key_spec, material.public_key, algorithm, digest,
                              signature)
    return key, valid


async def encrypt(service: KeyService, key_ref: str, version_id: str,
                  algorithm: str, plaintext: bytes) -> tuple[KeyRecord, bytes]:
    """AsymmetricEncrypt: encrypt with the version's public key.

    Raises:
        InvalidParameterError: a wrong algorithm, or a plaintext over the
            algorithm's limit (190 bytes for RSA_2048 with OAEP SHA-256).
    """
    key, material = await key_version(service, key_ref, version_id,
                                      specs.ENCRYPT_DECRYPT, "AsymmetricEncrypt")
    specs.require_algorithm(key, algorithm, sign=False)
    limit = asymmetric.max_plaintext(key.key_spec, algorithm)
    if not 1 <= len(plaintext) <= limit:
        raise InvalidParameterError(
            f"Plaintext is {len(plaintext)} bytes; {algorithm} with "
            f"{key.key_spec} encrypts 1 to {limit} bytes.")
    ciphertext = asymmetric.encrypt(key.key_spec, material.public_key, algorithm,
                                    plaintext)
    return key, ciphertext


async def decrypt(service: KeyService, key_ref: str, version_id: str,
                  algorithm: str, ciphertext: bytes,
                  operation: str = "AsymmetricDecrypt") -> tuple[KeyRecord, bytes]:
    """AsymmetricDecrypt: decrypt with the version's private key.

    ``operation`` is the request's operation, named in key errors.

    Raises:
        InvalidCiphertextError: for every failure to decrypt, including
            ciphertext made with the other OAEP hash.
    """
    key, material = await key_version(service, key_ref, version_id,
                                      specs.ENCRYPT_DECRYPT, operation)
    specs.require_algorithm(key, algorithm, sign=False)
    expected = asymmetric.ciphertext_bytes(key.key_spec)
    if expected is not None and len(ciphertext) != expected:
        raise InvalidCiphertextError()
    try:
        plaintext = await service.keystore_of(key).asymmetric_decrypt(
            material, algorithm, ciphertext)
    except DecryptionFailed:
        raise InvalidCiphertextError() from None
    return key, plaintext


async def re_encrypt_from(service: KeyService, key_ref: str, version_id: str,
                          algorithm: str, ciphertext: bytes, destination_ref: str,
                          destination_context: dict[str, str] | None) -> CryptoResult:
    """ReEncrypt of asymmetric ciphertext: decrypt it, encrypt under a symmetric key.

    Raises:
        InvalidCiphertextError: the source ciphertext does not decrypt.
    """
    await service.require_encryption_key(destination_ref)
    _, plaintext = await decrypt(service, key_ref, version_id, algorithm, ciphertext,
                                 "ReEncrypt")
    return await service.encrypt(destination_ref, plaintext, destination_context)


# --- operations --------------------------------------------------------------


def _reply(ctx: RequestContext, key: KeyRecord, version_id: str,
           **fields: Any) -> dict[str, Any]:
    ctx.key_id = key.key_id
    ctx.key_version_id = version_id
    return {"KeyId": key.key_id, "KeyVersionId": version_id, **fields}


async def get_public_key_op(services: Any, ctx: RequestContext, values: dict) -> dict:
    key, pem = await get_public_key(services.keys, values["KeyId"],
                                    values["KeyVersionId"])
    return _reply(ctx, key, values["KeyVersionId"], PublicKey=pem)


async def sign_op(services: Any, ctx: RequestContext, values: dict) -> dict:
    key, signature = await sign(services.keys, values["KeyId"],
                                values["KeyVersionId"], values["Algorithm"],
                                values["Digest"])
    return _reply(ctx, key, values["KeyVersionId"], Value=signature)


async def verify_op(services: Any, ctx: RequestContext, values: dict) -> dict:
    key, valid = await verify(services.keys, values["KeyId"], values["KeyVersionId"],
                              values["Algorithm"], values["Digest"], values["Value"])
    return _reply(ctx, key, values["KeyVersionId"], Value=valid)


async def encrypt_op(services: Any, ctx: RequestContext, values: dict) -> dict:
    key, ciphertext = await encrypt(services.keys, values["KeyId"],
                                    values["KeyVersionId"], values["Algorithm"],
                                    values["Plaintext"])
    return _reply(ctx, key, values["KeyVersionId"], CiphertextBlob=ciphertext)


async def decrypt_op(services: Any, ctx: RequestContext, values: dict) -> dict:
    key, plaintext = await decrypt(services.keys, values["KeyId"],
                                   values["KeyVersionId"], values["Algorithm"],
                                   values["CiphertextBlob"])
    return _reply(ctx, key, values["KeyVersionId"], Plaintext=plaintext)


VERSION_ID = Param("KeyVersionId", required=True, low=1, high=64)
DIGEST = Param("Digest", BYTES, required=True, low=1, high=64)


def _op(name: str, handler, group: str, *params: Param) -> Operation:
    return Operation(name, handler, params, permission=f"kms:{name}", group=group)


OPERATIONS = [
    _op("GetPublicKey", get_public_key_op, READ, KEY_ID, VERSION_ID),
    _op("AsymmetricSign", sign_op, CRYPTO, KEY_ID, VERSION_ID,
        Param("Algorithm", required=True, choices=SIGN_ALGORITHMS), DIGEST),
    _op("AsymmetricVerify", verify_op, CRYPTO, KEY_ID, VERSION_ID,
        Param("Algorithm", required=True, choices=SIGN_ALGORITHMS), DIGEST,
        Param("Value", BYTES, required=True, low=1, high=MAX_SIGNATURE_BYTES)),
    _op("AsymmetricEncrypt", encrypt_op, CRYPTO, KEY_ID, VERSION_ID,
        Param("Algorithm", required=True, choices=ENCRYPT_ALGORITHMS),
        Param("Plaintext", PLAINTEXT, required=True, low=1, high=6144)),
    _op("AsymmetricDecrypt", decrypt_op, CRYPTO, KEY_ID, VERSION_ID,
        Param("Algorithm", required=True, choices=ENCRYPT_ALGORITHMS),
        Param("CiphertextBlob", BYTES, required=True, low=1,
              high=sm2.MAX_CIPHERTEXT_BYTES)),
]
