"""Key material import (BYOK) through the dispatcher, on a software keystore.

The caller's side uses cryptography: it wraps known material to the
agent's wrapping public key, and decrypts the agent's ciphertext blobs
with that material to prove the agent uses exactly the imported key.
"""

from __future__ import annotations

import os

import pytest
import trio
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from tongsuopy.crypto import serialization as sm_serialization

from agent.keys import byok
from client import errors
from tests.agent.test_asymmetric import agent  # noqa: F401  (fixture)
from tests.keystore.test_asymmetric_sm2 import reference_encrypt

ALGORITHMS = ["RSAES_PKCS1_V1_5", "RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256"]


def wrap(public_der: bytes, material: bytes, algorithm: str) -> bytes:
    """Encrypt key material to a wrapping public key, as a caller would."""
    public_key = serialization.load_der_public_key(public_der)
    if algorithm == "RSAES_PKCS1_V1_5":
        return public_key.encrypt(material, padding.PKCS1v15())
    hash_type = hashes.SHA1 if algorithm == "RSAES_OAEP_SHA_1" else hashes.SHA256
    return public_key.encrypt(material, padding.OAEP(
        padding.MGF1(hash_type()), hash_type(), None))


async def external_key(agent, spec: str = "Aliyun_AES_256") -> str:
    return (await agent.new_key(KeySpec=spec, Origin="EXTERNAL"))[0]


async def parameters(agent, key_id: str, algorithm: str = "RSAES_OAEP_SHA_256"):
    return await agent.call("GetParametersForImport", KeyId=key_id,
                            WrappingAlgorithm=algorithm, WrappingKeySpec="RSA_2048")


async def import_material(agent, key_id: str, material: bytes,
                          algorithm: str = "RSAES_OAEP_SHA_256", **extra) -> dict:
    params = await parameters(agent, key_id, algorithm)
    return await agent.call(
        "ImportKeyMaterial", KeyId=key_id, ImportToken=params["ImportToken"],
        EncryptedKeyMaterial=wrap(params["PublicKey"], material, algorithm), **extra)


async def state(agent, key_id: str) -> str:
    return (await agent.call("DescribeKey", KeyId=key_id))["KeyMetadata"]["KeyState"]


def open_blob(material: bytes, blob: bytes) -> bytes:
    """Decrypt an agent blob with known material (no encryption context)."""
    header, iv, body = blob[:37], blob[37:49], blob[49:]
    return AESGCM(material).decrypt(iv, body, header)


async def test_external_key_waits(agent):
    """An EXTERNAL key starts in PendingImport without a version."""
    key_id = await external_key(agent)
    meta = (await agent.call("DescribeKey", KeyId=key_id))["KeyMetadata"]
    versions = await agent.call("ListKeyVersions", KeyId=key_id)
    assert meta["KeyState"] == "PendingImport"
    assert meta["Origin"] == "EXTERNAL"
    assert meta["PrimaryKeyVersion"] == ""
    assert versions["TotalCount"] == 0


async def test_pending_import_cannot_encrypt(agent):
    """Encrypt on a key waiting for material is Rejected.PendingImport."""
    key_id = await external_key(agent)
    with pytest.raises(errors.KeyPendingImportError):
        await agent.call("Encrypt", KeyId=key_id, Plaintext=b"x")


async def test_parameters_shape(agent):
    """GetParametersForImport returns an RSA-2048 key and a 24-hour token."""
    key_id = await external_key(agent)
    reply = await parameters(agent, key_id)
    public_key = serialization.load_der_public_key(reply["PublicKey"])
    assert isinstance(public_key, rsa.RSAPublicKey)
    assert public_key.key_size == 2048
    assert reply["TokenExpireTime"] == "2026-01-02T00:00:00Z"
    assert len(reply["ImportToken"]) >= 32


async def test_parameters_need_external_key(agent):
    """GetParametersForImport on an Aliyun_KMS key is Unsupported.Origin."""
    key_id, _ = await agent.new_key()
    with pytest.raises(errors.UnsupportedOriginError):
        await parameters(agent, key_id)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
