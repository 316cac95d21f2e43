"""ReEncrypt of asymmetric ciphertext on the real daemon: its bad inputs."""

from __future__ import annotations

import os

import pytest

from client import KmsClient, errors

pytestmark = pytest.mark.hsm

OAEP = "RSAES_OAEP_SHA_256"


@pytest.fixture(scope="module")
def keys(shared_agent):
    """A symmetric key, an RSA key pair with its version, and a ciphertext."""
    with KmsClient(shared_agent.socket) as client:
        symmetric = client.create_key()["KeyMetadata"]["KeyId"]
        pair = client.call("CreateKey", KeySpec="RSA_2048",
                           KeyUsage="ENCRYPT/DECRYPT")["KeyMetadata"]["KeyId"]
        version = client.call("ListKeyVersions", KeyId=pair)[
            "KeyVersions"]["KeyVersion"][0]["KeyVersionId"]
        ciphertext = client.call("AsymmetricEncrypt", KeyId=pair, KeyVersionId=version,
                                 Algorithm=OAEP, Plaintext="cGFpcg==")["CiphertextBlob"]
    return symmetric, pair, version, ciphertext


@pytest.fixture
def client(shared_agent):
    with KmsClient(shared_agent.socket) as client:
        yield client


@pytest.mark.parametrize("given", [
    ("SourceKeyId",),
    ("SourceKeyVersionId",),
    ("SourceEncryptionAlgorithm",),
    ("SourceKeyVersionId", "SourceEncryptionAlgorithm"),
    ("SourceKeyId", "SourceEncryptionAlgorithm"),
])
def test_partial_source_is_missing_parameter(client, keys, given):
    """One or two of the three source parameters is MissingParameter."""
    symmetric, pair, version, ciphertext = keys
    source = {"SourceKeyId": pair, "SourceKeyVersionId": version,
              "SourceEncryptionAlgorithm": OAEP}
    with pytest.raises(errors.MissingParameterError):
        client.call("ReEncrypt", CiphertextBlob=ciphertext, DestinationKeyId=symmetric,
                    **{name: source[name] for name in given})


@pytest.mark.parametrize("ciphertext", [b"x", os.urandom(256), os.urandom(300)])
def test_garbage_source_is_invalid_ciphertext(client, keys, ciphertext):
    """Garbage of any length is the one opaque InvalidCiphertext."""
    symmetric, pair, version, _ = keys
    with pytest.raises(errors.InvalidCiphertextError):
        client.call("ReEncrypt", CiphertextBlob=ciphertext, DestinationKeyId=symmetric,
                    SourceKeyId=pair, SourceKeyVersionId=version,
                    SourceEncryptionAlgorithm=OAEP)


def test_round_trip_under_symmetric_key(client, keys):
    """The re-encrypted blob decrypts to the asymmetric plaintext."""
    symmetric, pair, version, ciphertext = keys
    reply = client.call("ReEncrypt", CiphertextBlob=ciphertext,
                        DestinationKeyId=symmetric, SourceKeyId=pair,
                        SourceKeyVersionId=version, SourceEncryptionAlgorithm=OAEP)
    assert reply["KeyId"] == symmetric
    assert client.decrypt(reply["CiphertextBlob"])["Plaintext"] == b"cGFpcg=="


@pytest.mark.parametrize("source_spec, usage", [
    ("RSA_2048", "SIGN/VERIFY"), ("Aliyun_AES_256", "ENCRYPT/DECRYPT")])
def test_source_not_decryption_pair(client, keys, source_spec, usage):
    """A signing pair or a symmetric key as source is UnsupportedOperation."""
    symmetric, _, _, ciphertext = keys
    source = client.call("CreateKey", KeySpec=source_spec, KeyUsage=usage)[
        "KeyMetadata"]["KeyId"]
    version = client.call("ListKeyVersions", KeyId=source)[
        "KeyVersions"]["KeyVersion"][0]["KeyVersionId"]
    with pytest.raises(errors.UnsupportedOperationError, match="ReEncrypt needs"):
        client.call("ReEncrypt", CiphertextBlob=ciphertext, DestinationKeyId=symmetric,
                    SourceKeyId=source, SourceKeyVersionId=version,
                    SourceEncryptionAlgorithm=OAEP)
