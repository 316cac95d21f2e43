"""The dedicated-instance face on a fake-keystore agent.

Requests are protobuf bodies signed by an RSA client key the way the
dkms-gcs SDK signs them (``harness.sign_dkms``), run through
``dkms.handle`` with the real dispatcher, access stage and store.
"""

from __future__ import annotations

import base64
import email.utils
import os
import time

import pytest

from agent.context import Peer, RequestContext
from agent.gateway import dkms, messages, protobuf
from agent.gateway.dkms_apis import encryption_context
from agent.gateway.http import HttpRequest
from tests.gateway import harness
from tests.gateway.harness import GatewayAgent, sign_dkms


@pytest.fixture
async def agent(tmp_path):
    instance = GatewayAgent(tmp_path)
    yield instance
    await instance.store.aclose()


def body(api: str, **fields) -> bytes:
    return protobuf.encode(messages.REQUESTS[api], fields)


async def call(agent: GatewayAgent, request: HttpRequest) -> tuple[int, dict]:
    api = dict(request.headers).get("x-kms-apiname")
    outcome = await dkms.handle(request, agent.gateway)
    response = outcome.response
    assert ("content-type", "application/x-protobuf") in response.headers
    schema = messages.RESPONSES[api] if response.status == 200 else messages.ERROR
    return response.status, protobuf.decode(schema, response.body)


def owner_context(op: str) -> RequestContext:
    return RequestContext.new(op, Peer(os.getuid(), 0, 1))


async def new_key(agent: GatewayAgent) -> str:
    reply = await agent.dispatcher.handle(owner_context("CreateKey"), {})
    return reply["KeyMetadata"]["KeyId"]


def assert_error(status: int, error: dict, code: str, http_status: int) -> None:
    assert status == http_status
    assert error["StatusCode"] == http_status
    assert error["ErrorCode"] == code
    assert error["RequestId"]
    assert error["ErrorMessage"]


# --- success -----------------------------------------------------------------


async def test_encrypt_decrypt_round_trip(agent):
    """Encrypt returns the blob and its IV; Decrypt takes both back."""
    key_id = await new_key(agent)
    status, enc = await call(agent, sign_dkms("Encrypt", body(
        "Encrypt", KeyId=key_id, Plaintext=b"\x00binary\xff", Aad=b'{"a":"b"}')))
    assert status == 200
    assert enc["Iv"] == enc["CiphertextBlob"][37:49]
    assert enc["Algorithm"] == "AES_GCM"
    status, dec = await call(agent, sign_dkms("Decrypt", body(
        "Decrypt", KeyId=key_id, CiphertextBlob=enc["CiphertextBlob"],
        Iv=enc["Iv"], Aad=b'{"a":"b"}')))
    assert status == 200
    assert dec["Plaintext"] == b"\x00binary\xff"
    assert dec["KeyId"] == key_id


async def test_advance_encrypt_returns_version(agent):
    """AdvanceEncrypt and AdvanceDecrypt report the key version."""
    key_id = await new_key(agent)
    _, enc = await call(agent, sign_dkms("AdvanceEncrypt", body(
        "AdvanceEncrypt", KeyId=key_id, Plaintext=b"x")))
    _, dec = await call(agent, sign_dkms("AdvanceDecrypt", body(
        "AdvanceDecrypt", CiphertextBlob=enc["CiphertextBlob"])))
    assert enc["KeyVersionId"]
    assert dec["KeyVersionId"] == enc["KeyVersionId"]


async def test_wrong_aad_fails_decrypt(agent):
    """Decrypt with another Aad is InvalidCiphertext."""
    key_id = await new_key(agent)
    _, enc = await call(agent, sign_dkms("Encrypt", body(
        "Encrypt", KeyId=key_id, Plaintext=b"x", Aad=b"raw aad")))
    status, error = await call(agent, sign_dkms("Decrypt", body(
        "Decrypt", CiphertextBlob=enc["CiphertextBlob"], Aad=b"other aad")))
    assert_error(status, error, "InvalidCiphertext", 400)


async def test_generate_data_key_raw_bytes(agent):
    """GenerateDataKey returns raw key bytes, and Decrypt gives them back."""
    key_id = await new_key(agent)
    _, made = await call(agent, sign_dkms("GenerateDataKey", body(
        "GenerateDataKey", KeyId=key_id, NumberOfBytes=24)))
    assert len(made["Plaintext"]) == 24
    _, dec = await call(agent, sign_dkms("Decrypt", body(
        "Decrypt", CiphertextBlob=made["CiphertextBlob"])))
    assert dec["Plaintext"] == made["Plaintext"]


