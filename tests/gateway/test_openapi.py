"""The OpenAPI face on a fake-keystore agent: signatures, parsing, replies.

Requests are signed the way the official SDK signs them (``harness``),
then run through ``openapi.handle`` with the real dispatcher, access
stage and store.
"""

from __future__ import annotations

import base64
import datetime
import json
import os

import pytest

from agent.context import Peer, RequestContext
from agent.gateway import openapi
from agent.gateway.http import HttpRequest
from tests.gateway import harness
from tests.gateway.harness import GatewayAgent, sign_acs3, sign_rpc


@pytest.fixture
async def agent(tmp_path):
    instance = GatewayAgent(tmp_path)
    yield instance
    await instance.store.aclose()


async def send(agent: GatewayAgent, request: HttpRequest) -> tuple[int, dict]:
    outcome = await openapi.handle(request, agent.gateway)
    return outcome.response.status, json.loads(outcome.response.body)


async def new_key(agent: GatewayAgent) -> str:
    status, body = await send(agent, sign_acs3(agent, "CreateKey", {}))
    assert status == 200
    return body["KeyMetadata"]["KeyId"]


def replace_header(request: HttpRequest, name: str, value: str) -> HttpRequest:
    headers = tuple((n, value if n == name else v) for n, v in request.headers)
    return HttpRequest(request.method, request.target, headers, request.body,
                       request.peer)


# --- success -----------------------------------------------------------------


async def test_acs3_encrypt_decrypt_round_trip(agent):
    """Encrypt and Decrypt signed with ACS3 return the text and context."""
    key_id = await new_key(agent)
    context = json.dumps({"app": "billing"})
    status, enc = await send(agent, sign_acs3(agent, "Encrypt", {
        "KeyId": key_id, "Plaintext": "h\u00e9llo + world",
        "EncryptionContext": context}))
    assert status == 200
    status, dec = await send(agent, sign_acs3(agent, "Decrypt", {
        "CiphertextBlob": enc["CiphertextBlob"], "EncryptionContext": context}))
    assert status == 200
    assert dec["Plaintext"] == "h\u00e9llo + world"
    assert dec["KeyId"] == key_id
    assert dec["RequestId"]


async def test_hmac_sha1_request_accepted(agent):
    """The older HMAC-SHA1 scheme signs requests too."""
    status, body = await send(agent, sign_rpc(agent, "ListKeys", {"PageSize": "5"}))
    assert status == 200
    assert body["PageSize"] == 5


async def test_form_body_parameters(agent):
    """Parameters in a form body reach the operation, as SecretData does."""
    request = sign_acs3(agent, "CreateSecret", {"SecretName": "db", "VersionId": "v1"},
                        form={"SecretData": "p&ss=w+rd"})
    status, _ = await send(agent, request)
    assert status == 200
    status, body = await send(agent, sign_acs3(agent, "GetSecretValue",
                                               {"SecretName": "db"}))
    assert status == 200
    assert body["SecretData"] == "p&ss=w+rd"
    assert body["VersionStages"] == {"VersionStage": ["ACSCurrent"]}


async def test_binary_secret_is_base64(agent):
    """A binary secret goes in and comes out as Base64 text."""
    data = base64.b64encode(b"\x00\xff\x10").decode()
    status, _ = await send(agent, sign_acs3(agent, "CreateSecret", {
        "SecretName": "bin", "VersionId": "v1", "SecretDataType": "binary",
        "SecretData": data}))
    assert status == 200
    _, body = await send(agent, sign_acs3(agent, "GetSecretValue",
                                          {"SecretName": "bin"}))
    assert body["SecretData"] == data
    assert body["SecretDataType"] == "binary"


async def test_data_key_decrypts_to_base64(agent):
    """A data key blob decrypts to the Base64 text of the key, as in the cloud."""
    key_id = await new_key(agent)
    _, made = await send(agent, sign_acs3(agent, "GenerateDataKey", {
        "KeyId": key_id, "NumberOfBytes": "16"}))
    assert len(base64.b64decode(made["Plaintext"])) == 16
    _, dec = await send(agent, sign_acs3(agent, "Decrypt", {
        "CiphertextBlob": made["CiphertextBlob"]}))
    assert dec["Plaintext"] == made["Plaintext"]


