"""The dedicated-instance face: the dkms-gcs SDK's protobuf protocol.

A request is ``POST /`` with a protobuf body (``messages``), the API in
``x-kms-apiname`` (version ``x-kms-apiversion: dkms-gcs-0.2``) and an
RSA client key signature::

    authorization: Bearer base64(RSA PKCS#1 v1.5 SHA-256 signature of
        METHOD\\n content-sha256\\n content-type\\n date\\n
        x-kms-* headers, sorted, as "name:value\\n"  then "/")

``x-kms-acccesskeyid`` (spelled with three c's, as the SDK sends it)
names the client key; ``content-sha256`` is the upper-case hex SHA-256
of the body and ``date`` an RFC 1123 time within 15 minutes. Errors are
a protobuf ``Error`` message with the same HTTP status. A bad or unknown
key and a bad signature are one code, Unauthorized, so a caller without
the private key learns nothing about key ids.

The protocol carries no nonce, and two honest identical calls in the
same second sign to the same bytes, so replays inside the 15 minutes
are served; every API here reads or computes, none changes state.
``dkms_apis`` maps each API onto the shared operation table.
"""

from __future__ import annotations

import base64
import binascii
import email.utils
import functools
import hashlib
import uuid
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from agent.gateway import messages, protobuf
from agent.gateway.credentials import ClientKey
from agent.gateway.dkms_apis import APIS
from agent.gateway.http import GatewayServices, HttpRequest, HttpResponse, Outcome
from client.errors import (
    InvalidApiNameError, InvalidApiVersionError, InvalidParameterError, KmsError,
    MissingParameterError, RequestTimeTooSkewedError, UnauthorizedError,
    UnsupportedHttpMethodError,
)

API_VERSION = "dkms-gcs-0.2"
SIGNATURE_METHOD = "RSA_PKCS1_SHA_256"
PROTOBUF_CONTENT_TYPE = "application/x-protobuf"
KEY_ID_HEADER = "x-kms-acccesskeyid"
_SIGNED_SINGLE = ("content-type", "content-sha256", "date", "authorization",
                  "x-kms-apiname", "x-kms-apiversion", "x-kms-signaturemethod",
                  KEY_ID_HEADER)


def is_dkms_request(request: HttpRequest) -> bool:
    """Return whether a request speaks this protocol rather than OpenAPI."""
    if any(name.startswith("x-kms-") for name, _ in request.headers):
        return True
    return any(value.split(";")[0].strip().lower() == PROTOBUF_CONTENT_TYPE
               for value in request.header_values("content-type"))


async def handle(request: HttpRequest, services: GatewayServices) -> Outcome:
    """Serve one dedicated-instance request; failures become Error replies."""
    api_name = None
    try:
        headers = _single_headers(request)
        api_name = _check_api(request, headers)
        client_key = authenticate(request, headers, services)
        decoded = _decode_body(api_name, request.body)
    except KmsError as error:
        error.request_id = error.request_id or str(uuid.uuid4())
        return Outcome(error_response(error), error, api_name)
    api = APIS[api_name]
    try:
        reply = await api.run(services, request.peer, client_key, decoded)
    except KmsError as error:
        refused = None if error.request_id else error
        error.request_id = error.request_id or str(uuid.uuid4())
        return Outcome(error_response(error), refused, api_name)
    body = protobuf.encode(messages.RESPONSES[api_name], reply)
    return Outcome(HttpResponse(200, [("content-type", PROTOBUF_CONTENT_TYPE)], body))


def _single_headers(request: HttpRequest) -> dict[str, str]:
    # Each header the signature covers must appear once, so that the
    # signed value is the one acted on.
    if request.method != "POST":
        raise UnsupportedHttpMethodError(
            f"The HTTP method {request.method} is not supported; use POST.")
    headers = {}
    for name, value in request.headers:
        if name in headers and (name in _SIGNED_SINGLE or name.startswith("x-kms-")):
            raise InvalidParameterError(f"The header {name} appears more than once.")
        headers[name] = value
    return headers