async def test_import_then_encrypt(agent, algorithm):
    """Imported material is Enabled and is the key that encrypts."""
    key_id = await external_key(agent)
    material = os.urandom(32)
    await import_material(agent, key_id, material, algorithm)
    blob = (await agent.call("Encrypt", KeyId=key_id,
                             Plaintext=b"secret"))["CiphertextBlob"]
    assert await state(agent, key_id) == "Enabled"
    assert open_blob(material, blob) == b"secret"


async def test_sm4_import(agent):
    """A 16-byte SM4 key imports and encrypts and decrypts."""
    key_id = await external_key(agent, "Aliyun_SM4")
    await import_material(agent, key_id, os.urandom(16))
    blob = (await agent.call("Encrypt", KeyId=key_id, Plaintext=b"x"))["CiphertextBlob"]
    reply = await agent.call("Decrypt", CiphertextBlob=blob)
    assert reply["Plaintext"] == b"x"


@pytest.mark.parametrize("spec,length", [
    ("Aliyun_AES_256", 16), ("Aliyun_AES_256", 33), ("Aliyun_AES_128", 32),
    ("Aliyun_SM4", 32), ("Aliyun_AES_256", 1),
])
async def test_wrong_length_material(agent, spec, length):
    """Material of the wrong length is InvalidKeyMaterial and changes nothing."""
    key_id = await external_key(agent, spec)
    params = await parameters(agent, key_id)
    before = await agent.snapshot(key_id)
    with pytest.raises(errors.InvalidKeyMaterialError):
        await agent.call("ImportKeyMaterial", KeyId=key_id,
                         ImportToken=params["ImportToken"],
                         EncryptedKeyMaterial=wrap(params["PublicKey"],
                                                   os.urandom(length),
                                                   "RSAES_OAEP_SHA_256"))
    assert await agent.snapshot(key_id) == before
    assert await state(agent, key_id) == "PendingImport"


async def test_failed_import_keeps_token(agent):
    """A token survives a failed import and serves a correct one."""
    key_id = await external_key(agent)
    params = await parameters(agent, key_id)
    for material in (os.urandom(20), os.urandom(32)):
        try:
            await agent.call("ImportKeyMaterial", KeyId=key_id,
                             ImportToken=params["ImportToken"],
                             EncryptedKeyMaterial=wrap(params["PublicKey"], material,
                                                       "RSAES_OAEP_SHA_256"))
        except errors.InvalidKeyMaterialError:
            pass
    assert await state(agent, key_id) == "Enabled"


async def test_other_wrapping_algorithm(agent):
    """Material wrapped with another algorithm than the token's is invalid."""
    key_id = await external_key(agent)
    params = await parameters(agent, key_id, "RSAES_OAEP_SHA_256")
    with pytest.raises(errors.InvalidKeyMaterialError):
        await agent.call("ImportKeyMaterial", KeyId=key_id,
                         ImportToken=params["ImportToken"],
                         EncryptedKeyMaterial=wrap(params["PublicKey"],
                                                   os.urandom(32), "RSAES_OAEP_SHA_1"))


async def test_reused_token(agent):
    """A token imports once; a second use is InvalidImportToken."""
    key_id = await external_key(agent)
    material = os.urandom(32)
    params = await parameters(agent, key_id)
    request = dict(KeyId=key_id, ImportToken=params["ImportToken"],
                   EncryptedKeyMaterial=wrap(params["PublicKey"], material,
                                             "RSAES_OAEP_SHA_256"))
    await agent.call("ImportKeyMaterial", **request)
    with pytest.raises(errors.InvalidImportTokenError):
        await agent.call("ImportKeyMaterial", **request)