async def test_binary_plaintext_refused(agent):
    """A blob of binary plaintext cannot be returned as text."""
    key_id = await new_key(agent)
    ctx = RequestContext.new("Encrypt", Peer(os.getuid(), 0, 1))
    made = await agent.dispatcher.handle(ctx, {"KeyId": key_id,
                                               "Plaintext": b"\xff\xfe"})
    blob = base64.b64encode(made["CiphertextBlob"]).decode()
    status, body = await send(agent, sign_acs3(agent, "Decrypt",
                                               {"CiphertextBlob": blob}))
    assert status == 400
    assert body["Code"] == "UnsupportedOperation"


async def test_region_and_dry_run_false_dropped(agent):
    """RegionId and DryRun=false are accepted and ignored."""
    status, _ = await send(agent, sign_acs3(agent, "ListKeys", {
        "RegionId": "cn-hangzhou", "DryRun": "False"}))
    assert status == 200


async def test_boolean_true_text_accepted(agent):
    """Booleans may be True or False, as the Python SDK sends them."""
    status, body = await send(agent, sign_acs3(agent, "CreateKey", {
        "EnableAutomaticRotation": "True", "RotationInterval": "604800s"}))
    assert status == 200
    assert body["KeyMetadata"]["AutomaticRotation"] == "Enabled"


# --- authentication ----------------------------------------------------------


def assert_error(status: int, body: dict, code: str, http_status: int) -> None:
    assert status == http_status
    assert body["Code"] == code
    assert body["HttpStatus"] == http_status
    assert body["RequestId"]
    assert body["Message"]


async def test_wrong_secret_refused(agent):
    """A signature made with another secret is IncompleteSignature."""
    status, body = await send(agent, sign_acs3(agent, "ListKeys", {},
                                               secret="not-the-secret-000"))
    assert_error(status, body, "IncompleteSignature", 400)


async def test_tampered_query_refused(agent):
    """Changing a signed parameter breaks the signature."""
    request = sign_acs3(agent, "ListKeys", {"PageSize": "5"})
    tampered = HttpRequest(request.method, "/?PageSize=6", request.headers,
                           request.body, request.peer)
    status, body = await send(agent, tampered)
    assert_error(status, body, "IncompleteSignature", 400)


async def test_unknown_access_key_refused(agent):
    """An unknown AccessKey ID is InvalidAccessKeyId.NotFound."""
    status, body = await send(agent, sign_acs3(agent, "ListKeys", {},
                                               key_id="LTAInobody0000000001"))
    assert_error(status, body, "InvalidAccessKeyId.NotFound", 404)


async def test_stale_date_refused(agent):
    """A date 16 minutes old is IllegalTimestamp."""
    old = agent.clock.now() - datetime.timedelta(minutes=16)
    status, body = await send(agent, sign_acs3(
        agent, "ListKeys", {}, date=old.strftime("%Y-%m-%dT%H:%M:%SZ")))
    assert_error(status, body, "IllegalTimestamp", 400)


async def test_future_date_refused(agent):
    """A date 16 minutes ahead is IllegalTimestamp too."""
    late = agent.clock.now() + datetime.timedelta(minutes=16)
    status, body = await send(agent, sign_rpc(
        agent, "ListKeys", {}, timestamp=late.strftime("%Y-%m-%dT%H:%M:%SZ")))
    assert_error(status, body, "IllegalTimestamp", 400)


async def test_malformed_date_refused(agent):
    """A date in another format is IllegalTimestamp."""
    status, body = await send(agent, sign_acs3(agent, "ListKeys", {},
                                               date="Thu, 01 Jan 2026 00:00:00 GMT"))
    assert_error(status, body, "IllegalTimestamp", 400)


async def test_replayed_request_refused(agent):
    """The same signed request sent twice is refused the second time."""
    request = sign_acs3(agent, "ListKeys", {}, nonce="fixed-nonce-1")
    first, _ = await send(agent, request)
    status, body = await send(agent, request)
    assert first == 200
    assert_error(status, body, "SignatureNonceUsed", 400)


async def test_nonce_reusable_after_window(agent):
    """A nonce is forgotten once its window has passed."""
    first, _ = await send(agent, sign_rpc(agent, "ListKeys", {}, nonce="n-1"))
    agent.monotonic += 31 * 60
    second, _ = await send(agent, sign_rpc(agent, "ListKeys", {}, nonce="n-1"))
    assert first == 200
    assert second == 200


async def test_failed_signature_records_no_nonce(agent):
    """A forged request cannot burn the nonce of a later genuine one."""
    await send(agent, sign_acs3(agent, "ListKeys", {}, nonce="n-2",
                                secret="forged-secret-00000"))
    status, _ = await send(agent, sign_acs3(agent, "ListKeys", {}, nonce="n-2"))
    assert status == 200