def _check_api(request: HttpRequest, headers: dict[str, str]) -> str:
    version = headers.get("x-kms-apiversion")
    if version != API_VERSION:
        raise InvalidApiVersionError(
            f"x-kms-apiversion {str(version)[:40]!r} is not supported; use "
            f"{API_VERSION}.")
    name = headers.get("x-kms-apiname")
    if name not in APIS:
        raise InvalidApiNameError(
            f"x-kms-apiname {str(name)[:64]!r} is not a supported API; the agent "
            f"serves {', '.join(sorted(APIS))}.")
    if request.path != "/":
        raise InvalidApiNameError(
            f"The path {request.path!r} is not an API; send requests to /.")
    media_type = headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != PROTOBUF_CONTENT_TYPE:
        raise InvalidParameterError(
            f"Content-Type must be {PROTOBUF_CONTENT_TYPE}.")
    return name


def authenticate(request: HttpRequest, headers: dict[str, str],
                 services: GatewayServices) -> ClientKey:
    """Verify the client key signature of a request; return the key.

    Raises:
        MissingParameterError: a required header is missing.
        RequestTimeTooSkewedError: the date is malformed or more than 15
            minutes off.
        InvalidParameterError: the signature method or body hash header
            is wrong.
        UnauthorizedError: the key is unknown or outside its validity,
            or the signature does not verify.
    """
    for name in ("date", "content-sha256", "authorization", KEY_ID_HEADER,
                 "x-kms-signaturemethod"):
        if name not in headers:
            raise MissingParameterError(f"The header {name} is required.")
    if headers["x-kms-signaturemethod"] != SIGNATURE_METHOD:
        raise InvalidParameterError(
            f"x-kms-signaturemethod must be {SIGNATURE_METHOD}.")
    if headers["content-sha256"].strip().upper() != hashlib.sha256(
            request.body).hexdigest().upper():
        raise InvalidParameterError(
            "The content-sha256 header does not match the request body.")
    _check_date(headers["date"], services)
    signature = _bearer(headers["authorization"])
    key = services.credentials.current().client_keys.get(headers[KEY_ID_HEADER])
    # An unknown key id costs the same verification as a forged signature.
    public_key = key.public_key if key is not None else _decoy_key()
    try:
        public_key.verify(signature, string_to_sign(request.method, headers),
                          padding.PKCS1v15(), hashes.SHA256())
    except (InvalidSignature, ValueError):
        raise UnauthorizedError() from None
    if key is None:
        raise UnauthorizedError()
    if not key.valid_at(services.clock.now()):
        raise UnauthorizedError(
            f"The client key {key.client_key_id} is outside its validity period.")
    return key


@functools.lru_cache(maxsize=1)
def _decoy_key() -> rsa.RSAPublicKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()


def string_to_sign(method: str, headers: dict[str, str]) -> bytes:
    """Return the bytes a client key signs for one request."""
    signed = "".join(f"{name}:{value.strip()}\n" for name, value in sorted(
        headers.items()) if name.startswith("x-kms-"))
    return (f"{method}\n{headers.get('content-sha256', '')}\n"
            f"{headers.get('content-type', '')}\n{headers.get('date', '')}\n"
            f"{signed}/").encode("utf-8")


def _check_date(text: str, services: GatewayServices) -> None:
    try:
        moment = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        moment = None
    if moment is None or moment.tzinfo is None:
        raise RequestTimeTooSkewedError(
            f"The date header {text[:64]!r} is not an RFC 1123 time in GMT.")
    if not services.within_skew(moment):
        raise RequestTimeTooSkewedError(
            f"The date {text!r} is more than 15 minutes from the agent's clock; "
            "check the client's clock.")


def _bearer(authorization: str) -> bytes:
    scheme, _, token = authorization.strip().partition(" ")
    try:
        if scheme != "Bearer":
            raise ValueError(scheme)
        return base64.b64decode(token.strip(), validate=True)
    except (ValueError, binascii.Error):
        raise UnauthorizedError(
            "The authorization header must be Bearer and a Base64 signature.") \
            from None


def _decode_body(api_name: str, body: bytes) -> dict[str, Any]:
    try:
        return protobuf.decode(messages.REQUESTS[api_name], body)
    except protobuf.DecodeError as exc:
        raise InvalidParameterError(f"The request body is not valid protobuf: {exc}.") \
            from None


def error_response(error: KmsError) -> HttpResponse:
    """Return an ``Error`` message with the error's HTTP status."""
    body = protobuf.encode(messages.ERROR, {
        "StatusCode": error.http_status, "ErrorCode": error.code,
        "ErrorMessage": error.message, "RequestId": error.request_id or ""})
    return HttpResponse(error.http_status,
                        [("content-type", PROTOBUF_CONTENT_TYPE)], body)
