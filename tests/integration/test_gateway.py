"""The official Alibaba Cloud SDKs against the real daemon's gateway.

One agent on a SoftHSM2 token serves this module: the OpenAPI SDK
(``alibabacloud-kms20160120``, with both signature schemes), the caching
Secrets Manager client and the dedicated-instance SDK
(``alibabacloud-dkms-gcs``) talk to it unchanged, and the msgpack client
on the agent socket checks that both faces share keys and blobs.
"""

from __future__ import annotations

import base64
import hashlib
import json

import pytest

from client import KmsClient
from tests.integration.gateway_support import (
    b64, openapi_client, run_dkms, start_gateway_agent, unb64, wait_for,
    without_proxies,
)

pytestmark = pytest.mark.hsm


@pytest.fixture(scope="module")
def gateway_agent(tmp_path_factory):
    """One agent with the gateway on, shared by this module's tests."""
    with without_proxies():
        agent = start_gateway_agent(tmp_path_factory.mktemp("gateway") / "agent")
        yield agent
        agent.stop()


@pytest.fixture(scope="module")
def kms(gateway_agent):
    """The OpenAPI SDK client, signing with ACS3-HMAC-SHA256."""
    return openapi_client(gateway_agent)


@pytest.fixture
def socket_client(gateway_agent):
    with KmsClient(gateway_agent.socket) as client:
        yield client


@pytest.fixture(scope="module")
def key_id(kms):
    """A symmetric key made through the gateway."""
    from alibabacloud_kms20160120 import models

    reply = kms.create_key(models.CreateKeyRequest(description="gateway key"))
    return reply.body.key_metadata.key_id


def test_key_lifecycle(kms):
    """Create, alias, disable, enable, schedule and cancel deletion."""
    from alibabacloud_kms20160120 import models
    from alibabacloud_tea_openapi.exceptions import ClientException

    key = kms.create_key(models.CreateKeyRequest(description="lifecycle")).body
    key_id = key.key_metadata.key_id
    kms.create_alias(models.CreateAliasRequest(alias_name="alias/lifecycle",
                                               key_id=key_id))
    described = kms.describe_key(models.DescribeKeyRequest(key_id="alias/lifecycle"))
    assert described.body.key_metadata.key_id == key_id
    kms.disable_key(models.DisableKeyRequest(key_id=key_id))
    with pytest.raises(ClientException) as refused:
        kms.encrypt(models.EncryptRequest(key_id=key_id, plaintext="x"))
    assert refused.value.code == "Rejected.Disabled"
    assert refused.value.status_code == 409
    kms.enable_key(models.EnableKeyRequest(key_id=key_id))
    kms.schedule_key_deletion(models.ScheduleKeyDeletionRequest(
        key_id=key_id, pending_window_in_days=7))
    pending = kms.describe_key(models.DescribeKeyRequest(key_id=key_id)).body
    assert pending.key_metadata.key_state == "PendingDeletion"
    kms.cancel_key_deletion(models.CancelKeyDeletionRequest(key_id=key_id))
    listed = kms.list_keys(models.ListKeysRequest(page_size=100)).body
    assert key_id in [entry.key_id for entry in listed.keys.key]


def test_encrypt_decrypt_with_context(kms, key_id):
    """The context binds the ciphertext; another context fails."""
    from alibabacloud_kms20160120 import models
    from alibabacloud_tea_openapi.exceptions import ClientException

    context = {"app": "billing", "env": "test"}
    blob = kms.encrypt(models.EncryptRequest(
        key_id=key_id, plaintext="caf\u00e9 & co", encryption_context=context)
    ).body.ciphertext_blob
    plain = kms.decrypt(models.DecryptRequest(ciphertext_blob=blob,
                                              encryption_context=context))
    assert plain.body.plaintext == "caf\u00e9 & co"
    assert plain.body.key_id == key_id
    with pytest.raises(ClientException) as refused:
        kms.decrypt(models.DecryptRequest(ciphertext_blob=blob,
                                          encryption_context={"app": "other"}))
    assert refused.value.code == "InvalidCiphertext"


def test_hmac_sha1_client_works(gateway_agent, key_id):
    """A client signing with the older HMAC-SHA1 scheme is served."""
    from alibabacloud_kms20160120 import models

    legacy = openapi_client(gateway_agent, signature_algorithm="v2")
    blob = legacy.encrypt(models.EncryptRequest(key_id=key_id, plaintext="old"))
    plain = legacy.decrypt(models.DecryptRequest(
        ciphertext_blob=blob.body.ciphertext_blob))
    assert plain.body.plaintext == "old"


