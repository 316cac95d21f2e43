"""Key and secret policy documents: parsing and deciding, without an agent."""

from __future__ import annotations

import json

import pytest

from agent.auth.resource_policy import decide, parse_policy
from client import errors

PRINCIPALS = {"app", "ops"}
ACTIONS = {"kms:Encrypt", "kms:Decrypt"}


def document(*statements) -> str:
    return json.dumps({"Version": "1", "Statement": list(statements)})


def statement(effect="Allow", principal="app", action="kms:Encrypt", **extra):
    return {"Effect": effect, "Principal": {"Local": principal}, "Action": action,
            "Resource": "*", **extra}


def test_single_strings_accepted():
    """Principal.Local, Action and Resource may be single strings."""
    parsed = parse_policy(document(statement()), PRINCIPALS, ACTIONS)
    assert decide(parsed, "app", ["kms:Encrypt"], None) == "Allow"


def test_deny_beats_allow():
    """A matching Deny wins over a matching Allow."""
    parsed = parse_policy(document(statement(), statement("Deny", action="kms:*")),
                          PRINCIPALS, ACTIONS)
    assert decide(parsed, "app", ["kms:Encrypt"], None) == "Deny"


def test_nothing_applies():
    """Another principal or action gets no decision."""
    parsed = parse_policy(document(statement()), PRINCIPALS, ACTIONS)
    assert decide(parsed, "ops", ["kms:Encrypt"], None) is None
    assert decide(parsed, "app", ["kms:Decrypt"], None) is None


def test_condition_values_any_of():
    """A condition with a list matches any of its values."""
    condition = {"StringEquals": {"kms:EncryptionContext:env": ["dev", "test"]}}
    parsed = parse_policy(document(statement(Condition=condition)),
                          PRINCIPALS, ACTIONS)
    assert decide(parsed, "app", ["kms:Encrypt"], {"env": "test"}) == "Allow"
    assert decide(parsed, "app", ["kms:Encrypt"], {"env": "prod"}) is None
    assert decide(parsed, "app", ["kms:Encrypt"], None) is None


def test_unchecked_parse_for_stored_documents():
    """Stored documents may name principals that were removed since."""
    parsed = parse_policy(document(statement(principal="gone")), None, None)
    assert decide(parsed, "gone", ["kms:Encrypt"], None) == "Allow"


@pytest.mark.parametrize("raw", [
    document(statement(Sid=3)),
    document(statement(effect="allow")),
    document({**statement(), "Principal": {"RAM": ["acs:ram::1:root"]}}),
    document(statement(action=[])),
    document(statement(Condition={"StringEquals": {"kms:EncryptionContext:": "x"}})),
    document(statement(Condition={"StringEquals": {}})),
    json.dumps({"Version": "1", "Statement": {}}),
    json.dumps([1, 2]),
])
def test_malformed_rejected(raw):
    """Malformed statements are rejected as InvalidParameter."""
    with pytest.raises(errors.InvalidParameterError):
        parse_policy(raw, PRINCIPALS, ACTIONS)
