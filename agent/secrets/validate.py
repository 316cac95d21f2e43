"""Checks of secret names, version ids, values and rotation intervals.

Limits follow Alibaba Cloud Secrets Manager. A name is 1 to 192 of
``[A-Za-z0-9_/+=.@-]`` and must not start with the reserved ``acs/``.
A version id is at most 64 characters, and a value at most 30,720
bytes. A rotation interval is 6 hours to 8,760 hours, written as an
integer with a unit (``7d``, ``12h``, ``30m``, ``604800s``).
"""

from __future__ import annotations

import re

from client.errors import InvalidParameterError

NAME_PATTERN = re.compile(r"[A-Za-z0-9_/+=.@-]{1,192}")
VERSION_ID_PATTERN = re.compile(r"[A-Za-z0-9_/+=.@-]{1,64}")
RESERVED_PREFIX = "acs/"
MAX_VALUE_BYTES = 30720
DATA_TYPES = ("text", "binary")
MIN_ROTATION_SECONDS = 6 * 3600
MAX_ROTATION_SECONDS = 8760 * 3600
_INTERVAL = re.compile(r"([0-9]{1,10})([dhms])")
_UNIT_SECONDS = {"d": 86400, "h": 3600, "m": 60, "s": 1}


def secret_name(name: str, creating: bool = False) -> str:
    """Return ``name`` if valid; a new secret may not use ``acs/``.

    Raises:
        InvalidParameterError: the name is malformed or reserved.
    """
    if not NAME_PATTERN.fullmatch(name):
        raise InvalidParameterError(
            f"SecretName {name!r} is invalid: use 1 to 192 letters, digits or "
            "_/+=.@-")
    if creating and name.startswith(RESERVED_PREFIX):
        raise InvalidParameterError(
            f"SecretName {name!r} is in the reserved namespace {RESERVED_PREFIX}.")
    return name


def version_id(value: str) -> str:
    """Return ``value`` if it is a valid VersionId.

    Raises:
        InvalidParameterError: it is empty, too long or has other characters.
    """
    if not VERSION_ID_PATTERN.fullmatch(value):
        raise InvalidParameterError(
            f"VersionId {value!r} is invalid: use 1 to 64 letters, digits or "
            "_/+=.@-")
    return value


def secret_data(data: bytes, data_type: str) -> bytes:
    """Check a value against its data type and the size limit.

    Raises:
        InvalidParameterError: the type is unknown, the value is empty or
            too large, or a text value is not UTF-8. The message never
            quotes the value.
    """
    if data_type not in DATA_TYPES:
        raise InvalidParameterError(
            f"SecretDataType {data_type!r} is invalid; use text or binary.")
    if not 1 <= len(data) <= MAX_VALUE_BYTES:
        raise InvalidParameterError(
            f"SecretData is {len(data)} bytes; it must be 1 to {MAX_VALUE_BYTES}.")
    if data_type == "text":
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidParameterError(
                "SecretData of type text must be UTF-8; use SecretDataType "
                "binary for other bytes.") from None
    return data


def rotation_interval(text: str) -> int:
    """Return a RotationInterval such as ``7d`` in seconds.

    Raises:
        InvalidParameterError: malformed, or outside 6 h to 8,760 h.
    """
    match = _INTERVAL.fullmatch(text)
    if match is None:
        raise InvalidParameterError(
            f"RotationInterval {text!r} is invalid: use an integer and a unit "
            "d, h, m or s, such as 7d.")
    seconds = int(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if not MIN_ROTATION_SECONDS <= seconds <= MAX_ROTATION_SECONDS:
        raise InvalidParameterError(
            f"RotationInterval {text!r} must be 6h to 8760h.")
    return seconds
