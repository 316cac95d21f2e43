"""Aliases of keys, and the tag rules of every taggable resource.

Alias names follow Alibaba Cloud KMS: ``alias/`` then 1 to 255 letters,
digits, ``_``, ``-`` or ``/``; names under ``alias/acs`` are reserved for
the cloud's own services. Tag keys and values are at most 128 characters
and keys must not start with ``aliyun`` or ``acs:``; a resource carries at
most 20 tags.
"""

from __future__ import annotations

import re

from agent.keys import states
from agent.keys.service import KeyService
from agent.store.base import DuplicateError, LimitError, Store
from agent.store.records import AliasRecord, KeyRecord
from client.errors import (
    AliasAlreadyExistsError, AliasNotFoundError, InvalidParameterError,
    LimitExceededError, UnsupportedAliasError,
)

ALIAS_PATTERN = re.compile(r"alias/[A-Za-z0-9_/-]{1,255}")
MAX_TAG_CHARS = 128
MAX_TAGS_PER_RESOURCE = 20
RESERVED_TAG_PREFIXES = ("aliyun", "acs:")


def validate_alias_name(name: str) -> str:
    """Return ``name`` if it is a valid, unreserved alias name.

    Raises:
        InvalidParameterError: the name does not match the pattern.
        UnsupportedAliasError: the name is in the reserved namespace.
    """
    if not ALIAS_PATTERN.fullmatch(name):
        raise InvalidParameterError(
            f"AliasName {name!r} is invalid: it must be 'alias/' followed by 1 to "
            "255 letters, digits, '_', '-' or '/'.")
    if name.startswith("alias/acs"):
        raise UnsupportedAliasError(
            f"AliasName {name!r} is in the reserved namespace alias/acs.")
    return name


def validate_tags(tags: dict[str, str]) -> dict[str, str]:
    """Check tag keys and values; return them unchanged.

    Raises:
        InvalidParameterError: a key or value is empty, too long or reserved.
    """
    for key, value in tags.items():
        if not key or len(key) > MAX_TAG_CHARS or len(value) > MAX_TAG_CHARS:
            raise InvalidParameterError(
                f"Tag {key!r}: keys must be 1 to {MAX_TAG_CHARS} characters and "
                f"values at most {MAX_TAG_CHARS}.")
        if key.lower().startswith(RESERVED_TAG_PREFIXES):
            raise InvalidParameterError(
                f"Tag key {key!r} starts with a reserved prefix (aliyun, acs:).")
    return tags


async def lookup_alias(store: Store, name: str) -> AliasRecord:
    """Return an alias record or raise AliasNotFoundError."""
    alias = await store.get_alias(name)
    if alias is None:
        raise AliasNotFoundError(f"The alias {name!r} is not found.")
    return alias


async def _direct_key(service: KeyService, key_ref: str) -> KeyRecord:
    # An alias may point only at a key, never at another alias.
    if key_ref.startswith("alias/") or ":alias/" in key_ref:
        raise InvalidParameterError("KeyId of an alias must be a key id or key ARN.")
    return await service.resolve(key_ref)


async def create_alias(service: KeyService, name: str, key_ref: str) -> KeyRecord:
    """CreateAlias: bind a new alias name to a key."""
    validate_alias_name(name)
    key = await _direct_key(service, key_ref)
    states.require_state(key, states.SCHEDULE)
    now = service.now()
    try:
        await service.store.create_alias(AliasRecord(name, key.key_id, now, now))
    except DuplicateError:
        raise AliasAlreadyExistsError(f"The alias {name!r} already exists.") from None
    except LimitError as exc:
        raise LimitExceededError(str(exc)) from None
    return key


async def update_alias(service: KeyService, name: str, key_ref: str) -> KeyRecord:
    """UpdateAlias: point an existing alias at another key."""
    validate_alias_name(name)
    key = await _direct_key(service, key_ref)
    states.require_state(key, states.EDIT)
    if not await service.store.update_alias(name, key.key_id, service.now()):
        raise AliasNotFoundError(f"The alias {name!r} is not found.")
    return key


async def delete_alias(service: KeyService, name: str) -> None:
    """DeleteAlias."""
    validate_alias_name(name)
    if not await service.store.delete_alias(name):
        raise AliasNotFoundError(f"The alias {name!r} is not found.")
