"""The OpenAPI face: Alibaba Cloud KMS RPC requests over HTTP, JSON replies.

This is what ``alibabacloud-kms20160120`` and the Secrets Manager
clients send: ``POST /`` (GET works too) with the action and version in
``x-acs-action``/``x-acs-version`` (or ``Action``/``Version`` in the
query), parameters in the query string and an optional form body, and a
signature by an AccessKey pair (``signing``). A request runs in steps,
each with its error in the cloud's shape (``{Code, Message, HttpStatus,
RequestId}`` with the same HTTP status):

1. parse: method, path, query and form (ParseRequestParameterException,
   UnsupportedHTTPMethod);
2. authenticate: signature parts, time within 15 minutes, AccessKey,
   signature, then the nonce (IncompleteSignature, IllegalTimestamp,
   InvalidAccessKeyId.NotFound, SignatureNonceUsed);
3. version and parameters (InvalidApiVersion, InvalidParameter), then
   the dispatcher, which runs the operation as for a socket caller.
"""

from __future__ import annotations

import datetime
import json
import re
import uuid
from typing import Any
from urllib.parse import unquote_to_bytes

from agent.gateway import codecs, signing
from agent.gateway.credentials import AccessKey
from agent.gateway.http import GatewayServices, HttpRequest, HttpResponse, Outcome
from client.errors import (
    IllegalTimestampError, IncompleteSignatureError, InvalidAccessKeyIdError,
    InvalidApiNameError, InvalidApiVersionError, InvalidParameterError, KmsError,
    MissingParameterError, ParseRequestError, SignatureNonceUsedError,
    UnsupportedHttpMethodError, UnsupportedOperationError,
)

API_VERSION = "2016-01-20"
FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"
JSON_CONTENT_TYPE = "application/json;charset=utf-8"
# Parameters of the protocol itself, never passed to an operation.
PROTOCOL_PARAMS = frozenset({
    "Action", "Version", "Format", "Timestamp", "SignatureNonce", "SignatureMethod",
    "SignatureVersion", "AccessKeyId", "Signature", "SignatureType",
})
_ACS3_REQUIRED = ("host", "x-acs-date", "x-acs-signature-nonce",
                  "x-acs-content-sha256")
_RPC_REQUIRED = ("AccessKeyId", "SignatureMethod", "SignatureVersion", "Timestamp",
                 "SignatureNonce")
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


async def handle(request: HttpRequest, services: GatewayServices) -> Outcome:
    """Serve one OpenAPI request; every failure becomes an error reply."""
    action = None
    try:
        query, form = parse_request(request)
        params = merge_params(query, form)
        key, action, version = authenticate(request, query, form, params, services)
        values = operation_params(services, action, version, params)
    except KmsError as error:
        error.request_id = error.request_id or str(uuid.uuid4())
        return Outcome(error_response(error), error, action)
    try:
        result = await services.dispatch(action, request.peer, key.principal,
                                         key.access_key_id, values)
    except KmsError as error:
        return Outcome(error_response(error))
    try:
        body = render_reply(action, values, result)
    except KmsError as error:
        error.request_id = result.get("RequestId")
        return Outcome(error_response(error), error, action)
    return Outcome(json_response(200, body))


# --- parsing ----------------------------------------------------------------


def parse_request(request: HttpRequest) -> tuple[list[tuple[str, str]],
                                                 list[tuple[str, str]]]:
    """Return the query and form parameters of a request.

    Raises:
        UnsupportedHttpMethodError: not POST or GET.
        InvalidApiNameError: the path is not ``/``.
        ParseRequestError: a malformed query or body, or a body that is
            not form data.
    """
    if request.method not in ("POST", "GET"):
        raise UnsupportedHttpMethodError(
            f"The HTTP method {request.method} is not supported; use POST.")
    if request.path != "/":
        raise InvalidApiNameError(
            f"The path {request.path!r} is not an API; send requests to /.")
    query = parse_form(request.query, "query string")
    form: list[tuple[str, str]] = []
    if request.body:
        content_types = request.header_values("content-type")
        media_type = content_types[0].split(";")[0].strip().lower() if len(
            content_types) == 1 else None
        if media_type != FORM_CONTENT_TYPE:
            raise ParseRequestError(
                f"A request body must be {FORM_CONTENT_TYPE}; got Content-Type "
                f"{', '.join(content_types) or 'none'}.")
        try:
            text = request.body.decode("ascii")
        except UnicodeDecodeError:
            raise ParseRequestError(
                "The form body must be ASCII, with other characters "
                "percent-encoded.") from None
        form = parse_form(text, "form body")
    return query, form


def parse_form(text: str, where: str) -> list[tuple[str, str]]:
    """Parse ``name=value&...`` text strictly; ``+`` stands for a space.

    Raises:
        ParseRequestError: an empty field, a field without ``=``, a bad
            percent escape or bytes that are not UTF-8.
    """
    if not text:
        return []
    pairs = []
    for field in text.split("&"):
        name, sep, value = field.partition("=")
        if not sep or not name:
            # The field is not quoted: it could be part of a plaintext.
            raise ParseRequestError(f"The {where} has a field that is not name=value.")
        pairs.append((_unquote(name, where), _unquote(value, where)))
    return pairs


