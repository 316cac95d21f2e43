"""Key pairs, HMAC keys, import and export on the real daemon and token.

One agent serves the module, and the RSA keys (110 to 510 ms to make in
the token) are made once and shared by the tests that need them.
"""

from __future__ import annotations

import hashlib
import os

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from tongsuopy.crypto import hashes as sm_hashes
from tongsuopy.crypto import serialization as sm_serialization
from tongsuopy.crypto.asymciphers import ec as sm_ec

from client import KmsClient, errors
from tests.keystore.test_asymmetric_sm2 import reference_encrypt, z_a_digest

pytestmark = pytest.mark.hsm
DIGEST = hashlib.sha256(b"integration").digest()
PREHASHED = utils.Prehashed(hashes.SHA256())


@pytest.fixture(scope="module")
def client(shared_agent):
    with KmsClient(shared_agent.socket) as instance:
        yield instance


def new_key(client, **params) -> tuple[str, str]:
    meta = client.create_key(**params)["KeyMetadata"]
    return meta["KeyId"], meta["PrimaryKeyVersion"]


@pytest.fixture(scope="module")
def signing_key(client):
    return new_key(client, key_spec="RSA_2048")


@pytest.fixture(scope="module")
def decryption_key(client):
    return new_key(client, key_spec="RSA_2048", key_usage="ENCRYPT/DECRYPT")


def public_key(client, key_id: str, version: str):
    pem = client.get_public_key(key_id, version)["PublicKey"]
    return serialization.load_pem_public_key(pem.encode())


def oaep(algorithm: str) -> padding.OAEP:
    hash_type = hashes.SHA256 if algorithm == "RSAES_OAEP_SHA_256" else hashes.SHA1
    return padding.OAEP(padding.MGF1(hash_type()), hash_type(), None)


def test_rsa_key_is_hsm(client, signing_key):
    """An RSA_2048 key on a token defaults to HSM protection and SIGN/VERIFY."""
    meta = client.describe_key(signing_key[0])["KeyMetadata"]
    assert meta["ProtectionLevel"] == "HSM"
    assert meta["KeyUsage"] == "SIGN/VERIFY"


@pytest.mark.parametrize("algorithm", ["RSA_PSS_SHA_256", "RSA_PKCS1_SHA_256"])
def test_rsa_signature_verifies(client, signing_key, algorithm):
    """The token's RSA signature verifies in cryptography and in the agent."""
    key_id, version = signing_key
    signature = client.asymmetric_sign(key_id, version, algorithm, DIGEST)["Value"]
    scheme = (padding.PSS(padding.MGF1(hashes.SHA256()), 32)
              if algorithm == "RSA_PSS_SHA_256" else padding.PKCS1v15())
    public_key(client, key_id, version).verify(signature, DIGEST, scheme, PREHASHED)
    reply = client.asymmetric_verify(key_id, version, algorithm, DIGEST, signature)
    assert reply["Value"] is True


@pytest.mark.parametrize("spec,curve", [("EC_P256", ec.SECP256R1),
                                        ("EC_P256K", ec.SECP256K1)])
def test_ecdsa_signature_verifies(client, spec, curve):
    """HSM ECDSA signatures are DER and verify in cryptography."""
    key_id, version = new_key(client, key_spec=spec)
    signature = client.asymmetric_sign(key_id, version, "ECDSA_SHA_256",
                                       DIGEST)["Value"]
    key = public_key(client, key_id, version)
    assert isinstance(key.curve, curve)
    key.verify(signature, DIGEST, ec.ECDSA(PREHASHED))


@pytest.mark.parametrize("algorithm", ["RSAES_OAEP_SHA_256", "RSAES_OAEP_SHA_1"])
def test_oaep_decrypts_in_token(client, decryption_key, algorithm):
    """cryptography's OAEP ciphertext decrypts; the other hash fails."""
    key_id, version = decryption_key
    ciphertext = public_key(client, key_id, version).encrypt(b"to the hsm",
                                                            oaep(algorithm))
    other = ("RSAES_OAEP_SHA_1" if algorithm == "RSAES_OAEP_SHA_256"
             else "RSAES_OAEP_SHA_256")
    reply = client.asymmetric_decrypt(key_id, version, algorithm, ciphertext)
    assert reply["Plaintext"] == b"to the hsm"
    with pytest.raises(errors.InvalidCiphertextError):
        client.asymmetric_decrypt(key_id, version, other, ciphertext)


def test_reencrypt_from_token_key(client, decryption_key):
    """ReEncrypt moves OAEP ciphertext of an HSM key pair under an AES key."""
    key_id, version = decryption_key
    ciphertext = public_key(client, key_id, version).encrypt(
        b"to an aes key", oaep("RSAES_OAEP_SHA_256"))
    destination = client.call("CreateKey")["KeyMetadata"]["KeyId"]
    reply = client.call("ReEncrypt", CiphertextBlob=ciphertext,
                        DestinationKeyId=destination, SourceKeyId=key_id,
                        SourceKeyVersionId=version,
                        SourceEncryptionAlgorithm="RSAES_OAEP_SHA_256")
    assert reply["KeyId"] == destination
    assert client.decrypt(reply["CiphertextBlob"])["Plaintext"] == b"to an aes key"


