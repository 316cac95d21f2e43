"""Tests that pin the error vocabulary to ``tests/vectors/error_codes.json``.

A code that is added, renamed or removed in ``client.errors`` fails here
until the JSON table is updated on purpose. Codes are never reused.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import client
from client import errors

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "error_codes.json"
TABLE = json.loads(VECTORS.read_text())["codes"]
ROWS = {row["code"]: row for row in TABLE}
CODED_CLASSES = [cls for cls in errors._all_subclasses(errors.KmsError) if cls.code]


def test_code_set_matches_table():
    """The classes define exactly the codes listed in the table."""
    assert set(errors.ERRORS_BY_CODE) == set(ROWS)


def test_table_has_no_duplicate_codes():
    """Each code appears once in the table."""
    assert len(ROWS) == len(TABLE)


def test_no_two_classes_share_code():
    """No code is defined by two classes."""
    assert len(CODED_CLASSES) == len(errors.ERRORS_BY_CODE)


@pytest.mark.parametrize("row", TABLE, ids=lambda row: row["code"])
def test_code_row_matches_class(row):
    """Each code keeps its class name, status and retry advice."""
    cls = errors.ERRORS_BY_CODE[row["code"]]
    assert cls.__name__ == row["class"]
    assert cls.http_status == row["http_status"]
    assert cls.retryable == row["retryable"]


@pytest.mark.parametrize("cls", CODED_CLASSES, ids=lambda cls: cls.__name__)
def test_status_matches_error_kind(cls):
    """Caller errors have 4xx statuses and service errors 5xx."""
    if issubclass(cls, errors.CallerError):
        assert 400 <= cls.http_status < 500
    else:
        assert issubclass(cls, errors.ServiceError)
        assert 500 <= cls.http_status < 600


@pytest.mark.parametrize("cls", [errors.KmsError, errors.CallerError,
                                 errors.ServiceError])
def test_base_classes_have_no_code(cls):
    """The base classes carry no wire code."""
    assert cls.code == ""


@pytest.mark.parametrize("cls", CODED_CLASSES, ids=lambda cls: cls.__name__)
def test_error_from_wire_round_trip(cls):
    """Each error survives to_wire and error_from_wire with its type."""
    sent = cls("Something specific failed.", request_id="req-7")
    received = errors.error_from_wire(sent.to_wire())
    assert type(received) is cls
    assert received.code == cls.code
    assert received.http_status == cls.http_status
    assert received.message == "Something specific failed."
    assert received.request_id == "req-7"


def test_wire_map_field_names():
    """An error map has the four fields of the Alibaba Cloud API."""
    wire_map = errors.KeyNotFoundError().to_wire()
    assert list(wire_map) == ["Code", "Message", "HttpStatus", "RequestId"]


def test_unknown_code_becomes_unknown_error():
    """A code this client does not know keeps its code and status."""
    error = errors.error_from_wire({"Code": "Rejected.FromTheFuture",
                                    "Message": "Not yet.", "HttpStatus": 418,
                                    "RequestId": "req-1"})
    assert type(error) is errors.UnknownError
    assert error.code == "Rejected.FromTheFuture"
    assert error.http_status == 418
    assert error.message == "Not yet."
    assert error.request_id == "req-1"


@pytest.mark.parametrize("error_map", [None, "oops", [1], {"Code": 5}, {}],
                         ids=["nil", "string", "array", "code_integer", "empty"])
def test_malformed_error_map_is_unknown(error_map):
    """A map that is not shaped like an error becomes an InternalFailure."""
    error = errors.error_from_wire(error_map)
    assert type(error) is errors.UnknownError
    assert error.code == "InternalFailure"
    assert error.http_status == 500


def test_empty_request_id_becomes_none():
    """An empty RequestId is read as no request id."""
    error = errors.error_from_wire({"Code": "InternalFailure", "RequestId": ""})
    assert error.request_id is None


def test_bad_message_gets_default():
    """A message that is not a string falls back to the class default."""
    error = errors.error_from_wire({"Code": "Rejected.Disabled", "Message": 3})
    assert error.message == errors.KeyDisabledError.default_message


@pytest.mark.parametrize("cls", [*CODED_CLASSES, errors.KmsError, errors.CallerError,
                                 errors.ServiceError, errors.UnknownError],
                         ids=lambda cls: cls.__name__)
def test_error_exported_from_package(cls):
    """Every error class is importable from the client package."""
    assert getattr(client, cls.__name__) is cls
    assert cls.__name__ in client.__all__
