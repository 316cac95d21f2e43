"""GenerateAndExportDataKey and ExportDataKey through the dispatcher.

The caller's key pairs come from cryptography (RSA) and tongsuopy (SM2),
and the exported data keys are opened with them, or with the SM2
reference implementation, never with agent code.
"""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from tongsuopy.crypto import serialization as sm_serialization
from tongsuopy.crypto.asymciphers import ec as sm_ec

from client import errors
from tests.agent.test_asymmetric import agent  # noqa: F401  (fixture)
from tests.keystore.test_asymmetric_sm2 import reference_decrypt

RSA_KEY = rsa.generate_private_key(65537, 2048)
SM2_KEY = sm_ec.generate_private_key(sm_ec.SM2())


def rsa_blob(encoding=serialization.Encoding.DER, key=RSA_KEY) -> bytes:
    return key.public_key().public_bytes(
        encoding, serialization.PublicFormat.SubjectPublicKeyInfo)


def sm2_blob(encoding=sm_serialization.Encoding.PEM) -> bytes:
    return SM2_KEY.public_key().public_bytes(
        encoding, sm_serialization.PublicFormat.SubjectPublicKeyInfo)


def oaep(algorithm: str) -> padding.OAEP:
    hash_type = hashes.SHA256 if algorithm == "RSAES_OAEP_SHA_256" else hashes.SHA1
    return padding.OAEP(padding.MGF1(hash_type()), hash_type(), None)


async def data_key_of(agent, blob: bytes) -> bytes:
    return (await agent.call("Decrypt", CiphertextBlob=blob))["Plaintext"]


@pytest.mark.parametrize("algorithm", ["RSAES_OAEP_SHA_256", "RSAES_OAEP_SHA_1"])
@pytest.mark.parametrize("encoding", [serialization.Encoding.DER,
                                      serialization.Encoding.PEM])
async def test_generate_and_export_rsa(agent, algorithm, encoding):
    """The exported key opens with the caller's RSA key and matches the blob."""
    key_id, _ = await agent.new_key()
    reply = await agent.call(
        "GenerateAndExportDataKey", KeyId=key_id, PublicKeyBlob=rsa_blob(encoding),
        WrappingAlgorithm=algorithm, WrappingKeySpec="RSA_2048")
    exported = RSA_KEY.decrypt(reply["ExportedDataKey"], oaep(algorithm))
    assert len(exported) == 32
    assert exported == await data_key_of(agent, reply["CiphertextBlob"])


async def test_generate_and_export_sm2(agent):
    """SM2PKE export opens with the caller's SM2 private key."""
    key_id, _ = await agent.new_key()
    reply = await agent.call(
        "GenerateAndExportDataKey", KeyId=key_id, PublicKeyBlob=sm2_blob(),
        WrappingAlgorithm="SM2PKE", WrappingKeySpec="EC_SM2", NumberOfBytes=16)
    value = SM2_KEY.private_numbers().private_value
    exported = reference_decrypt(value, reply["ExportedDataKey"])
    assert len(exported) == 16
    assert exported == await data_key_of(agent, reply["CiphertextBlob"])


async def test_export_existing_data_key(agent):
    """ExportDataKey exports the key inside a GenerateDataKey blob."""
    key_id, _ = await agent.new_key()
    generated = await agent.call("GenerateDataKey", KeyId=key_id,
                                 EncryptionContext={"app": "x"})
    reply = await agent.call(
        "ExportDataKey", CiphertextBlob=generated["CiphertextBlob"],
        EncryptionContext={"app": "x"}, PublicKeyBlob=rsa_blob(),
        WrappingAlgorithm="RSAES_OAEP_SHA_256", WrappingKeySpec="RSA_2048")
    exported = RSA_KEY.decrypt(reply["ExportedDataKey"], oaep("RSAES_OAEP_SHA_256"))
    assert exported == generated["Plaintext"]
    assert reply["KeyVersionId"] == generated["KeyVersionId"]


async def test_export_needs_context(agent):
    """ExportDataKey with a wrong context is InvalidCiphertext."""
    key_id, _ = await agent.new_key()
    generated = await agent.call("GenerateDataKey", KeyId=key_id,
                                 EncryptionContext={"app": "x"})
    with pytest.raises(errors.InvalidCiphertextError):
        await agent.call("ExportDataKey", CiphertextBlob=generated["CiphertextBlob"],
                         PublicKeyBlob=rsa_blob(),
                         WrappingAlgorithm="RSAES_OAEP_SHA_1",
                         WrappingKeySpec="RSA_2048")


async def test_export_refuses_encrypt_blob(agent):
    """ExportDataKey of an Encrypt blob is InvalidParameter."""
    key_id, _ = await agent.new_key()
    blob = (await agent.call("Encrypt", KeyId=key_id, Plaintext=b"not a key"))
    with pytest.raises(errors.InvalidParameterError):
        await agent.call("ExportDataKey", CiphertextBlob=blob["CiphertextBlob"],
                         PublicKeyBlob=rsa_blob(),
                         WrappingAlgorithm="RSAES_OAEP_SHA_1",
                         WrappingKeySpec="RSA_2048")


@pytest.mark.parametrize("blob,algorithm,spec", [
    (rsa_blob(), "SM2PKE", "RSA_2048"),
    (sm2_blob(), "RSAES_OAEP_SHA_256", "EC_SM2"),
    (rsa_blob(key=rsa.generate_private_key(65537, 3072)), "RSAES_OAEP_SHA_1",
     "RSA_2048"),
    (ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo),
     "RSAES_OAEP_SHA_256", "RSA_2048"),
    (rsa_blob(), "SM2PKE", "EC_SM2"),
    (sm2_blob(), "RSAES_OAEP_SHA_1", "RSA_2048"),
    (b"not a key", "RSAES_OAEP_SHA_256", "RSA_2048"),
])
async def test_bad_wrapping_is_invalid(agent, blob, algorithm, spec):
    """A key or algorithm that does not fit WrappingKeySpec is InvalidParameter."""
    key_id, _ = await agent.new_key()
    with pytest.raises(errors.InvalidParameterError):
        await agent.call("GenerateAndExportDataKey", KeyId=key_id, PublicKeyBlob=blob,
                         WrappingAlgorithm=algorithm, WrappingKeySpec=spec)


async def test_data_key_too_long(agent):
    """A data key over the OAEP limit (191 bytes for SHA-256) is refused."""
    key_id, _ = await agent.new_key()
    params = dict(KeyId=key_id, PublicKeyBlob=rsa_blob(), WrappingKeySpec="RSA_2048",
                  WrappingAlgorithm="RSAES_OAEP_SHA_256")
    await agent.call("GenerateAndExportDataKey", NumberOfBytes=190, **params)
    with pytest.raises(errors.InvalidParameterError):
        await agent.call("GenerateAndExportDataKey", NumberOfBytes=191, **params)