async def test_expired_token(agent):
    """A token older than 24 hours is ExpiredImportToken and changes nothing."""
    key_id = await external_key(agent)
    params = await parameters(agent, key_id)
    agent.clock.advance(hours=24, seconds=1)
    before = await agent.snapshot(key_id)
    with pytest.raises(errors.ExpiredImportTokenError):
        await agent.call("ImportKeyMaterial", KeyId=key_id,
                         ImportToken=params["ImportToken"],
                         EncryptedKeyMaterial=wrap(params["PublicKey"],
                                                   os.urandom(32),
                                                   "RSAES_OAEP_SHA_256"))
    assert await agent.snapshot(key_id) == before


async def test_foreign_token(agent):
    """A token issued for another key is InvalidImportToken."""
    key_id = await external_key(agent)
    other = await external_key(agent)
    params = await parameters(agent, other)
    with pytest.raises(errors.InvalidImportTokenError):
        await agent.call("ImportKeyMaterial", KeyId=key_id,
                         ImportToken=params["ImportToken"],
                         EncryptedKeyMaterial=wrap(params["PublicKey"],
                                                   os.urandom(32),
                                                   "RSAES_OAEP_SHA_256"))
    assert await state(agent, key_id) == "PendingImport"


async def test_unknown_token(agent):
    """A made-up token is InvalidImportToken."""
    key_id = await external_key(agent)
    with pytest.raises(errors.InvalidImportTokenError):
        await agent.call("ImportKeyMaterial", KeyId=key_id, ImportToken="made-up",
                         EncryptedKeyMaterial=bytes(256))


async def test_delete_and_reimport(agent):
    """After DeleteKeyMaterial only the same material returns, and old blobs
    decrypt again under the same version."""
    key_id = await external_key(agent)
    material = os.urandom(32)
    await import_material(agent, key_id, material)
    blob = (await agent.call("Encrypt", KeyId=key_id, Plaintext=b"old"))
    await agent.call("DeleteKeyMaterial", KeyId=key_id)
    assert await state(agent, key_id) == "PendingImport"
    with pytest.raises(errors.KeyPendingImportError):
        await agent.call("Decrypt", CiphertextBlob=blob["CiphertextBlob"])
    with pytest.raises(errors.InvalidKeyMaterialError):
        await import_material(agent, key_id, os.urandom(32))
    await import_material(agent, key_id, material)
    reply = await agent.call("Decrypt", CiphertextBlob=blob["CiphertextBlob"])
    assert reply["Plaintext"] == b"old"
    assert reply["KeyVersionId"] == blob["KeyVersionId"]


async def test_import_while_pending_deletion(agent):
    """ImportKeyMaterial on a key pending deletion is StateModifiedFailed."""
    key_id = await external_key(agent)
    params = await parameters(agent, key_id)
    await agent.call("ScheduleKeyDeletion", KeyId=key_id, PendingWindowInDays=7)
    with pytest.raises(errors.StateModifiedFailedError):
        await agent.call("ImportKeyMaterial", KeyId=key_id,
                         ImportToken=params["ImportToken"],
                         EncryptedKeyMaterial=wrap(params["PublicKey"],
                                                   os.urandom(32),
                                                   "RSAES_OAEP_SHA_256"))


async def test_material_expiry(agent):
    """Expired material is unusable at once, and the job deletes it."""
    key_id = await external_key(agent)
    expire = int(agent.clock.now().timestamp()) + 3600
    await import_material(agent, key_id, os.urandom(32), KeyMaterialExpireUnix=expire)
    meta = (await agent.call("DescribeKey", KeyId=key_id))["KeyMetadata"]
    assert meta["MaterialExpireTime"] == "2026-01-01T01:00:00Z"
    agent.clock.advance(hours=2)
    with pytest.raises(errors.KeyPendingImportError):
        await agent.call("Encrypt", KeyId=key_id, Plaintext=b"x")
    assert await byok.expire_material(agent.keys) == [key_id]
    assert await state(agent, key_id) == "PendingImport"
    assert await byok.expire_material(agent.keys) == []