def _unquote(text: str, where: str) -> str:
    if _BAD_ESCAPE.search(text):
        raise ParseRequestError(f"The {where} has a malformed percent escape.")
    try:
        return unquote_to_bytes(text.replace("+", " ")).decode("utf-8")
    except UnicodeDecodeError:
        raise ParseRequestError(f"The {where} is not UTF-8 once decoded.") from None


def merge_params(query: list[tuple[str, str]],
                 form: list[tuple[str, str]]) -> dict[str, str]:
    """Merge query and form parameters; a name may appear once in all.

    Raises:
        ParseRequestError: a parameter appears twice.
    """
    params: dict[str, str] = {}
    for name, value in [*query, *form]:
        if name in params:
            raise ParseRequestError(f"The parameter {name} appears more than once.")
        params[name] = value
    return params


# --- authentication ---------------------------------------------------------


def authenticate(request: HttpRequest, query: list[tuple[str, str]],
                 form: list[tuple[str, str]], params: dict[str, str],
                 services: GatewayServices) -> tuple[AccessKey, str, str]:
    """Verify the request's signature; return the key, action and version.

    Raises:
        IncompleteSignatureError, IllegalTimestampError,
        InvalidAccessKeyIdError, SignatureNonceUsedError: the request is
            not signed by a known AccessKey within the time window, or
            was seen before.
        MissingParameterError: the action or version is missing.
        ParseRequestError: the action or version is given twice, with
            different values.
    """
    authorizations = request.header_values("authorization")
    if len(authorizations) > 1:
        raise IncompleteSignatureError("The Authorization header appears twice.")
    if request.header_values("x-acs-security-token") or "SecurityToken" in params:
        raise IncompleteSignatureError(
            "STS security tokens are not supported; sign with an AccessKey pair.")
    if authorizations and "Signature" in params:
        raise IncompleteSignatureError(
            "The request carries both an Authorization header and a Signature "
            "parameter; send one.")
    if authorizations:
        key, nonce = _verify_acs3(request, query, authorizations[0], services)
    elif "Signature" in params:
        key, nonce = _verify_rpc(request, query, form, params, services)
    else:
        raise IncompleteSignatureError(
            "The request is not signed: send an ACS3-HMAC-SHA256 Authorization "
            "header or an HMAC-SHA1 Signature parameter.")
    if not services.nonces.check_and_add(key.access_key_id, nonce):
        raise SignatureNonceUsedError(
            f"The signature nonce {nonce[:64]!r} was used before; sign every "
            "request with a new nonce.")
    action = _named(request, params, "x-acs-action", "Action")
    version = _named(request, params, "x-acs-version", "Version")
    return key, action, version


def _verify_acs3(request: HttpRequest, query: list[tuple[str, str]],
                 authorization: str, services: GatewayServices
                 ) -> tuple[AccessKey, str]:
    fields = _authorization_fields(authorization)
    signed = fields["SignedHeaders"].split(";")
    headers: dict[str, list[str]] = {}
    for name, value in request.headers:
        headers.setdefault(name, []).append(value)
    for name in _ACS3_REQUIRED:
        if len(headers.get(name, [])) != 1:
            raise IncompleteSignatureError(f"The header {name} must appear once.")
    must_sign = {*_ACS3_REQUIRED, *(n for n in headers if n.startswith("x-acs-"))}
    if "content-type" in headers:
        must_sign.add("content-type")
    unsigned = sorted(must_sign - set(signed))
    if unsigned or not set(signed) <= set(headers):
        raise IncompleteSignatureError(
            "SignedHeaders must list the present headers host, content-type and "
            f"x-acs-*; check {', '.join(unsigned) or fields['SignedHeaders']}.")
    payload = request.body_sha256()
    if headers["x-acs-content-sha256"][0].strip().lower() != payload:
        raise IncompleteSignatureError(
            "The x-acs-content-sha256 header does not match the request body.")
    _check_time(headers["x-acs-date"][0], "x-acs-date", services)
    key = _access_key(services, fields["Credential"])
    canonical = signing.acs3_canonical_request(
        request.method, request.path, query, headers, signed, payload)
    expected = signing.acs3_signature(key.secret, canonical)
    if not signing.same_signature(expected, fields["Signature"]):
        raise IncompleteSignatureError(
            "The request signature does not match; check the AccessKey secret "
            "and the canonical request.")
    return key, headers["x-acs-signature-nonce"][0]


def _authorization_fields(authorization: str) -> dict[str, str]:
    scheme, _, rest = authorization.strip().partition(" ")
    if scheme != signing.ACS3_HMAC_SHA256:
        raise IncompleteSignatureError(
            f"The signature algorithm {scheme[:40]!r} is not supported; use "
            f"{signing.ACS3_HMAC_SHA256} or HMAC-SHA1.")
    fields: dict[str, str] = {}
    for part in rest.split(","):
        name, sep, value = part.strip().partition("=")
        if not sep or name in fields:
            raise IncompleteSignatureError("The Authorization header is malformed.")
        fields[name] = value
    if set(fields) != {"Credential", "SignedHeaders", "Signature"}:
        raise IncompleteSignatureError(
            "The Authorization header needs Credential, SignedHeaders and "
            "Signature, and nothing else.")
    return fields