async def test_get_secret_value_fields(agent):
    """GetSecretValue flattens the version stages into a repeated field."""
    await agent.dispatcher.handle(owner_context("CreateSecret"), {
        "SecretName": "db", "VersionId": "v1", "SecretData": "pw"})
    status, value = await call(agent, sign_dkms("GetSecretValue", body(
        "GetSecretValue", SecretName="db")))
    assert status == 200
    assert value["SecretData"] == "pw"
    assert value["VersionStages"] == ["ACSCurrent"]
    assert value["VersionId"] == "v1"


async def test_generate_random_length(agent):
    """GenerateRandom returns the requested number of bytes."""
    status, reply = await call(agent, sign_dkms("GenerateRandom", body(
        "GenerateRandom", Length=20)))
    assert status == 200
    assert len(reply["Random"]) == 20


def test_aad_json_object_is_context():
    """A JSON object of strings as Aad is that EncryptionContext."""
    assert encryption_context(b'{"k":"v"}') == {"k": "v"}


def test_aad_other_bytes_wrapped():
    """Other Aad bytes become one Base64 context entry."""
    assert encryption_context(b"\x01[1]") == {
        "Aad": base64.b64encode(b"\x01[1]").decode()}


# --- authentication ----------------------------------------------------------


async def test_unknown_client_key_refused(agent):
    """An unknown client key id is Unauthorized."""
    status, error = await call(agent, sign_dkms(
        "GenerateRandom", body("GenerateRandom", Length=4), key_id="KAAP.nobody"))
    assert_error(status, error, "Unauthorized", 401)


async def test_other_private_key_refused(agent):
    """A signature by another RSA key is Unauthorized."""
    status, error = await call(agent, sign_dkms(
        "GenerateRandom", body("GenerateRandom", Length=4),
        private_key=harness.client_private_key("intruder")))
    assert_error(status, error, "Unauthorized", 401)


async def test_expired_client_key_refused(agent):
    """A key past its not_after is Unauthorized."""
    status, error = await call(agent, sign_dkms(
        "GenerateRandom", body("GenerateRandom", Length=4),
        key_id=harness.EXPIRED_CLIENT_KEY_ID))
    assert_error(status, error, "Unauthorized", 401)
    assert "validity" in error["ErrorMessage"]


async def test_stale_date_refused(agent):
    """A date 16 minutes old is RequestTimeTooSkewed."""
    old = email.utils.formatdate(time.time() - 16 * 60, usegmt=True)
    status, error = await call(agent, sign_dkms(
        "GenerateRandom", body("GenerateRandom", Length=4), date=old))
    assert_error(status, error, "RequestTimeTooSkewed", 400)


async def test_tampered_body_refused(agent):
    """A body that does not match content-sha256 is refused."""
    request = sign_dkms("GenerateRandom", body("GenerateRandom", Length=4))
    swapped = HttpRequest(request.method, request.target, request.headers,
                          body("GenerateRandom", Length=5), request.peer)
    status, error = await call(agent, swapped)
    assert_error(status, error, "InvalidParameter", 400)


async def test_tampered_header_refused(agent):
    """Changing a signed x-kms-* header breaks the signature."""
    request = sign_dkms("GenerateRandom", body("GenerateRandom", Length=4),
                        extra=(("x-kms-migrationkeyversionid", "v"),))
    headers = tuple((n, "w" if n == "x-kms-migrationkeyversionid" else v)
                    for n, v in request.headers)
    status, error = await call(agent, HttpRequest(
        request.method, request.target, headers, request.body, request.peer))
    assert_error(status, error, "Unauthorized", 401)


async def test_duplicate_signed_header_refused(agent):
    """A second x-kms-apiname header is InvalidParameter."""
    request = sign_dkms("GenerateRandom", body("GenerateRandom", Length=4),
                        extra=(("x-kms-apiname", "Encrypt"),))
    status, error = await call(agent, request)
    assert_error(status, error, "InvalidParameter", 400)


async def test_missing_authorization_refused(agent):
    """A request without authorization is MissingParameter."""
    request = sign_dkms("GenerateRandom", body("GenerateRandom", Length=4))
    headers = tuple(h for h in request.headers if h[0] != "authorization")
    status, error = await call(agent, HttpRequest(
        request.method, request.target, headers, request.body, request.peer))
    assert_error(status, error, "MissingParameter", 400)


async def test_non_bearer_authorization_refused(agent):
    """An authorization that is not Bearer is Unauthorized."""
    request = sign_dkms("GenerateRandom", body("GenerateRandom", Length=4))
    headers = tuple((n, "Basic abc" if n == "authorization" else v)
                    for n, v in request.headers)
    status, error = await call(agent, HttpRequest(
        request.method, request.target, headers, request.body, request.peer))
    assert_error(status, error, "Unauthorized", 401)


