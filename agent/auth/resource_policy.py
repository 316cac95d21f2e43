"""Key and secret policies: JSON documents attached to one resource.

The shape follows Alibaba Cloud KMS key policies, with local principals::

    {"Version": "1",
     "Statement": [{"Effect": "Allow" | "Deny",
                    "Principal": {"Local": ["<principal>", ...]},
                    "Action": ["kms:Encrypt", "kms:*", ...],
                    "Resource": ["*"],
                    "Condition": {"StringEquals":
                        {"kms:EncryptionContext:<key>": "<value>"}}}]}

A document is at most 32,768 bytes, its only policy name is ``default``,
and ``Resource`` can only be ``*`` (the resource it is attached to).
Every name, action and condition is checked when the policy is set. An
unknown one is rejected rather than ignored, because an ignored
condition would widen an Allow. Only ``StringEquals`` on encryption
context keys is supported as a condition.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Iterable

from client.errors import InvalidParameterError

MAX_POLICY_BYTES = 32768
POLICY_NAME = "default"
EMPTY_POLICY = '{"Version":"1","Statement":[]}'
CONTEXT_CONDITION_PREFIX = "kms:EncryptionContext:"
_STATEMENT_KEYS = frozenset({"Sid", "Effect", "Principal", "Action", "Resource",
                             "Condition"})


@dataclasses.dataclass(frozen=True)
class Statement:
    """One parsed statement; ``context`` contains its StringEquals conditions."""

    effect: str
    principals: frozenset[str]
    actions: frozenset[str]
    context: tuple[tuple[str, frozenset[str]], ...] = ()

    def applies(self, principal: str, actions: Iterable[str],
                context: dict[str, str] | None) -> bool:
        """Return whether the statement speaks about this request."""
        if principal not in self.principals:
            return False
        if "kms:*" not in self.actions and self.actions.isdisjoint(actions):
            return False
        given = context or {}
        return all(given.get(key) in values for key, values in self.context)


def decide(statements: Iterable[Statement], principal: str,
           actions: Iterable[str], context: dict[str, str] | None) -> str | None:
    """Return "Deny", "Allow" or None from the statements that apply."""
    actions = tuple(actions)
    effects = {s.effect for s in statements if s.applies(principal, actions, context)}
    if "Deny" in effects:
        return "Deny"
    return "Allow" if "Allow" in effects else None


def parse_policy(text: str, principals: Iterable[str] | None,
                 actions: Iterable[str] | None) -> tuple[Statement, ...]:
    """Validate a policy document and return its statements.

    ``principals`` and ``actions`` are the names a statement may use;
    None accepts any name, for documents that were checked when stored
    and may name a principal removed since.

    Raises:
        InvalidParameterError: naming what is wrong with the document.
    """
    if len(text.encode("utf-8", "surrogatepass")) > MAX_POLICY_BYTES:
        raise _invalid(f"is longer than {MAX_POLICY_BYTES} bytes")
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise _invalid(f"is not valid JSON ({exc.msg})") from None
    if not isinstance(document, dict) or set(document) != {"Version", "Statement"}:
        raise _invalid("must be a JSON object with exactly Version and Statement")
    if document["Version"] != "1":
        raise _invalid('must have Version "1"')
    if not isinstance(document["Statement"], list):
        raise _invalid("Statement must be a list")
    known_principals = None if principals is None else frozenset(principals)
    known_actions = None if actions is None else frozenset(actions) | {"kms:*"}
    return tuple(_statement(i, raw, known_principals, known_actions)
                 for i, raw in enumerate(document["Statement"]))


def _statement(index: int, raw: Any, principals: frozenset[str] | None,
               actions: frozenset[str] | None) -> Statement:
    where = f"Statement[{index}]"
    if not isinstance(raw, dict):
        raise _invalid(f"{where} must be an object")
    unknown = sorted(set(raw) - _STATEMENT_KEYS)
    if unknown:
        raise _invalid(f"{where} has the unknown field {unknown[0]}")
    if raw.get("Effect") not in ("Allow", "Deny"):
        raise _invalid(f"{where}.Effect must be Allow or Deny")
    if "Sid" in raw and not isinstance(raw["Sid"], str):
        raise _invalid(f"{where}.Sid must be a string")
    if _names(where, "Resource", raw.get("Resource")) != ["*"]:
        raise _invalid(f'{where}.Resource must be ["*"], the resource itself')
    return Statement(
        effect=raw["Effect"],
        principals=_principals(where, raw.get("Principal"), principals),
        actions=_actions(where, raw.get("Action"), actions),
        context=_conditions(where, raw.get("Condition")))


def _names(where: str, field: str, value: Any) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if (not isinstance(value, list) or not value
            or not all(isinstance(v, str) for v in value)):
        raise _invalid(f"{where}.{field} must be a string or a non-empty list "
                       "of strings")
    return value


def _principals(where: str, value: Any,
                known: frozenset[str] | None) -> frozenset[str]:
    if not isinstance(value, dict) or set(value) != {"Local"}:
        raise _invalid(f'{where}.Principal must be {{"Local": [principal names]}}')
    names = _names(where, "Principal.Local", value["Local"])
    for name in names:
        if known is not None and name not in known:
            raise _invalid(f"{where}.Principal names the unknown principal {name!r}")
    return frozenset(names)


def _actions(where: str, value: Any, known: frozenset[str] | None) -> frozenset[str]:
    names = _names(where, "Action", value)
    for name in names:
        if known is not None and name not in known:
            raise _invalid(f"{where}.Action {name!r} is not kms:* or kms:<operation>")
    return frozenset(names)


def _conditions(where: str, value: Any) -> tuple[tuple[str, frozenset[str]], ...]:
    if value is None:
        return ()
    if not isinstance(value, dict) or set(value) - {"StringEquals"} or not value:
        raise _invalid(f"{where}.Condition supports only StringEquals")
    equals = value["StringEquals"]
    if not isinstance(equals, dict) or not equals:
        raise _invalid(f"{where}.Condition.StringEquals must be a non-empty object")
    conditions = []
    for key, expected in equals.items():
        if not key.startswith(CONTEXT_CONDITION_PREFIX) or key == \
                CONTEXT_CONDITION_PREFIX:
            raise _invalid(f"{where}.Condition key {key!r} is not "
                           f"{CONTEXT_CONDITION_PREFIX}<key>")
        values = _names(where, f"Condition.StringEquals.{key}", expected)
        conditions.append((key[len(CONTEXT_CONDITION_PREFIX):], frozenset(values)))
    return tuple(conditions)


def _invalid(problem: str) -> InvalidParameterError:
    return InvalidParameterError(f"The policy {problem}.")