async def test_expiry_in_past(agent):
    """A KeyMaterialExpireUnix in the past is InvalidParameter."""
    key_id = await external_key(agent)
    past = int(agent.clock.now().timestamp()) - 1
    with pytest.raises(errors.InvalidParameterError):
        await import_material(agent, key_id, os.urandom(32),
                              KeyMaterialExpireUnix=past)


async def test_external_key_no_versions(agent):
    """CreateKeyVersion on an EXTERNAL key is Unsupported.Origin."""
    key_id = await external_key(agent)
    await import_material(agent, key_id, os.urandom(32))
    with pytest.raises(errors.UnsupportedOriginError):
        await agent.call("CreateKeyVersion", KeyId=key_id)


async def test_sm2_wrapped_sm4_import(agent):
    """SM4 material wrapped with SM2PKE to an EC_SM2 wrapping key imports."""
    key_id = await external_key(agent, "Aliyun_SM4")
    params = await agent.call("GetParametersForImport", KeyId=key_id,
                              WrappingAlgorithm="SM2PKE", WrappingKeySpec="EC_SM2")
    public_key = sm_serialization.load_der_public_key(params["PublicKey"])
    material = os.urandom(16)
    await agent.call("ImportKeyMaterial", KeyId=key_id,
                     ImportToken=params["ImportToken"],
                     EncryptedKeyMaterial=reference_encrypt(public_key, material))
    assert await state(agent, key_id) == "Enabled"
    blob = (await agent.call("Encrypt", KeyId=key_id, Plaintext=b"sm"))["CiphertextBlob"]
    assert (await agent.call("Decrypt", CiphertextBlob=blob))["Plaintext"] == b"sm"


@pytest.mark.parametrize("spec,algorithm", [
    ("EC_SM2", "RSAES_OAEP_SHA_256"), ("RSA_2048", "SM2PKE"),
])
async def test_wrapping_algorithm_must_match_spec(agent, spec, algorithm):
    """A wrapping algorithm of the other spec is InvalidParameter."""
    key_id = await external_key(agent)
    with pytest.raises(errors.InvalidParameterError, match="does not go with"):
        await agent.call("GetParametersForImport", KeyId=key_id,
                         WrappingAlgorithm=algorithm, WrappingKeySpec=spec)


async def test_pkcs1_failure_spends_token(agent):
    """A failed PKCS#1 v1.5 import spends its token; an OAEP one does not."""
    key_id = await external_key(agent)
    params = await parameters(agent, key_id, "RSAES_PKCS1_V1_5")
    bad = wrap(params["PublicKey"], os.urandom(20), "RSAES_PKCS1_V1_5")
    with pytest.raises(errors.InvalidKeyMaterialError):
        await agent.call("ImportKeyMaterial", KeyId=key_id,
                         ImportToken=params["ImportToken"], EncryptedKeyMaterial=bad)
    good = wrap(params["PublicKey"], os.urandom(32), "RSAES_PKCS1_V1_5")
    with pytest.raises(errors.InvalidImportTokenError):
        await agent.call("ImportKeyMaterial", KeyId=key_id,
                         ImportToken=params["ImportToken"], EncryptedKeyMaterial=good)
    assert await state(agent, key_id) == "PendingImport"


async def test_pkcs1_token_one_failure_when_concurrent(agent):
    """Concurrent PKCS#1 v1.5 imports with one token get one unwrap between them."""
    key_id = await external_key(agent)
    params = await parameters(agent, key_id, "RSAES_PKCS1_V1_5")
    outcomes = []

    async def bad_import():
        bad = wrap(params["PublicKey"], os.urandom(20), "RSAES_PKCS1_V1_5")
        try:
            await agent.call("ImportKeyMaterial", KeyId=key_id,
                             ImportToken=params["ImportToken"],
                             EncryptedKeyMaterial=bad)
        except errors.KmsError as error:
            outcomes.append(error.code)

    async with trio.open_nursery() as nursery:
        for _ in range(8):
            nursery.start_soon(bad_import)
    assert outcomes.count("InvalidKeyMaterial") == 1
    assert outcomes.count("InvalidImportToken") == 7
