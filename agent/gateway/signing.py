"""The two Alibaba Cloud OpenAPI signature schemes, as pure functions.

ACS3-HMAC-SHA256 (the SDKs' default) signs a canonical request::

    METHOD \\n path \\n canonical query \\n canonical headers \\n
    signed header names \\n hex SHA-256 of the body

and the string to sign is ``ACS3-HMAC-SHA256 \\n`` followed by the hex
SHA-256 of that request; the signature is the hex HMAC-SHA256 of it
under the AccessKey secret. The canonical query sorts the query
parameters by name and percent-encodes names and values (RFC 3986: only
letters, digits and ``-_.~`` stay as they are). Canonical headers are
``name:value`` lines of the signed headers, lower-case and sorted, with
values trimmed and repeated values sorted and joined by commas.

The older RPC scheme (HMAC-SHA1, SignatureVersion 1.0) signs every
parameter of the query and the form body except ``Signature``::

    METHOD & %2F & percent-encode(canonical query)

with HMAC-SHA1 under ``secret + "&"``, Base64-encoded.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from urllib.parse import quote

ACS3_HMAC_SHA256 = "ACS3-HMAC-SHA256"
RPC_HMAC_SHA1 = "HMAC-SHA1"
RPC_SIGNATURE_VERSION = "1.0"


def percent_encode(text: str) -> str:
    """Percent-encode UTF-8 text, keeping only RFC 3986 unreserved characters."""
    return quote(text, safe="~", encoding="utf-8")


def canonical_query(params: list[tuple[str, str]]) -> str:
    """Return the sorted, percent-encoded ``name=value&...`` string."""
    return "&".join(f"{percent_encode(name)}={percent_encode(value)}"
                    for name, value in sorted(params))


def canonical_headers(headers: dict[str, list[str]], signed: list[str]) -> str:
    """Return the canonical header lines of the ``signed`` header names."""
    lines = []
    for name in sorted(signed):
        values = sorted(value.strip() for value in headers.get(name, []))
        lines.append(f"{name}:{','.join(values)}\n")
    return "".join(lines)


def acs3_canonical_request(method: str, path: str, query: list[tuple[str, str]],
                           headers: dict[str, list[str]], signed: list[str],
                           payload_sha256: str) -> str:
    """Return the ACS3 canonical request of one HTTP request."""
    return "\n".join([
        method, path or "/", canonical_query(query),
        canonical_headers(headers, signed), ";".join(sorted(signed)),
        payload_sha256,
    ])


def acs3_signature(secret: str, canonical_request: str) -> str:
    """Return the hex ACS3-HMAC-SHA256 signature of a canonical request."""
    digest = hashlib.sha256(canonical_request.encode("utf-8")).hexdigest()
    string_to_sign = f"{ACS3_HMAC_SHA256}\n{digest}"
    return hmac.new(secret.encode("utf-8"), string_to_sign.encode("utf-8"),
                    hashlib.sha256).hexdigest()


def rpc_string_to_sign(method: str, params: list[tuple[str, str]]) -> str:
    """Return the HMAC-SHA1 string to sign of the signed parameters."""
    return f"{method}&{percent_encode('/')}&{percent_encode(canonical_query(params))}"


def rpc_signature(secret: str, string_to_sign: str) -> str:
    """Return the Base64 HMAC-SHA1 signature under ``secret + "&"``."""
    mac = hmac.new(f"{secret}&".encode("utf-8"), string_to_sign.encode("utf-8"),
                   hashlib.sha1).digest()
    return base64.b64encode(mac).decode("ascii")


def same_signature(expected: str, given: str) -> bool:
    """Compare two signatures in constant time."""
    return hmac.compare_digest(expected.encode("utf-8"), given.encode("utf-8"))
