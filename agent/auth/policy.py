"""Policies: which permission templates a principal holds on which resources.

A ``[policies.<name>]`` table grants (or, with ``effect = "Deny"``,
denies) its ``principals`` the ``permissions`` templates on its
``resources``. Templates follow the KMS instance RBAC model:

- ``key-user``: cryptographic operations on keys;
- ``secret-user``: reading secret values and their metadata;
- ``administrator``: management (create, lifecycle, aliases, tags,
  policies, client keys, reload).

Resources are ``key/<id>``, ``key/*``, ``secret/<name>``, ``secret/*``,
``certificate/<id>``, ``certificate/*`` and ``agent`` (the agent itself:
client keys and policy reload). A decision combines these statements
with the resource's own policy: an explicit Deny wins, then any Allow,
and everything else is denied. Operations map to templates in ``rules``.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from agent.auth.principals import (
    AccessConfigError, Principal, check_name, parse_principals,
)

KEY_USER = "key-user"
SECRET_USER = "secret-user"
ADMINISTRATOR = "administrator"
TEMPLATES = {
    KEY_USER: KEY_USER,
    SECRET_USER: SECRET_USER,
    ADMINISTRATOR: ADMINISTRATOR,
    "RbacPermission/Template/CryptoServiceKeyUser": KEY_USER,
    "RbacPermission/Template/CryptoServiceSecretUser": SECRET_USER,
}
ALLOW = "Allow"
DENY = "Deny"
KEY = "key"
SECRET = "secret"
CERTIFICATE = "certificate"
AGENT = "agent"
# More distinct decisions than this in one configuration start the memo over.
MAX_DECISIONS = 65536
_UNDECIDED = object()
_POLICY_KEYS = frozenset({"principals", "permissions", "resources", "effect"})


@dataclasses.dataclass(frozen=True)
class Resource:
    """The resource a request acts on.

    ``name`` is a key id or secret name, or None for the whole collection
    (``key/*``: listing or creating). ``keystore`` is the keystore the
    resource belongs to, when known.
    """

    kind: str
    name: str | None = None
    keystore: str | None = None

    def __str__(self) -> str:
        if self.kind == AGENT:
            return AGENT
        return f"{self.kind}/{self.name or '*'}"


@dataclasses.dataclass(frozen=True)
class Pattern:
    """A resource form from a policy: a kind and a name or ``*``."""

    kind: str
    name: str | None = None

    def matches(self, resource: Resource) -> bool:
        """Return whether the pattern covers ``resource``."""
        if self.kind != resource.kind:
            return False
        return self.name is None or self.name == resource.name


@dataclasses.dataclass(frozen=True)
class Grant:
    """One ``[policies.<name>]`` table."""

    policy: str
    effect: str
    principals: frozenset[str]
    templates: frozenset[str]
    patterns: tuple[Pattern, ...]

    def applies(self, principal: str, templates: frozenset[str],
                resource: Resource) -> bool:
        """Return whether this grant speaks about the request."""
        return (principal in self.principals
                and not self.templates.isdisjoint(templates)
                and any(p.matches(resource) for p in self.patterns))


@dataclasses.dataclass(frozen=True)
class AccessConfig:
    """The principals and policies in force.

    ``implicit`` marks the configuration used when the file defines no
    principals: the agent's own uid and root, with every permission.
    """

    principals: dict[str, Principal]
    grants: tuple[Grant, ...]
    implicit: bool = False
    # Decisions already made. The configuration never changes (a reload
    # builds a new one), so a request repeats a decision at the cost of a
    # dict lookup instead of a pass over every grant.
    _decisions: dict[tuple[Any, ...], str | None] = dataclasses.field(
        default_factory=dict, init=False, repr=False, compare=False)

    def decide(self, principal: Principal, templates: frozenset[str],
               resource: Resource) -> str | None:
        """Return DENY, ALLOW or None (nothing applies) from the grants.

        A resource in a keystore the principal is not bound to is DENY,
        whatever the grants contain.
        """
        key = (principal.name, principal.keystores, templates, resource)
        decision = self._decisions.get(key, _UNDECIDED)
        if decision is _UNDECIDED:
            decision = self._decide(principal, templates, resource)
            if len(self._decisions) >= MAX_DECISIONS:
                self._decisions.clear()
            self._decisions[key] = decision
        return decision

    def _decide(self, principal: Principal, templates: frozenset[str],
                resource: Resource) -> str | None:
        if resource.keystore is not None and not principal.uses_keystore(
                resource.keystore):
            return DENY
        effects = {g.effect for g in self.grants
                   if g.applies(principal.name, templates, resource)}
        if DENY in effects:
            return DENY
        return ALLOW if ALLOW in effects else None

    def holds_any(self, principal: Principal, templates: frozenset[str]) -> bool:
        """Return whether some Allow grants the principal one of ``templates``."""
        return any(g.effect == ALLOW and principal.name in g.principals
                   and not g.templates.isdisjoint(templates) for g in self.grants)


def parse_pattern(where: str, text: Any) -> Pattern:
    """Parse a resource form of a policy.

    Raises:
        AccessConfigError: the form is not one of key/<id>, key/*,
            secret/<name>, secret/*, certificate/<id>, certificate/* or
            agent.
    """
    if text == AGENT:
        return Pattern(AGENT)
    forms = ("key/<id>, key/*, secret/<name>, secret/*, certificate/<id>, "
             "certificate/* or agent")
    if not isinstance(text, str) or "/" not in text:
        raise AccessConfigError(f"{where}: {text!r} is not a resource ({forms})")
    kind, name = text.split("/", 1)
    if (kind not in (KEY, SECRET, CERTIFICATE) or not name
            or any(c.isspace() for c in name)):
        raise AccessConfigError(f"{where}: {text!r} is not a resource ({forms})")
    if name == "*":
        return Pattern(kind)
    if "*" in name:
        raise AccessConfigError(
            f"{where}: {text!r}: '*' may only stand alone, as in {kind}/*")
    if kind == KEY and (name.startswith("alias/") or name.startswith("acs:")):
        raise AccessConfigError(
            f"{where}: {text!r}: name keys by id in policies, not by alias or ARN")
    return Pattern(kind, name)


def parse_grants(raw: Any, principals: dict[str, Principal]) -> tuple[Grant, ...]:
    """Validate the ``[policies]`` tables.

    Raises:
        AccessConfigError: an unknown key, principal, template or
            resource form, or an empty list.
    """
    if not isinstance(raw, dict):
        raise AccessConfigError("policies: expected tables [policies.<name>]")
    return tuple(_parse_grant(f"policies.{check_name('policies', name)}", name,
                              table, principals)
                 for name, table in raw.items())


def _parse_grant(where: str, name: str, table: Any,
                 principals: dict[str, Principal]) -> Grant:
    if not isinstance(table, dict):
        raise AccessConfigError(f"{where}: expected a table")
    unknown = sorted(set(table) - _POLICY_KEYS)
    if unknown:
        raise AccessConfigError(
            f"{where}.{unknown[0]}: unknown key (known: "
            f"{', '.join(sorted(_POLICY_KEYS))})")
    effect = table.get("effect", ALLOW)
    if effect not in (ALLOW, DENY):
        raise AccessConfigError(f"{where}.effect: {effect!r} is not Allow or Deny")
    names = _required_list(where, table, "principals")
    for principal in names:
        if principal not in principals:
            raise AccessConfigError(
                f"{where}.principals: no principal named {principal!r} in "
                "[principals]")
    templates = set()
    for template in _required_list(where, table, "permissions"):
        if template not in TEMPLATES:
            raise AccessConfigError(
                f"{where}.permissions: unknown template {template!r} (known: "
                f"{', '.join(sorted(TEMPLATES))})")
        templates.add(TEMPLATES[template])
    patterns = tuple(parse_pattern(f"{where}.resources", text)
                     for text in _required_list(where, table, "resources"))
    return Grant(name, effect, frozenset(names), frozenset(templates), patterns)


def _required_list(where: str, table: dict[str, Any], key: str) -> list[str]:
    value = table.get(key)
    if value is None:
        raise AccessConfigError(f"{where}.{key}: missing required key")
    if (not isinstance(value, list) or not value
            or not all(isinstance(v, str) for v in value)):
        raise AccessConfigError(f"{where}.{key}: expected a non-empty list of strings")
    return value


def parse_access(principals: Any, policies: Any, keystores: set[str]) -> AccessConfig:
    """Build the access configuration from the raw TOML tables.

    Without a ``[principals]`` table the result is ``implicit_access``.

    Raises:
        AccessConfigError: naming the first invalid entry.
    """
    if principals is None:
        if policies is not None:
            raise AccessConfigError(
                "policies: [policies] needs [principals] to name who they apply to")
        return implicit_access()
    parsed = parse_principals(principals, keystores)
    grants = parse_grants(policies if policies is not None else {}, parsed)
    return AccessConfig(parsed, grants)


def implicit_access(agent_uid: int | None = None) -> AccessConfig:
    """Return the access used without ``[principals]``.

    Only the agent's own uid and root are admitted, with every template
    on every resource.
    """
    uid = os.getuid() if agent_uid is None else agent_uid
    owner = Principal("agent-owner", frozenset({uid, 0}))
    everything = Grant(
        "agent-owner", ALLOW, frozenset({owner.name}),
        frozenset({KEY_USER, SECRET_USER, ADMINISTRATOR}),
        (Pattern(KEY), Pattern(SECRET), Pattern(CERTIFICATE), Pattern(AGENT)))
    return AccessConfig({owner.name: owner}, (everything,), implicit=True)