async def test_unsigned_request_refused(agent):
    """A request with no signature is IncompleteSignature."""
    request = HttpRequest("POST", "/?Action=ListKeys&Version=2016-01-20",
                          (("host", "x"),), b"", Peer(None, None, None))
    status, body = await send(agent, request)
    assert_error(status, body, "IncompleteSignature", 400)


async def test_duplicate_authorization_refused(agent):
    """Two Authorization headers are IncompleteSignature."""
    request = sign_acs3(agent, "ListKeys", {})
    auth = dict(request.headers)["authorization"]
    doubled = HttpRequest(request.method, request.target,
                          (*request.headers, ("authorization", auth)),
                          request.body, request.peer)
    status, body = await send(agent, doubled)
    assert_error(status, body, "IncompleteSignature", 400)


async def test_duplicate_signed_header_refused(agent):
    """A second x-acs-date header is IncompleteSignature."""
    request = sign_acs3(agent, "ListKeys", {})
    doubled = HttpRequest(request.method, request.target,
                          (*request.headers, ("x-acs-date", agent.now_text())),
                          request.body, request.peer)
    status, body = await send(agent, doubled)
    assert_error(status, body, "IncompleteSignature", 400)


async def test_unsigned_acs_header_refused(agent):
    """An x-acs-* header outside SignedHeaders is IncompleteSignature."""
    request = sign_acs3(agent, "ListKeys", {})
    extra = HttpRequest(request.method, request.target,
                        (*request.headers, ("x-acs-action", "DeleteAlias")),
                        request.body, request.peer)
    status, body = await send(agent, extra)
    assert_error(status, body, "IncompleteSignature", 400)


async def test_body_hash_mismatch_refused(agent):
    """A body that does not match x-acs-content-sha256 is refused."""
    request = sign_acs3(agent, "CreateSecret", {"SecretName": "s", "VersionId": "v"},
                        form={"SecretData": "one"})
    swapped = HttpRequest(request.method, request.target, request.headers,
                          b"SecretData=two", request.peer)
    status, body = await send(agent, swapped)
    assert_error(status, body, "IncompleteSignature", 400)


async def test_other_algorithm_refused(agent):
    """ACS3-HMAC-SM3 and other schemes are IncompleteSignature."""
    request = sign_acs3(agent, "ListKeys", {})
    auth = dict(request.headers)["authorization"].replace(
        "ACS3-HMAC-SHA256", "ACS3-HMAC-SM3", 1)
    status, body = await send(agent, replace_header(request, "authorization", auth))
    assert_error(status, body, "IncompleteSignature", 400)


async def test_both_signature_forms_refused(agent):
    """An Authorization header and a Signature parameter together are refused."""
    request = sign_acs3(agent, "ListKeys", {"Signature": "abc"})
    status, body = await send(agent, request)
    assert_error(status, body, "IncompleteSignature", 400)


async def test_security_token_refused(agent):
    """STS tokens are not supported."""
    request = sign_acs3(agent, "ListKeys", {},
                        extra_headers={"x-acs-security-token": "token"})
    status, body = await send(agent, request)
    assert_error(status, body, "IncompleteSignature", 400)


# --- principals --------------------------------------------------------------


async def test_principal_without_grant_refused(agent):
    """The reader principal may read secrets but not encrypt."""
    key_id = await new_key(agent)
    status, body = await send(agent, sign_acs3(
        agent, "Encrypt", {"KeyId": key_id, "Plaintext": "x"},
        key_id=harness.READER_KEY_ID, secret=harness.READER_SECRET))
    assert_error(status, body, "Forbidden.NoPermission", 403)
    assert "reader" in body["Message"]


async def test_unconfigured_principal_refused(agent):
    """A credential naming an unconfigured principal is UnknownCaller."""
    status, body = await send(agent, sign_acs3(
        agent, "ListKeys", {}, key_id=harness.GHOST_KEY_ID,
        secret=harness.GHOST_SECRET))
    assert_error(status, body, "Forbidden.UnknownCaller", 403)


async def test_uid_principal_needs_client_key_flag(agent):
    """A credential naming a uid-only principal is refused."""
    agent.credentials_path.write_text(
        agent.credentials_path.read_text().replace('principal = "ghost"',
                                                   'principal = "owner"'))
    status, body = await send(agent, sign_acs3(
        agent, "ListKeys", {}, key_id=harness.GHOST_KEY_ID,
        secret=harness.GHOST_SECRET, peer=Peer(os.getuid(), 0, 1)))
    assert_error(status, body, "Forbidden.UnknownCaller", 403)