def test_plaintext_over_limit(client, decryption_key):
    """191 bytes is over the RSA_2048 OAEP SHA-256 limit."""
    key_id, version = decryption_key
    with pytest.raises(errors.InvalidParameterError):
        client.asymmetric_encrypt(key_id, version, "RSAES_OAEP_SHA_256", bytes(191))


def test_version_of_other_key(client, signing_key, decryption_key):
    """A version id of another key is Forbidden.KeyVersionNotFound."""
    with pytest.raises(errors.KeyVersionNotFoundError):
        client.asymmetric_sign(signing_key[0], decryption_key[1],
                               "RSA_PSS_SHA_256", DIGEST)


def test_sm2_on_token_agent(client):
    """EC_SM2 is SOFTWARE; its signature of SM3(Z_A || M) verifies in tongsuopy."""
    with pytest.raises(errors.UnsupportedProtectionLevelError):
        client.create_key(key_spec="EC_SM2", protection_level="HSM")
    key_id, version = new_key(client, key_spec="EC_SM2")
    pem = client.get_public_key(key_id, version)["PublicKey"]
    key = sm_serialization.load_pem_public_key(pem.encode())
    signature = client.asymmetric_sign(key_id, version, "SM2DSA",
                                       z_a_digest(key, b"sm2 message"))["Value"]
    key.verify(signature, b"sm2 message", sm_ec.ECDSA(sm_hashes.SM3()))


def test_hmac_in_hsm(client):
    """An HMAC_SHA_256 key lives in the HSM and verifies its own MACs."""
    key_id, _ = new_key(client, key_spec="HMAC_SHA_256")
    meta = client.describe_key(key_id)["KeyMetadata"]
    mac = client.generate_mac(key_id, "HMAC_SHA_256", b"message")["Mac"]
    assert meta["ProtectionLevel"] == "HSM"
    assert client.verify_mac(key_id, "HMAC_SHA_256", b"message", mac)["Value"] is True
    assert client.verify_mac(key_id, "HMAC_SHA_256", b"other", mac)["Value"] is False


def test_import_flow(client):
    """Import, use, delete and re-import material in an HSM EXTERNAL key."""
    key_id, _ = new_key(client, origin="EXTERNAL")
    material = os.urandom(32)

    def import_once(raw: bytes) -> None:
        params = client.get_parameters_for_import(key_id, "RSAES_OAEP_SHA_256")
        wrapping = serialization.load_der_public_key(params["PublicKey"])
        client.import_key_material(
            key_id, wrapping.encrypt(raw, oaep("RSAES_OAEP_SHA_256")),
            params["ImportToken"])

    import_once(material)
    blob = client.encrypt(key_id, b"imported")["CiphertextBlob"]
    assert AESGCM(material).decrypt(blob[37:49], blob[49:], blob[:37]) == b"imported"
    client.delete_key_material(key_id)
    assert client.describe_key(key_id)["KeyMetadata"]["KeyState"] == "PendingImport"
    with pytest.raises(errors.InvalidKeyMaterialError):
        import_once(os.urandom(32))
    import_once(material)
    assert client.decrypt(blob)["Plaintext"] == b"imported"


def test_sm2_wrapping_only_for_software_keys(client):
    """EC_SM2 wrapping serves an SM4 key; an HSM key must unwrap in the token."""
    hsm_key, _ = new_key(client, origin="EXTERNAL")
    with pytest.raises(errors.UnsupportedProtectionLevelError):
        client.get_parameters_for_import(hsm_key, "SM2PKE", "EC_SM2")
    sm4_key, _ = new_key(client, origin="EXTERNAL", key_spec="Aliyun_SM4")
    params = client.get_parameters_for_import(sm4_key, "SM2PKE", "EC_SM2")
    wrapping = sm_serialization.load_der_public_key(params["PublicKey"])
    client.import_key_material(sm4_key, reference_encrypt(wrapping, bytes(range(16))),
                               params["ImportToken"])
    blob = client.encrypt(sm4_key, b"sm4 imported")["CiphertextBlob"]
    assert client.decrypt(blob)["Plaintext"] == b"sm4 imported"


def test_export_to_caller_key(client):
    """GenerateAndExportDataKey wraps the data key to the caller's RSA key."""
    key_id, _ = new_key(client)
    caller = rsa.generate_private_key(65537, 2048)
    blob = caller.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    reply = client.generate_and_export_data_key(key_id, blob, "RSAES_OAEP_SHA_1",
                                                "RSA_2048")
    exported = caller.decrypt(reply["ExportedDataKey"], oaep("RSAES_OAEP_SHA_1"))
    assert exported == client.decrypt(reply["CiphertextBlob"])["Plaintext"]