def test_data_key_across_faces(kms, key_id, socket_client):
    """A data key blob decrypts to Base64 text here and raw bytes on the socket."""
    from alibabacloud_kms20160120 import models

    made = kms.generate_data_key(models.GenerateDataKeyRequest(
        key_id=key_id, number_of_bytes=32)).body
    raw = base64.b64decode(made.plaintext)
    via_sdk = kms.decrypt(models.DecryptRequest(ciphertext_blob=made.ciphertext_blob))
    via_socket = socket_client.call(
        "Decrypt", CiphertextBlob=base64.b64decode(made.ciphertext_blob))
    assert len(raw) == 32
    assert via_sdk.body.plaintext == made.plaintext
    assert via_socket["Plaintext"] == raw


def test_gateway_blob_decrypts_on_socket(kms, key_id, socket_client):
    """A blob made through the gateway decrypts through the msgpack client."""
    from alibabacloud_kms20160120 import models

    blob = kms.encrypt(models.EncryptRequest(
        key_id=key_id, plaintext="from http", encryption_context={"k": "v"})
    ).body.ciphertext_blob
    reply = socket_client.call("Decrypt", CiphertextBlob=base64.b64decode(blob),
                               EncryptionContext={"k": "v"})
    assert reply["Plaintext"] == b"from http"


def test_socket_blob_decrypts_on_gateway(kms, key_id, socket_client):
    """A blob made through the msgpack client decrypts through the SDK."""
    from alibabacloud_kms20160120 import models

    made = socket_client.call("Encrypt", KeyId=key_id, Plaintext=b"from socket",
                              EncryptionContext={"k": "v"})
    blob = base64.b64encode(made["CiphertextBlob"]).decode()
    reply = kms.decrypt(models.DecryptRequest(ciphertext_blob=blob,
                                              encryption_context={"k": "v"}))
    assert reply.body.plaintext == "from socket"


def test_asymmetric_sign_and_verify(kms):
    """AsymmetricSign through the SDK verifies with GetPublicKey's key."""
    from alibabacloud_kms20160120 import models
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, utils

    key = kms.create_key(models.CreateKeyRequest(
        key_spec="EC_P256", key_usage="SIGN/VERIFY")).body.key_metadata
    version = key.primary_key_version
    digest = hashlib.sha256(b"signed through the gateway").digest()
    signed = kms.asymmetric_sign(models.AsymmetricSignRequest(
        key_id=key.key_id, key_version_id=version, algorithm="ECDSA_SHA_256",
        digest=base64.b64encode(digest).decode())).body
    pem = kms.get_public_key(models.GetPublicKeyRequest(
        key_id=key.key_id, key_version_id=version)).body.public_key
    public = serialization.load_pem_public_key(pem.encode())
    public.verify(base64.b64decode(signed.value), digest,
                  ec.ECDSA(utils.Prehashed(hashes.SHA256())))
    verified = kms.asymmetric_verify(models.AsymmetricVerifyRequest(
        key_id=key.key_id, key_version_id=version, algorithm="ECDSA_SHA_256",
        digest=base64.b64encode(digest).decode(), value=signed.value)).body
    assert verified.value is True


def test_secret_create_and_read(kms):
    """CreateSecret and GetSecretValue keep form-body text intact."""
    from alibabacloud_kms20160120 import models

    kms.create_secret(models.CreateSecretRequest(
        secret_name="db/password", secret_data="p&ss=w+rd %20", version_id="v1"))
    value = kms.get_secret_value(models.GetSecretValueRequest(
        secret_name="db/password")).body
    assert value.secret_data == "p&ss=w+rd %20"
    assert value.version_id == "v1"
    assert value.version_stages.version_stage == ["ACSCurrent"]


