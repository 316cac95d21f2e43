"""Request parameter validation against an operation's schema."""

from __future__ import annotations

import pytest

from agent.rpc.params import BYTES, INT, Param, parse_filters, parse_params
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


FIELDS = {"KeyState": "state", "TagKey": "tag_key"}


def test_filters_add_up_per_field():
    """Values of one Key add up across entries; each Key maps to its field."""
    parsed = parse_filters([{"Key": "KeyState", "Values": ["Enabled"]},
                            {"Key": "KeyState", "Values": ["Disabled"]},
                            {"Key": "TagKey", "Values": []}], FIELDS, 5)
    assert parsed == {"state": ("Enabled", "Disabled"), "tag_key": ()}


@pytest.mark.parametrize("filters, problem", [
    ([{"Key": "KeyState", "Values": ["a"]}] * 11, "at most 10 entries"),
    ([{"Key": "Nope", "Values": ["a"]}], "KeyState, TagKey"),
    ([{"Key": "KeyState", "Values": "Enabled"}], "Values"),
    ([{"Key": "KeyState", "Values": [1]}], "Values"),
    ([{"Key": "KeyState"}], "Values"),
    (["KeyState"], "Values"),
    ([{"Key": "KeyState", "Values": ["a", "b", "c"]}], "at most 2 values"),
])
def test_bad_filters_rejected(filters, problem):
    """Malformed, unknown, too many entries or values: InvalidParameter."""
    with pytest.raises(InvalidParameterError, match=problem):
        parse_filters(filters, FIELDS, 2)
