"""Records the metadata store keeps, shared by every store backend.

Records are frozen: a change builds a new record with
``dataclasses.replace`` and the store writes it with a compare-and-swap
on ``revision``, so two writers (two tasks now, two agents on one
database later) never overwrite each other silently. Times are UTC
strings in the API's form, ``2026-12-04T16:05:15Z``, which sort by time.
"""

from __future__ import annotations

import dataclasses
import datetime

# Key states, as the KMS API names them.
ENABLED = "Enabled"
DISABLED = "Disabled"
PENDING_DELETION = "PendingDeletion"
PENDING_IMPORT = "PendingImport"


def format_time(moment: datetime.datetime) -> str:
    """Format an aware datetime as the API's UTC timestamp."""
    return moment.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str) -> datetime.datetime:
    """Parse a timestamp written by ``format_time``."""
    return datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(
        tzinfo=datetime.timezone.utc)


@dataclasses.dataclass(frozen=True)
class KeyRecord:
    """A customer master key and its metadata."""

    key_id: str
    keystore: str
    key_spec: str
    key_usage: str
    origin: str
    protection_level: str
    description: str
    creator: str
    creation_date: str
    state: str
    primary_version_id: str | None
    deletion_protection: bool = False
    deletion_protection_description: str = ""
    delete_date: str | None = None
    automatic_rotation: str = "Disabled"
    rotation_interval: str | None = None
    last_rotation_date: str | None = None
    next_rotation_date: str | None = None
    material_expire_time: str | None = None
    revision: int = 0


@dataclasses.dataclass(frozen=True)
class KeyVersionRecord:
    """One version of a key; ``wrapped`` is material sealed by the keystore."""

    version_id: str
    key_id: str
    creation_date: str
    protection_level: str
    wrap_format: int
    wrapped: bytes = dataclasses.field(repr=False)


@dataclasses.dataclass(frozen=True)
class AliasRecord:
    """An alias name pointing at one key."""

    alias_name: str
    key_id: str
    creation_date: str
    update_date: str


@dataclasses.dataclass(frozen=True)
class KeyFilter:
    """ListKeys filters: values within one field are ORed, fields ANDed."""

    key_state: tuple[str, ...] = ()
    key_spec: tuple[str, ...] = ()
    key_usage: tuple[str, ...] = ()
    protection_level: tuple[str, ...] = ()
    creator_type: tuple[str, ...] = ()
    key_id: tuple[str, ...] = ()
    alias_name: tuple[str, ...] = ()
    tag_key: tuple[str, ...] = ()
    tag_value: tuple[str, ...] = ()