def test_caching_client_sees_rotation(gateway_agent, kms):
    """The caching Secrets Manager client reads a value, then the rotated one."""
    from alibabacloud_kms20160120 import models
    from alibabacloud_secretsmanager_client_v2.secret_manager_cache_client_builder \
        import SecretManagerCacheClientBuilder
    from alibabacloud_secretsmanager_client_v2.service.\
        default_secret_manager_client_builder import DefaultSecretManagerClientBuilder
    from alibabacloud_tea_openapi.utils_models import Config

    kms.create_secret(models.CreateSecretRequest(
        secret_name="app/token", secret_data="first", version_id="v1"))
    config = Config(access_key_id=gateway_agent.access_key_id,
                    access_key_secret=gateway_agent.access_key_secret,
                    endpoint=gateway_agent.endpoint, protocol="http",
                    region_id="cn-hangzhou")
    manager = DefaultSecretManagerClientBuilder.standard().add_config(config).build()
    cache = (SecretManagerCacheClientBuilder.new_cache_client_builder(manager)
             .with_secret_ttl("app/token", 1000).build())
    try:
        first = cache.get_secret_value("app/token")
        kms.put_secret_value(models.PutSecretValueRequest(
            secret_name="app/token", secret_data="second", version_id="v2"))
        rotated = wait_for(lambda: cache.get_secret_value("app/token") == "second",
                           timeout=60)
    finally:
        # cache.close() can hang: it joins a running refresh job while the
        # scheduler holds the job store lock that the job needs to schedule
        # its next run (secretsmanager-client-v2 2.0.0, apscheduler 3.11).
        cache.sched.shutdown(wait=False)
    assert first == "first"
    assert rotated


def test_dedicated_sdk_round_trip(gateway_agent, key_id, socket_client, kms):
    """The dkms-gcs SDK encrypts, decrypts, makes data keys and reads secrets."""
    from alibabacloud_kms20160120 import models

    kms.create_secret(models.CreateSecretRequest(
        secret_name="dkms/secret", secret_data="instance value", version_id="v1"))
    aad = json.dumps({"tenant": "t1"}).encode()
    encrypted, data_key, secret, random = run_dkms(gateway_agent, [
        {"api": "encrypt", "request": {"KeyId": key_id, "Plaintext": b64(b"\x00dkms"),
                                       "Aad": b64(aad)}},
        {"api": "generate_data_key", "request": {"KeyId": key_id,
                                                 "NumberOfBytes": 16}},
        {"api": "get_secret_value", "request": {"SecretName": "dkms/secret"}},
        {"api": "generate_random", "request": {"Length": 24}},
    ])
    blob = unb64(encrypted["CiphertextBlob"])
    decrypted, = run_dkms(gateway_agent, [{"api": "decrypt", "request": {
        "KeyId": key_id, "CiphertextBlob": encrypted["CiphertextBlob"],
        "Iv": encrypted["Iv"], "Aad": b64(aad)}}])
    on_socket = socket_client.call("Decrypt", CiphertextBlob=blob,
                                   EncryptionContext={"tenant": "t1"})
    assert unb64(decrypted["Plaintext"]) == b"\x00dkms"
    assert on_socket["Plaintext"] == b"\x00dkms"
    assert len(unb64(data_key["Plaintext"])) == 16
    assert secret["SecretData"] == "instance value"
    assert secret["VersionStages"] == ["ACSCurrent"]
    assert len(unb64(random["Random"])) == 24


def test_dedicated_sdk_sign(gateway_agent, kms):
    """The dkms-gcs SDK signs a raw message with the key's primary version."""
    from alibabacloud_kms20160120 import models

    key_id = kms.create_key(models.CreateKeyRequest(
        key_spec="EC_P256", key_usage="SIGN/VERIFY")).body.key_metadata.key_id
    signed, = run_dkms(gateway_agent, [{"api": "sign", "request": {
        "KeyId": key_id, "Algorithm": "ECDSA_SHA_256", "MessageType": "RAW",
        "Message": b64(b"instance message")}}])
    verified, = run_dkms(gateway_agent, [{"api": "verify", "request": {
        "KeyId": key_id, "Algorithm": "ECDSA_SHA_256", "MessageType": "RAW",
        "Message": b64(b"instance message"), "Signature": signed["Signature"]}}])
    assert verified["Value"] is True


def test_dedicated_sdk_errors(gateway_agent, key_id):
    """Errors reach the dkms-gcs SDK as its Error message, with their codes."""
    missing, cbc = run_dkms(gateway_agent, [
        {"api": "encrypt", "request": {"KeyId": "key-missing",
                                       "Plaintext": b64(b"x")}},
        {"api": "encrypt", "request": {"KeyId": key_id, "Plaintext": b64(b"x"),
                                       "Algorithm": "AES_CBC"}},
    ])
    assert missing["error"]["code"] == "Forbidden.KeyNotFound"
    assert missing["error"]["status"] == 404
    assert cbc["error"]["code"] == "UnsupportedOperation"