def _verify_rpc(request: HttpRequest, query: list[tuple[str, str]],
                form: list[tuple[str, str]], params: dict[str, str],
                services: GatewayServices) -> tuple[AccessKey, str]:
    for name in _RPC_REQUIRED:
        if not params.get(name):
            raise IncompleteSignatureError(f"The parameter {name} is missing.")
    if (params["SignatureMethod"] != signing.RPC_HMAC_SHA1
            or params["SignatureVersion"] != signing.RPC_SIGNATURE_VERSION):
        raise IncompleteSignatureError(
            "SignatureMethod must be HMAC-SHA1 and SignatureVersion 1.0.")
    _check_time(params["Timestamp"], "Timestamp", services)
    key = _access_key(services, params["AccessKeyId"])
    signed = [(name, value) for name, value in [*query, *form] if name != "Signature"]
    expected = signing.rpc_signature(
        key.secret, signing.rpc_string_to_sign(request.method, signed))
    if not signing.same_signature(expected, params["Signature"]):
        raise IncompleteSignatureError(
            "The request signature does not match; check the AccessKey secret "
            "and the string to sign.")
    return key, params["SignatureNonce"]


def _check_time(text: str, name: str, services: GatewayServices) -> None:
    try:
        moment = datetime.datetime.strptime(text.strip(), _TIME_FORMAT).replace(
            tzinfo=datetime.timezone.utc)
    except ValueError:
        raise IllegalTimestampError(
            f"{name} {text[:40]!r} is not a UTC time such as 2026-01-31T08:00:00Z.") \
            from None
    if not services.within_skew(moment):
        raise IllegalTimestampError(
            f"{name} {text!r} is more than 15 minutes from the agent's clock; "
            "check the client's clock.")


def _access_key(services: GatewayServices, access_key_id: str) -> AccessKey:
    key = services.credentials.current().access_keys.get(access_key_id)
    if key is None:
        raise InvalidAccessKeyIdError(
            f"The AccessKey ID {access_key_id[:128]!r} is not found.")
    return key


def _named(request: HttpRequest, params: dict[str, str], header: str,
           param: str) -> str:
    # The action and version may come as a header, a parameter or both.
    values = {*request.header_values(header)}
    if param in params:
        values.add(params[param])
    if not values:
        raise MissingParameterError(f"The parameter {param} is required.")
    if len(values) > 1:
        raise ParseRequestError(
            f"The {param} parameter and the {header} header disagree.")
    return values.pop()


# --- operation and reply ----------------------------------------------------


def operation_params(services: GatewayServices, action: str, version: str,
                     params: dict[str, str]) -> dict[str, Any]:
    """Return the operation parameters, converted to their kinds.

    RegionId is dropped unless the operation takes it (the agent is one
    region), and so is DryRun=false; DryRun=true is refused.

    Raises:
        InvalidApiVersionError: the version is not 2016-01-20.
        InvalidParameterError: Format is not JSON, or a value is invalid.
        UnsupportedOperationError: DryRun is true.
    """
    if version != API_VERSION:
        raise InvalidApiVersionError(
            f"The API version {version[:40]!r} is not supported; use {API_VERSION}.")
    if params.get("Format", "json").lower() != "json":
        raise InvalidParameterError("Format must be JSON; the agent replies in JSON.")
    values = {name: value for name, value in params.items()
              if name not in PROTOCOL_PARAMS}
    operation = services.dispatcher.operations.get(action)
    declared = {param.name for param in operation.params} if operation else set()
    if "RegionId" not in declared:
        values.pop("RegionId", None)
    if "DryRun" not in declared and "DryRun" in values:
        if values.pop("DryRun").lower() == "true":
            raise UnsupportedOperationError("DryRun is not supported by the agent.")
    return codecs.decode_params(operation, values)


def render_reply(action: str, values: dict[str, Any],
                 result: dict[str, Any]) -> dict[str, Any]:
    """Return the JSON reply of a result, with Decrypt's plaintext as text."""
    reply = dict(result)
    if action == "Decrypt" and isinstance(reply.get("Plaintext"), bytes):
        reply["Plaintext"] = codecs.render_plaintext(
            values["CiphertextBlob"], reply["Plaintext"])
    return codecs.encode_reply(reply)


def json_response(status: int, body: dict[str, Any]) -> HttpResponse:
    """Return a JSON response with the request id also as a header."""
    data = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
    headers = [("content-type", JSON_CONTENT_TYPE)]
    if isinstance(body.get("RequestId"), str):
        headers.append(("x-acs-request-id", body["RequestId"]))
    return HttpResponse(status, headers, data.encode("utf-8"))


def error_response(error: KmsError) -> HttpResponse:
    """Return the cloud's error reply: Code, Message, HttpStatus, RequestId."""
    return json_response(error.http_status, error.to_wire())