# --- bad input ---------------------------------------------------------------


async def test_protobuf_garbage_refused(agent):
    """A body that is not protobuf is InvalidParameter."""
    status, error = await call(agent, sign_dkms("Encrypt", b"\x0a\xff\x01garbage"))
    assert_error(status, error, "InvalidParameter", 400)


async def test_unknown_api_refused(agent):
    """An API the agent does not serve is InvalidApiName."""
    request = sign_dkms("Hash", b"")
    outcome = await dkms.handle(request, agent.gateway)
    error = protobuf.decode(messages.ERROR, outcome.response.body)
    assert_error(outcome.response.status, error, "InvalidApiName", 400)


async def test_other_version_refused(agent):
    """An API version other than dkms-gcs-0.2 is InvalidApiVersion."""
    request = sign_dkms("GenerateRandom", body("GenerateRandom", Length=4))
    headers = tuple((n, "dkms-gcs-0.1" if n == "x-kms-apiversion" else v)
                    for n, v in request.headers)
    status, error = await call(agent, HttpRequest(
        request.method, request.target, headers, request.body, request.peer))
    assert_error(status, error, "InvalidApiVersion", 400)


async def test_wrong_content_type_refused(agent):
    """A JSON content type is InvalidParameter."""
    request = sign_dkms("GenerateRandom", body("GenerateRandom", Length=4))
    headers = tuple((n, "application/json" if n == "content-type" else v)
                    for n, v in request.headers)
    outcome = await dkms.handle(HttpRequest(
        request.method, request.target, headers, request.body, request.peer),
        agent.gateway)
    error = protobuf.decode(messages.ERROR, outcome.response.body)
    assert_error(outcome.response.status, error, "InvalidParameter", 400)


async def test_encrypt_with_iv_refused(agent):
    """The agent chooses the IV, so an Encrypt Iv is InvalidParameter."""
    key_id = await new_key(agent)
    status, error = await call(agent, sign_dkms("Encrypt", body(
        "Encrypt", KeyId=key_id, Plaintext=b"x", Iv=b"\x00" * 12)))
    assert_error(status, error, "InvalidParameter", 400)


async def test_cbc_algorithm_refused(agent):
    """AES_CBC is UnsupportedOperation."""
    key_id = await new_key(agent)
    status, error = await call(agent, sign_dkms("Encrypt", body(
        "Encrypt", KeyId=key_id, Plaintext=b"x", Algorithm="AES_CBC")))
    assert_error(status, error, "UnsupportedOperation", 400)


async def test_decrypt_with_wrong_iv_refused(agent):
    """An Iv that is not the blob's is InvalidParameter."""
    key_id = await new_key(agent)
    _, enc = await call(agent, sign_dkms("Encrypt", body(
        "Encrypt", KeyId=key_id, Plaintext=b"x")))
    status, error = await call(agent, sign_dkms("Decrypt", body(
        "Decrypt", CiphertextBlob=enc["CiphertextBlob"], Iv=b"\x01" * 12)))
    assert_error(status, error, "InvalidParameter", 400)


async def test_decrypt_under_other_key_id_refused(agent):
    """Decrypt naming another key than the blob's is InvalidParameter."""
    key_id = await new_key(agent)
    other = await new_key(agent)
    _, enc = await call(agent, sign_dkms("Encrypt", body(
        "Encrypt", KeyId=key_id, Plaintext=b"x")))
    status, error = await call(agent, sign_dkms("Decrypt", body(
        "Decrypt", KeyId=other, CiphertextBlob=enc["CiphertextBlob"])))
    assert_error(status, error, "InvalidParameter", 400)


async def test_missing_key_id_refused(agent):
    """An Encrypt without KeyId is MissingParameter from the dispatcher."""
    status, error = await call(agent, sign_dkms("Encrypt", body(
        "Encrypt", Plaintext=b"x")))
    assert_error(status, error, "MissingParameter", 400)


def test_dkms_detection_by_header():
    """A request with x-kms-* headers or protobuf is a dedicated request."""
    request = sign_dkms("Encrypt", b"")
    plain = HttpRequest("POST", "/", (("content-type", "application/json"),), b"",
                        request.peer)
    assert dkms.is_dkms_request(request)
    assert not dkms.is_dkms_request(plain)


def test_error_message_fields():
    """An Error message carries status, code, message and request id."""
    from client.errors import ThrottlingError

    error = ThrottlingError(request_id="r-1")
    decoded = protobuf.decode(messages.ERROR, dkms.error_response(error).body)
    assert decoded == {"StatusCode": 429, "ErrorCode": "Rejected.Throttling",
                       "ErrorMessage": error.message, "RequestId": "r-1"}
