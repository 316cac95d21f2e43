"""Bad input, refused credentials, throttling and TLS on the real gateway.

One agent serves this module with TLS on its own certificate and room
for a single request in flight, so a long poll can fill the gateway.
After every kind of bad input, both the gateway and the agent socket
still serve.
"""

from __future__ import annotations

import base64
import socket
import ssl
import threading
import time

import pytest

from client import KmsClient
from tests.integration.gateway_support import (
    b64, kmsctl, openapi_client, run_dkms, start_gateway_agent, without_proxies,
)

pytestmark = pytest.mark.hsm


@pytest.fixture(scope="module")
def tls_agent(tmp_path_factory):
    """An agent whose gateway speaks TLS and takes one request at a time."""
    with without_proxies():
        agent = start_gateway_agent(tmp_path_factory.mktemp("gateway-abuse") / "agent",
                                    gateway="tls = true\nmax_in_flight = 1\n")
        yield agent
        agent.stop()


@pytest.fixture(scope="module")
def ca_file(tls_agent):
    """The certificate the agent made for itself, which clients trust."""
    return str(tls_agent.socket.parent / "data" / "gateway-tls" / "cert.pem")


@pytest.fixture(scope="module")
def kms(tls_agent, ca_file):
    return openapi_client(tls_agent, protocol="https", ca=ca_file)


def raw_exchange(agent, ca_file: str, data: bytes) -> bytes:
    """Send bytes over TLS and return everything the gateway sends back."""
    host, port = agent.endpoint.rsplit(":", 1)
    context = ssl.create_default_context(cafile=ca_file)
    with socket.create_connection((host, int(port)), timeout=10) as plain:
        with context.wrap_socket(plain, server_hostname=host) as stream:
            stream.sendall(data)
            received = b""
            while chunk := stream.recv(65536):
                received += chunk
    return received


def assert_still_serving(agent, kms) -> None:
    from alibabacloud_kms20160120 import models

    listed = kms.list_keys(models.ListKeysRequest())
    with KmsClient(agent.socket) as client:
        reply = client.call("ListKeys")
    assert listed.body.request_id
    assert reply["RequestId"]


def test_sdk_over_tls(tls_agent, kms):
    """The OpenAPI SDK trusts the agent's certificate and is served."""
    from alibabacloud_kms20160120 import models

    key_id = kms.create_key(models.CreateKeyRequest()).body.key_metadata.key_id
    blob = kms.encrypt(models.EncryptRequest(key_id=key_id, plaintext="over tls"))
    plain = kms.decrypt(models.DecryptRequest(
        ciphertext_blob=blob.body.ciphertext_blob))
    assert plain.body.plaintext == "over tls"


def test_dedicated_sdk_over_tls(tls_agent, ca_file, kms):
    """The dedicated-instance SDK verifies the certificate with ca_file_path."""
    random, = run_dkms(tls_agent, [{"api": "generate_random",
                                    "request": {"Length": 8}}],
                       protocol="https", ca_file_path=ca_file)
    assert "error" not in random
    assert len(base64.b64decode(random["Random"]["b64"])) == 8


def test_wrong_secret_refused(tls_agent, ca_file, kms):
    """A wrong AccessKey secret is IncompleteSignature, and serving goes on."""
    from alibabacloud_kms20160120 import models
    from alibabacloud_tea_openapi.exceptions import ClientException

    forged = openapi_client(tls_agent, secret="x" * 30, protocol="https", ca=ca_file)
    with pytest.raises(ClientException) as refused:
        forged.list_keys(models.ListKeysRequest())
    assert refused.value.code == "IncompleteSignature"
    assert refused.value.status_code == 400
    assert_still_serving(tls_agent, kms)


def test_unknown_access_key_refused(tls_agent, ca_file, kms):
    """An unknown AccessKey ID is InvalidAccessKeyId.NotFound (404)."""
    from alibabacloud_kms20160120 import models
    from alibabacloud_tea_openapi.exceptions import ClientException

    stranger = openapi_client(tls_agent, key_id="LTAIstranger00000001",
                              protocol="https", ca=ca_file)
    with pytest.raises(ClientException) as refused:
        stranger.list_keys(models.ListKeysRequest())
    assert refused.value.code == "InvalidAccessKeyId.NotFound"
    assert refused.value.status_code == 404


