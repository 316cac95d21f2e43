"""Declarative request parameters and their validation.

Each operation lists its parameters as ``Param`` entries. ``parse_params``
checks a request against that list before any handler runs: a missing
required parameter raises MissingParameter, an unknown one or a value of
the wrong type or range raises InvalidParameter, and both name the
parameter. Maps and lists may also arrive as JSON text, as the cloud API
sends them, so the HTTP gateway can share these schemas.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from client.errors import InvalidParameterError, MissingParameterError

STR = "str"
BYTES = "bytes"
# Text or bytes; text is encoded as UTF-8.
PLAINTEXT = "plaintext"
INT = "int"
BOOL = "bool"
MAP = "map"
LIST = "list"
# Entries of a Filters list (ListKeys, ListSecrets).
MAX_FILTERS = 10


@dataclasses.dataclass(frozen=True)
class Param:
    """One request parameter: PascalCase name, kind and limits.

    ``low`` and ``high`` bound an integer's value, or the length of a
    string, byte string or list.
    """

    name: str
    kind: str = STR
    required: bool = False
    low: int | None = None
    high: int | None = None
    choices: tuple[str, ...] = ()


def parse_params(params: Any, schema: tuple[Param, ...]) -> dict[str, Any]:
    """Return the validated parameters, converted to their kinds.

    Raises:
        MissingParameterError: a required parameter is absent.
        InvalidParameterError: a parameter is unknown or invalid.
    """
    if not isinstance(params, dict):
        raise InvalidParameterError("Request parameters must be a map.")
    values = {}
    for param in schema:
        value = params.get(param.name)
        if value is None:
            if param.required:
                _reject_unknown(params, schema)
                raise MissingParameterError(
                    f"The parameter {param.name} is required.")
            continue
        values[param.name] = _check(param, _convert(param, value))
    if len(values) != len(params):
        # Some names are not in the schema, or were sent as nil.
        _reject_unknown(params, schema)
    return values


def _reject_unknown(params: dict[Any, Any], schema: tuple[Param, ...]) -> None:
    # Run only when the names may not match, so most requests skip it.
    known = {param.name for param in schema}
    for name in params:
        if name not in known:
            raise InvalidParameterError(f"The parameter {name!r} is not known.")


def _convert(param: Param, value: Any) -> Any:
    kind = param.kind
    if kind == PLAINTEXT and isinstance(value, str):
        try:
            return value.encode("utf-8")
        except UnicodeEncodeError:
            raise _invalid(param, "must be valid UTF-8 text or bytes") from None
    if kind in (MAP, LIST) and isinstance(value, str):
        try:
            value = json.loads(value)
            # JSON escapes can spell lone surrogates, which no store accepts.
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except (ValueError, UnicodeEncodeError, RecursionError):
            raise _invalid(param, "is not valid JSON text") from None
    if kind == BOOL and isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    expected = _TYPES[kind]
    if not isinstance(value, expected) or (kind == INT and isinstance(value, bool)):
        raise _invalid(param, f"must be of type {_KIND_NAMES[kind]}")
    return value


_TYPES: dict[str, type] = {
    STR: str, BYTES: bytes, PLAINTEXT: bytes, INT: int, BOOL: bool,
    MAP: dict, LIST: list,
}
_KIND_NAMES = {
    STR: "string", BYTES: "binary", PLAINTEXT: "binary or string", INT: "integer",
    BOOL: "boolean", MAP: "map", LIST: "list",
}


_UNITS = {
    STR: " characters long", BYTES: " bytes long", PLAINTEXT: " bytes long", INT: "",
    MAP: " entries long", LIST: " entries long", BOOL: "",
}


def _check(param: Param, value: Any) -> Any:
    if param.choices and value not in param.choices:
        raise _invalid(param, f"must be one of {', '.join(param.choices)}")
    if param.low is None and param.high is None:
        return value
    measure = value if param.kind == INT else len(value)
    what = _UNITS[param.kind]
    if param.low is not None and measure < param.low:
        raise _invalid(param, f"must be at least {param.low}{what}")
    if param.high is not None and measure > param.high:
        raise _invalid(param, f"must be at most {param.high}{what}")
    return value


def _invalid(param: Param, problem: str) -> InvalidParameterError:
    return InvalidParameterError(f"The parameter {param.name} {problem}.")


def parse_filters(filters: list[Any], fields: dict[str, str],
                  max_values: int) -> dict[str, tuple[str, ...]]:
    """Return the values of a ``Filters`` list by field name.

    ``filters`` contains ``{"Key": name, "Values": [strings]}`` maps, at most
    ``MAX_FILTERS``; ``fields`` maps each accepted Key to its field. The
    values of one field add up across entries, to at most ``max_values``.

    Raises:
        InvalidParameterError: an entry is malformed or names an unknown
            Key, or there are too many entries or values.
    """
    if len(filters) > MAX_FILTERS:
        raise InvalidParameterError(f"Filters takes at most {MAX_FILTERS} entries.")
    values: dict[str, tuple[str, ...]] = {}
    for entry in filters:
        if (not isinstance(entry, dict) or set(entry) != {"Key", "Values"}
                or entry["Key"] not in fields
                or not isinstance(entry["Values"], list)
                or not all(isinstance(v, str) for v in entry["Values"])):
            raise InvalidParameterError(
                "Filters must be a list of {\"Key\": name, \"Values\": [strings]} "
                f"maps, with Key one of {', '.join(sorted(fields))}.")
        field = fields[entry["Key"]]
        values[field] = values.get(field, ()) + tuple(entry["Values"])
        if len(values[field]) > max_values:
            raise InvalidParameterError(
                f"Filters take at most {max_values} values for {entry['Key']}.")
    return values


def string_map(param_name: str, value: dict[Any, Any]) -> dict[str, str]:
    """Check that a map holds only strings; return it."""
    for key, item in value.items():
        if not isinstance(key, str) or not isinstance(item, str):
            raise InvalidParameterError(
                f"The parameter {param_name} must map strings to strings.")
    return value
