"""The proto3 wire codec and the dedicated-instance message tables."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from agent.gateway import messages, protobuf

PROTO = Path(__file__).resolve().parents[2] / "agent" / "gateway" / "dkms.proto"
ENCRYPT = messages.REQUESTS["Encrypt"]
SECRET = messages.RESPONSES["GetSecretValue"]


def _proto_messages() -> dict[str, list[tuple[int, str, str]]]:
    found = {}
    for name, body in re.findall(r"message (\w+) \{([^}]*)\}", PROTO.read_text()):
        fields = re.findall(r"(repeated string|\w+) (\w+) = (\d+);", body)
        found[name] = [(int(number), field, kind) for kind, field, number in fields]
    return found


def test_tables_match_proto_file():
    """Every message table has the fields of dkms.proto, numbered alike."""
    tables = [*messages.REQUESTS.values(), *messages.RESPONSES.values(),
              messages.ERROR]
    from_proto = _proto_messages()
    assert {table.name for table in tables} == set(from_proto)
    for table in tables:
        assert list(table.fields) == from_proto[table.name], table.name


def test_round_trip_all_kinds():
    """Strings, bytes, ints, bools and repeated strings survive a round trip."""
    values = {"SecretName": "db/pass", "VersionStages": ["ACSCurrent", "x"],
              "SecretData": "s\u00e9cret", "CreateTime": ""}
    decoded = protobuf.decode(SECRET, protobuf.encode(SECRET, values))
    assert decoded["SecretName"] == "db/pass"
    assert decoded["VersionStages"] == ["ACSCurrent", "x"]
    assert decoded["SecretData"] == "s\u00e9cret"
    assert decoded["RequestId"] == ""


def test_negative_int32_round_trip():
    """A negative int32 is sign-extended to ten bytes and read back."""
    encoded = protobuf.encode(messages.ERROR, {"StatusCode": -5})
    assert len(encoded) == 11
    assert protobuf.decode(messages.ERROR, encoded)["StatusCode"] == -5


def test_defaults_are_omitted():
    """Empty strings, bytes, zero and false are not encoded."""
    assert protobuf.encode(ENCRYPT, {"KeyId": "", "Plaintext": b""}) == b""


def test_unknown_fields_are_skipped():
    """Unknown varint, length, fixed32 and fixed64 fields are skipped."""
    unknown = (b"\x38\x05" + b"\x42\x02ab" + b"\x4d\x00\x00\x00\x00"
               + b"\x51" + b"\x00" * 8)
    data = unknown + protobuf.encode(ENCRYPT, {"KeyId": "k"})
    assert protobuf.decode(ENCRYPT, data)["KeyId"] == "k"


@pytest.mark.parametrize("data, reason", [
    (b"\x0a\x05ab", "runs past the end"),
    (b"\x0a", "truncated varint"),
    (b"\x38" + b"\xff" * 10 + b"\x01", "longer than 10 bytes"),
    (b"\x0b", "wire type 3"),
    (b"\x08\x01", "does not fit string"),
    (b"\x0a\x02\xff\xfe", "not UTF-8"),
    (b"\x00\x00", "field number 0"),
    (b"\x39\x00", "truncated fixed-size"),
])
def test_garbage_is_rejected(data, reason):
    """Malformed bodies raise DecodeError saying why."""
    with pytest.raises(protobuf.DecodeError, match=reason):
        protobuf.decode(ENCRYPT, data)


def test_int32_out_of_range_rejected():
    """A varint beyond the int32 range is rejected for an int32 field."""
    data = b"\x08" + protobuf._write_varint(1 << 40)
    with pytest.raises(protobuf.DecodeError, match="int32 range"):
        protobuf.decode(messages.REQUESTS["GenerateRandom"], data)