def test_new_access_key_works_at_once(tls_agent, ca_file, kms):
    """A key kmsctl adds works without a restart; a reader lacks key rights."""
    from alibabacloud_kms20160120 import models
    from alibabacloud_tea_openapi.exceptions import ClientException

    made = kmsctl("gateway", "create-access-key", "--principal", "reader",
                  "--credentials-file", str(tls_agent.credentials))
    reader = openapi_client(tls_agent, key_id=made["AccessKeyId"],
                            secret=made["AccessKeySecret"], protocol="https",
                            ca=ca_file)
    with pytest.raises(ClientException) as refused:
        reader.list_keys(models.ListKeysRequest())
    assert refused.value.code == "Forbidden.NoPermission"
    assert refused.value.status_code == 403


@pytest.mark.parametrize("data", [
    b"GET / HTTP/1.1\r\nhost x\r\n\r\n",
    b"\x16\x03garbage\r\n\r\n",
    b"POST /?a=%zz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n"
    b"content-length: 0\r\n\r\n",
    b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 999999999\r\n\r\n",
    b"POST / HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-protobuf\r\n"
    b"x-kms-apiname: Encrypt\r\nconnection: close\r\ncontent-length: 4\r\n\r\n"
    b"\xff\xff\xff\xff",
], ids=["bad-header", "not-http", "bad-escape", "huge-body", "dkms-unsigned"])
def test_bad_input_answered(tls_agent, ca_file, kms, data):
    """Malformed HTTP gets a 4xx in the protocol's shape; serving goes on."""
    received = raw_exchange(tls_agent, ca_file, data)
    status = int(received.split(b" ", 2)[1])
    assert 400 <= status < 500
    assert_still_serving(tls_agent, kms)


def test_plain_http_on_tls_port_refused(tls_agent, kms):
    """Plain HTTP to the TLS port gets no reply, and serving goes on."""
    host, port = tls_agent.endpoint.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as plain:
        plain.sendall(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n")
        received = plain.recv(65536)
    assert not received.startswith(b"HTTP/1.1 200")
    assert_still_serving(tls_agent, kms)


def test_full_gateway_throttles(tls_agent, kms):
    """With the one slot held by a long poll, a call gets Rejected.Throttling."""
    from alibabacloud_kms20160120 import models
    from alibabacloud_secretsmanager_client_v2.utils.backoff_utils import (
        judge_need_back_off,
    )
    from alibabacloud_tea_openapi import utils_models
    from alibabacloud_tea_openapi.exceptions import ClientException
    from darabonba.runtime import RuntimeOptions

    kms.create_secret(models.CreateSecretRequest(
        secret_name="poll/me", secret_data="v1 value", version_id="v1"))
    params = utils_models.Params(
        action="WaitSecretChange", version="2016-01-20", protocol="HTTPS",
        pathname="/", method="POST", auth_type="AK", style="RPC",
        req_body_type="formData", body_type="json")
    request = utils_models.OpenApiRequest(query={
        "SecretName": "poll/me", "VersionId": "v1", "TimeoutSeconds": "30"})
    waited = {}

    def long_poll() -> None:
        # The poll itself may meet the slot taken by a DescribeSecret.
        while not waited:
            try:
                waited.update(kms.call_api(params, request,
                                           RuntimeOptions(read_timeout=40000)))
            except ClientException as error:
                if error.code != "Rejected.Throttling":
                    raise

    waiter = threading.Thread(target=long_poll)
    waiter.start()
    throttled = None
    for _ in range(200):
        try:
            kms.describe_secret(models.DescribeSecretRequest(secret_name="poll/me"))
        except ClientException as error:
            throttled = error
            break
        time.sleep(0.05)
    with KmsClient(tls_agent.socket) as client:
        client.call("PutSecretValue", SecretName="poll/me", VersionId="v2",
                    SecretData=b"v2 value")
    waiter.join(timeout=60)
    assert throttled is not None
    assert throttled.code == "Rejected.Throttling"
    assert throttled.status_code == 429
    assert judge_need_back_off(throttled)
    assert waited["body"]["Changed"] is True


def test_dedicated_garbage_refused(tls_agent, ca_file):
    """The dedicated SDK gets typed errors for a bad key id and algorithm."""
    missing, = run_dkms(tls_agent, [{"api": "encrypt", "request": {
        "KeyId": "alias/none", "Plaintext": b64(b"x")}}],
        protocol="https", ca_file_path=ca_file)
    assert missing["error"]["code"] == "Forbidden.AliasNotFound"
