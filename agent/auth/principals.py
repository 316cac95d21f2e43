"""Principals: who may call the agent, and how a connection is matched.

A principal is a name from the ``[principals]`` configuration. It matches
a connection by the peer credentials the kernel reports (uid, primary
gid and supplementary groups) and, when ``client_key`` is set, only with
a valid client key of that principal as well. Each principal is bound to
keystores: it sees and uses only resources of those.

Matching without a client key prefers a principal that names the peer's
uid over one that names one of its groups; among equals the first in
the configuration wins. A uid may appear in only one principal that
needs no client key, so that choice is never ambiguous.

The ``/proc`` helpers here read what the kernel does not report on the
socket; a caller compares the start time captured at accept to make sure
a pid still names the same process.
"""

from __future__ import annotations

import dataclasses
import grp
import os
import pwd
from typing import Any

from agent.context import Peer

ALL_KEYSTORES = "*"
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                        "0123456789-_")
_PRINCIPAL_KEYS = frozenset({
    "uids", "users", "groups", "agent_user", "client_key", "keystores",
})


class AccessConfigError(ValueError):
    """The access configuration is invalid; the message names the entry."""


@dataclasses.dataclass(frozen=True)
class Principal:
    """One configured principal.

    ``keystores`` is None when the principal may use every keystore.
    """

    name: str
    uids: frozenset[int] = frozenset()
    gids: frozenset[int] = frozenset()
    client_key: bool = False
    keystores: frozenset[str] | None = None

    @property
    def has_unix_match(self) -> bool:
        """Whether the principal names any uid or group."""
        return bool(self.uids or self.gids)

    def uses_keystore(self, keystore: str) -> bool:
        """Return whether the principal may use resources of ``keystore``."""
        return self.keystores is None or keystore in self.keystores

    def match(self, peer: Peer) -> int:
        """Return 2 for a uid match, 1 for a group match, 0 for none."""
        if peer.uid is not None and peer.uid in self.uids:
            return 2
        peer_gids = set(peer.groups or ())
        if peer.gid is not None:
            peer_gids.add(peer.gid)
        return 1 if peer_gids & self.gids else 0


def check_name(where: str, value: Any) -> str:
    """Return ``value`` if it is a valid principal or policy name.

    Raises:
        AccessConfigError: it is not 1-64 letters, digits, '-' or '_'.
    """
    if (not isinstance(value, str) or not 1 <= len(value) <= 64
            or not set(value) <= _NAME_CHARS):
        raise AccessConfigError(
            f"{where}: {value!r} must be 1-64 letters, digits, '-' or '_'")
    return value


def parse_principals(raw: Any, keystores: set[str]) -> dict[str, Principal]:
    """Validate the ``[principals]`` tables; keep their order.

    Raises:
        AccessConfigError: an unknown key, user, group or keystore, a
            principal that can match nothing, or a uid in two principals.
    """
    if not isinstance(raw, dict):
        raise AccessConfigError("principals: expected tables [principals.<name>]")
    principals = {}
    for name, table in raw.items():
        where = f"principals.{check_name('principals', name)}"
        principals[name] = _parse_principal(where, name, table, keystores)
    _check_unique_uids(principals)
    return principals


def _parse_principal(where: str, name: str, table: Any,
                     keystores: set[str]) -> Principal:
    if not isinstance(table, dict):
        raise AccessConfigError(f"{where}: expected a table")
    unknown = sorted(set(table) - _PRINCIPAL_KEYS)
    if unknown:
        raise AccessConfigError(
            f"{where}.{unknown[0]}: unknown key (known: "
            f"{', '.join(sorted(_PRINCIPAL_KEYS))})")
    uids = set(_int_list(f"{where}.uids", table.get("uids", [])))
    uids |= {_user_uid(f"{where}.users", user)
             for user in _str_list(f"{where}.users", table.get("users", []))}
    if _bool(f"{where}.agent_user", table.get("agent_user", False)):
        uids.add(os.getuid())
    gids = {_group_gid(f"{where}.groups", group)
            for group in _str_list(f"{where}.groups", table.get("groups", []))}
    client_key = _bool(f"{where}.client_key", table.get("client_key", False))
    if not (uids or gids or client_key):
        raise AccessConfigError(
            f"{where}: matches no caller; set uids, users, groups, agent_user "
            "or client_key")
    if "keystores" not in table:
        raise AccessConfigError(
            f"{where}.keystores: missing required key (a list of keystore "
            "names, or [\"*\"] for all)")
    return Principal(name, frozenset(uids), frozenset(gids), client_key,
                     _keystores(f"{where}.keystores", table["keystores"], keystores))


