"""The OpenAPI signature schemes against vectors from the official SDK.

``tests/vectors/gateway_signatures.json`` contains signatures that the
SDK's own signing code computed, so these tests compare the agent's
implementation with an independent one.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.gateway import signing

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "gateway_signatures.json"
CASES = json.loads(VECTORS.read_text(encoding="utf-8"))["cases"]
ACS3_CASES = [case for case in CASES if case["scheme"] == "ACS3-HMAC-SHA256"]
RPC_CASES = [case for case in CASES if case["scheme"] == "HMAC-SHA1"]


def _authorization_parts(header: str) -> dict[str, str]:
    _, _, rest = header.partition(" ")
    return dict(part.split("=", 1) for part in rest.split(","))


@pytest.mark.parametrize("case", ACS3_CASES, ids=lambda case: case["name"])
def test_acs3_signature_matches_sdk(case):
    """The ACS3-HMAC-SHA256 signature equals the SDK's."""
    parts = _authorization_parts(case["authorization"])
    headers = {name: [value] for name, value in case["headers"].items()}
    canonical = signing.acs3_canonical_request(
        case["method"], "/", list(case["query"].items()), headers,
        parts["SignedHeaders"].split(";"), case["headers"]["x-acs-content-sha256"])
    assert signing.acs3_signature(case["secret"], canonical) == parts["Signature"]


@pytest.mark.parametrize("case", RPC_CASES, ids=lambda case: case["name"])
def test_rpc_signature_matches_sdk(case):
    """The HMAC-SHA1 signature equals the SDK's."""
    to_sign = signing.rpc_string_to_sign(case["method"], list(case["params"].items()))
    assert signing.rpc_signature(case["secret"], to_sign) == case["signature"]


def test_acs3_signature_depends_on_secret():
    """A different secret gives a different signature."""
    case = ACS3_CASES[0]
    parts = _authorization_parts(case["authorization"])
    headers = {name: [value] for name, value in case["headers"].items()}
    canonical = signing.acs3_canonical_request(
        case["method"], "/", list(case["query"].items()), headers,
        parts["SignedHeaders"].split(";"), case["headers"]["x-acs-content-sha256"])
    assert signing.acs3_signature("another-secret-000", canonical) != parts["Signature"]


@pytest.mark.parametrize("text, encoded", [
    ("a b", "a%20b"), ("~_-.", "~_-."), ("/", "%2F"), ("*", "%2A"), ("+", "%2B"),
    ("é", "%C3%A9"),
])
def test_percent_encode_rfc3986(text, encoded):
    """Only RFC 3986 unreserved characters stay as they are."""
    assert signing.percent_encode(text) == encoded


def test_canonical_headers_join_repeats():
    """Repeated values are trimmed, sorted and joined by commas."""
    lines = signing.canonical_headers({"accept": [" b ", "a"]}, ["accept"])
    assert lines == "accept:a,b\n"


def test_same_signature_rejects_difference():
    """Signatures compare equal only when identical."""
    assert signing.same_signature("abc", "abc")
    assert not signing.same_signature("abc", "abd")
