"""Request parameter validation against an operation's schema."""

from __future__ import annotations

import pytest

from agent.rpc.params import BYTES, INT, Param, parse_params
from client.errors import InvalidParameterError, MissingParameterError

SCHEMA = (Param("KeyId", required=True), Param("Plaintext", BYTES),
          Param("NumberOfBytes", INT, low=1, high=1024))


def test_valid_request_passes_through():
    """Known parameters come back converted; absent optional ones are left out."""
    assert parse_params({"KeyId": "k", "NumberOfBytes": 32}, SCHEMA) == {
        "KeyId": "k", "NumberOfBytes": 32}


def test_nil_counts_as_absent():
    """A parameter sent as nil is treated as not sent."""
    assert parse_params({"KeyId": "k", "Plaintext": None}, SCHEMA) == {"KeyId": "k"}


def test_unknown_name_is_rejected():
    """A name outside the schema is an InvalidParameter naming it."""
    with pytest.raises(InvalidParameterError, match="'Plaintxt' is not known"):
        parse_params({"KeyId": "k", "Plaintxt": b"x"}, SCHEMA)


def test_unknown_name_is_reported_before_a_missing_one():
    """A misspelt required parameter is named as unknown, not as missing."""
    with pytest.raises(InvalidParameterError, match="'KeyID' is not known"):
        parse_params({"KeyID": "k"}, SCHEMA)


def test_missing_required_parameter():
    """A required parameter that is absent raises MissingParameter."""
    with pytest.raises(MissingParameterError, match="KeyId"):
        parse_params({"NumberOfBytes": 1}, SCHEMA)


def test_non_text_name_is_rejected():
    """A map key that is not text (msgpack allows it) is rejected."""
    with pytest.raises(InvalidParameterError, match="not known"):
        parse_params({"KeyId": "k", 7: "x"}, SCHEMA)