def _keystores(where: str, value: Any, known: set[str]) -> frozenset[str] | None:
    names = _str_list(where, value)
    if not names:
        raise AccessConfigError(f"{where}: name at least one keystore, or \"*\"")
    if ALL_KEYSTORES in names:
        if len(names) > 1:
            raise AccessConfigError(f"{where}: \"*\" must be the only entry")
        return None
    for name in names:
        if name not in known:
            raise AccessConfigError(
                f"{where}: no keystore named {name!r} in [keystores]")
    return frozenset(names)


def _check_unique_uids(principals: dict[str, Principal]) -> None:
    owner: dict[int, str] = {}
    for principal in principals.values():
        if principal.client_key:
            continue
        for uid in sorted(principal.uids):
            if uid in owner:
                raise AccessConfigError(
                    f"principals.{principal.name}: uid {uid} already belongs to "
                    f"principals.{owner[uid]}; a uid may name one principal")
            owner[uid] = principal.name


def _str_list(where: str, value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise AccessConfigError(f"{where}: expected a list of strings")
    return value


def _int_list(where: str, value: Any) -> list[int]:
    if not isinstance(value, list) or not all(
            isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**32
            for v in value):
        raise AccessConfigError(f"{where}: expected a list of uids (integers)")
    return value


def _bool(where: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise AccessConfigError(f"{where}: expected true or false")
    return value


def _user_uid(where: str, user: str) -> int:
    try:
        return pwd.getpwnam(user).pw_uid
    except KeyError:
        raise AccessConfigError(f"{where}: no user named {user!r}") from None


def _group_gid(where: str, group: str) -> int:
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise AccessConfigError(f"{where}: no group named {group!r}") from None


def find_principal(principals: dict[str, Principal], peer: Peer) -> Principal | None:
    """Return the principal a peer without a client key is, or None."""
    best: Principal | None = None
    best_rank = 0
    for principal in principals.values():
        if principal.client_key:
            continue
        rank = principal.match(peer)
        if rank > best_rank:
            best, best_rank = principal, rank
    return best


# --- /proc ------------------------------------------------------------------


def process_start_time(pid: int | None) -> int | None:
    """Return the start time of ``pid`` in clock ticks since boot, or None."""
    if pid is None or pid <= 0:
        return None
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            text = stat.read().decode("ascii", "replace")
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses, so
    # fields are counted from the last ')'. Field 22 is the start time.
    fields = text[text.rfind(")") + 2:].split()
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def process_groups(pid: int | None, start_time: int | None) -> tuple[int, ...] | None:
    """Read the supplementary groups of ``pid`` from ``/proc/<pid>/status``.

    Returns None unless the process still has ``start_time``, so a pid
    that was reused by another process never lends it its groups.
    """
    if pid is None or start_time is None:
        return None
    try:
        with open(f"/proc/{pid}/status", "rb") as status:
            lines = status.read().decode("ascii", "replace").splitlines()
    except OSError:
        return None
    groups: tuple[int, ...] | None = None
    for line in lines:
        if line.startswith("Groups:"):
            try:
                groups = tuple(int(g) for g in line.split()[1:])
            except ValueError:
                return None
    if process_start_time(pid) != start_time:
        return None
    return groups
