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
    # SubjectPublicKeyInfo DER of an asymmetric version; empty otherwise.
    public_key: bytes = b""


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
    keystore: tuple[str, ...] = ()


# Secret stages that the Secrets Manager moves by itself.
ACS_CURRENT = "ACSCurrent"
ACS_PREVIOUS = "ACSPrevious"


@dataclasses.dataclass(frozen=True)
class SecretRecord:
    """A secret's metadata and its stage map (stage name to version id).

    ``planned_delete_time`` is set while the secret is in its recovery
    window. ``rotation_interval`` is in seconds. ``last_rotation_error``
    is the failure of the latest rotation attempt, or None after a
    success; it never contains a secret value or command output.
    """

    secret_name: str
    secret_type: str
    encryption_key_id: str
    keystore: str
    description: str
    creator: str
    create_time: str
    update_time: str
    stages: dict[str, str] = dataclasses.field(default_factory=dict)
    planned_delete_time: str | None = None
    automatic_rotation: str = "Disabled"
    rotation_interval: int | None = None
    last_rotation_date: str | None = None
    next_rotation_date: str | None = None
    last_rotation_error: str | None = None
    revision: int = 0


@dataclasses.dataclass(frozen=True)
class SecretVersionRecord:
    """One version of a secret value, sealed in an envelope.

    ``data_key_blob`` is a Key Service ciphertext blob of the data key;
    ``iv`` and ``ciphertext`` are the AES-GCM encryption of the value
    under that data key. ``value_format`` names the envelope layout.
    """

    secret_name: str
    version_id: str
    create_time: str
    data_type: str
    value_format: int
    data_key_blob: bytes = dataclasses.field(repr=False)
    iv: bytes = dataclasses.field(repr=False)
    ciphertext: bytes = dataclasses.field(repr=False)


@dataclasses.dataclass(frozen=True)
class SecretFilter:
    """ListSecrets filters: values within one field are ORed, fields ANDed.

    ``secret_name`` and ``description`` match substrings; the other
    fields match exactly.
    """

    secret_name: tuple[str, ...] = ()
    description: tuple[str, ...] = ()
    secret_type: tuple[str, ...] = ()
    creator: tuple[str, ...] = ()
    keystore: tuple[str, ...] = ()
    tag_key: tuple[str, ...] = ()
    tag_value: tuple[str, ...] = ()