async def test_removed_access_key_refused(agent):
    """Deleting an AccessKey from the file revokes it at once."""
    text = agent.credentials_path.read_text()
    start = text.index(f"[access_keys.{harness.ACCESS_KEY_ID}]")
    end = text.index("[access_keys.", start + 1)
    agent.credentials_path.write_text(text[:start] + text[end:])
    status, body = await send(agent, sign_acs3(agent, "ListKeys", {}))
    assert_error(status, body, "InvalidAccessKeyId.NotFound", 404)


# --- parsing and parameters --------------------------------------------------


@pytest.mark.parametrize("target", ["/?a=%zz", "/?a", "/?=1", "/?a=1&&b=2",
                                    "/?a=%ff"])
async def test_malformed_query_refused(agent, target):
    """A malformed query string is ParseRequestParameterException."""
    request = HttpRequest("POST", target, (), b"", Peer(None, None, None))
    status, body = await send(agent, request)
    assert_error(status, body, "ParseRequestParameterException", 400)


async def test_duplicate_parameter_refused(agent):
    """A parameter given twice is ParseRequestParameterException."""
    request = HttpRequest("POST", "/?a=1&a=2", (), b"", Peer(None, None, None))
    status, body = await send(agent, request)
    assert_error(status, body, "ParseRequestParameterException", 400)


async def test_json_body_refused(agent):
    """A body that is not form data is ParseRequestParameterException."""
    request = HttpRequest("POST", "/", (("content-type", "application/json"),),
                          b"{}", Peer(None, None, None))
    status, body = await send(agent, request)
    assert_error(status, body, "ParseRequestParameterException", 400)


async def test_other_method_refused(agent):
    """PUT is UnsupportedHTTPMethod."""
    request = HttpRequest("PUT", "/", (), b"", Peer(None, None, None))
    status, body = await send(agent, request)
    assert_error(status, body, "UnsupportedHTTPMethod", 403)


async def test_other_path_refused(agent):
    """A path other than / is InvalidApiName."""
    request = HttpRequest("POST", "/v1/keys", (), b"", Peer(None, None, None))
    status, body = await send(agent, request)
    assert_error(status, body, "InvalidApiName", 400)


async def test_unknown_action_refused(agent):
    """An action that is no operation is InvalidApiName."""
    status, body = await send(agent, sign_acs3(agent, "MakeCoffee", {}))
    assert_error(status, body, "InvalidApiName", 400)


async def test_other_version_refused(agent):
    """A version other than 2016-01-20 is InvalidApiVersion."""
    status, body = await send(agent, sign_acs3(agent, "ListKeys", {}, extra_headers={
        "x-acs-version": "2020-01-01"}))
    assert_error(status, body, "InvalidApiVersion", 400)


async def test_unknown_parameter_refused(agent):
    """A parameter the operation does not take is InvalidParameter."""
    status, body = await send(agent, sign_acs3(agent, "ListKeys", {"Colour": "red"}))
    assert_error(status, body, "InvalidParameter", 400)
    assert "Colour" in body["Message"]


async def test_bad_base64_refused(agent):
    """A binary parameter that is not Base64 is InvalidParameter."""
    status, body = await send(agent, sign_acs3(agent, "Decrypt",
                                               {"CiphertextBlob": "not base64!"}))
    assert_error(status, body, "InvalidParameter", 400)


async def test_bad_integer_refused(agent):
    """An integer parameter that is not a number is InvalidParameter."""
    status, body = await send(agent, sign_acs3(agent, "ListKeys", {"PageSize": "ten"}))
    assert_error(status, body, "InvalidParameter", 400)


async def test_dry_run_true_refused(agent):
    """DryRun=true is UnsupportedOperation."""
    status, body = await send(agent, sign_acs3(agent, "ListKeys", {"DryRun": "true"}))
    assert_error(status, body, "UnsupportedOperation", 400)


async def test_xml_format_refused(agent):
    """Format=XML is InvalidParameter."""
    status, body = await send(agent, sign_acs3(agent, "ListKeys", {"Format": "XML"}))
    assert_error(status, body, "InvalidParameter", 400)


async def test_key_not_found_shape(agent):
    """A domain error keeps the cloud's code, status and fields."""
    status, body = await send(agent, sign_acs3(agent, "DescribeKey",
                                               {"KeyId": "key-missing"}))
    assert_error(status, body, "Forbidden.KeyNotFound", 404)
    assert set(body) == {"Code", "Message", "HttpStatus", "RequestId"}
