"""A small proto3 wire codec for the dedicated-instance messages.

The dedicated-instance protocol (``api.proto`` of the dkms-gcs SDK,
package ``protobuf``) exchanges flat messages whose fields are strings,
bytes, int32, bool and repeated strings. This module encodes and decodes
exactly those, from schemas written below as tables, so the agent needs
no protobuf runtime or generated code.

Decoding is strict where the wire format allows it: a truncated field,
a varint longer than 10 bytes, a reserved wire type, a known field with
the wrong wire type or a string that is not UTF-8 raise ``DecodeError``.
Unknown fields are skipped, as proto3 requires. Encoding omits fields
that hold their default value, as proto3 does.
"""

from __future__ import annotations

import dataclasses
from typing import Any

STRING = "string"
BYTES = "bytes"
INT32 = "int32"
BOOL = "bool"
REPEATED_STRING = "repeated string"

_VARINT = 0
_FIXED64 = 1
_LENGTH = 2
_FIXED32 = 5
_WIRE_TYPES = {STRING: _LENGTH, BYTES: _LENGTH, INT32: _VARINT, BOOL: _VARINT,
               REPEATED_STRING: _LENGTH}
_DEFAULTS = {STRING: "", BYTES: b"", INT32: 0, BOOL: False}
_MAX_VARINT_BYTES = 10


class DecodeError(ValueError):
    """The bytes are not a valid encoding of the expected message."""


@dataclasses.dataclass(frozen=True)
class Message:
    """A message schema: its name and ``(number, name, kind)`` fields."""

    name: str
    fields: tuple[tuple[int, str, str], ...]

    def field(self, number: int) -> tuple[str, str] | None:
        """Return the ``(name, kind)`` of field ``number``, or None."""
        for field_number, name, kind in self.fields:
            if field_number == number:
                return name, kind
        return None


def decode(message: Message, data: bytes) -> dict[str, Any]:
    """Decode ``data`` as ``message``; absent fields take their defaults.

    Raises:
        DecodeError: the bytes are malformed, naming the message and why.
    """
    values: dict[str, Any] = {
        name: [] if kind == REPEATED_STRING else _DEFAULTS[kind]
        for _, name, kind in message.fields}
    position = 0
    while position < len(data):
        tag, position = _read_varint(data, position, message)
        number, wire_type = tag >> 3, tag & 7
        if number == 0:
            raise DecodeError(f"{message.name}: field number 0 is invalid")
        known = message.field(number)
        if known is None:
            position = _skip(data, position, wire_type, message)
            continue
        name, kind = known
        if wire_type != _WIRE_TYPES[kind]:
            raise DecodeError(
                f"{message.name}.{name}: wire type {wire_type} does not fit {kind}")
        value, position = _read_value(data, position, kind, message, name)
        if kind == REPEATED_STRING:
            values[name].append(value)
        else:
            values[name] = value
    return values


def encode(message: Message, values: dict[str, Any]) -> bytes:
    """Encode ``values`` as ``message``; unknown names raise KeyError."""
    names = {name: (number, kind) for number, name, kind in message.fields}
    out = bytearray()
    for name, value in values.items():
        number, kind = names[name]
        items = value if kind == REPEATED_STRING else [value]
        for item in items:
            if kind != REPEATED_STRING and item == _DEFAULTS[kind]:
                continue
            out += _write_varint((number << 3) | _WIRE_TYPES[kind])
            out += _encode_value(kind, item)
    return bytes(out)


def _encode_value(kind: str, value: Any) -> bytes:
    if kind in (STRING, REPEATED_STRING):
        raw = value.encode("utf-8")
        return _write_varint(len(raw)) + raw
    if kind == BYTES:
        return _write_varint(len(value)) + bytes(value)
    if kind == BOOL:
        return _write_varint(1 if value else 0)
    # A negative int32 is sign-extended to 64 bits, as proto3 requires.
    return _write_varint(value & 0xFFFFFFFFFFFFFFFF)


def _write_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low = value & 0x7F
        value >>= 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def _read_varint(data: bytes, position: int, message: Message) -> tuple[int, int]:
    value = 0
    for index in range(_MAX_VARINT_BYTES):
        if position >= len(data):
            raise DecodeError(f"{message.name}: truncated varint")
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << (7 * index)
        if not byte & 0x80:
            return value, position
    raise DecodeError(f"{message.name}: varint longer than 10 bytes")


def _read_length(data: bytes, position: int, message: Message) -> tuple[bytes, int]:
    length, position = _read_varint(data, position, message)
    end = position + length
    if end > len(data):
        raise DecodeError(f"{message.name}: field runs past the end of the body")
    return data[position:end], end


def _read_value(data: bytes, position: int, kind: str, message: Message,
                name: str) -> tuple[Any, int]:
    if kind in (INT32, BOOL):
        raw, position = _read_varint(data, position, message)
        if kind == BOOL:
            return raw != 0, position
        # int32 values are sent sign-extended to 64 bits.
        value = raw - (1 << 64) if raw >= 1 << 63 else raw
        if not -(1 << 31) <= value < 1 << 31:
            raise DecodeError(f"{message.name}.{name}: {value} is out of int32 range")
        return value, position
    raw, position = _read_length(data, position, message)
    if kind == BYTES:
        return raw, position
    try:
        return raw.decode("utf-8"), position
    except UnicodeDecodeError:
        raise DecodeError(f"{message.name}.{name}: string is not UTF-8") from None


def _skip(data: bytes, position: int, wire_type: int, message: Message) -> int:
    if wire_type == _VARINT:
        return _read_varint(data, position, message)[1]
    if wire_type == _LENGTH:
        return _read_length(data, position, message)[1]
    size = {_FIXED64: 8, _FIXED32: 4}.get(wire_type)
    if size is None:
        raise DecodeError(f"{message.name}: wire type {wire_type} is not supported")
    if position + size > len(data):
        raise DecodeError(f"{message.name}: truncated fixed-size field")
    return position + size
