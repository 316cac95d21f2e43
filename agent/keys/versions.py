"""Key versions: CreateKeyVersion, DescribeKeyVersion, ListKeyVersions.

Every key has one or more versions and one primary version. Encrypt and
the data key calls use the primary. Decrypt uses the version named in
the blob, so ciphertext keeps decrypting after a rotation, and
ReEncrypt moves it to the current primary. CreateKeyVersion is a manual
rotation (see ``rotation``): the new version becomes primary, and a key
under an automatic policy is next due one interval later.

Limits: at most 50 versions per key by default (``[limits] versions``;
Rejected.LimitExceeded), counting versions from automatic rotation too,
which itself has no limit.
"""

from __future__ import annotations

import datetime
from typing import Any

from agent.context import RequestContext
from agent.keys import rotation, states
from agent.keys.ops import KEY_ID, PAGE_NUMBER, PAGE_SIZE
from agent.keys.service import ORIGIN_KMS, KeyService
from agent.keystore.base import SYMMETRIC_KEY_BYTES
from agent.locks import contention_error
from agent.rpc.dispatch import CREATE, READ, Operation
from agent.rpc.params import Param
from agent.store.base import ConflictError
from agent.store.records import KeyRecord, KeyVersionRecord, parse_time
from client.errors import (
    KeyVersionNotFoundError, LimitExceededError,
    UnsupportedOperationError, UnsupportedOriginError,
)

MAX_VERSIONS = 50
# Alibaba Cloud KMS creates versions of asymmetric keys at least 7 days
# apart, because each version is a new key pair that callers name
# explicitly. Symmetric versions are invisible to callers, since blobs
# name their version. The usual reason to rotate one by hand is a
# suspected exposure, which should not wait up to a week after the last
# rotation. So symmetric keys have no spacing, and MAX_VERSIONS still
# bounds them.
ASYMMETRIC_VERSION_SPACING = datetime.timedelta(days=7)
_CREATE_ATTEMPTS = 5


def _check_versionable(key: KeyRecord) -> None:
    states.require_state(key, states.USE)
    if key.origin != ORIGIN_KMS:
        raise UnsupportedOriginError(
            f"The key {key.key_id} has Origin {key.origin}, and the agent "
            "cannot create versions of imported key material.")
    # NOTE: HMAC key specs are recognized by the HMAC prefix, a guess
    # because the reference does not name them.
    if key.key_spec.upper().startswith("HMAC"):
        raise UnsupportedOperationError(
            f"The key {key.key_id} is an HMAC key, which has a single version.")


def _version_limit(service: KeyService) -> int:
    # The store carries the configured [limits] versions, if any.
    limits = getattr(service.store, "limits", None)
    if limits is None or limits.versions is None:
        return MAX_VERSIONS
    return limits.versions


def _check_limits(key: KeyRecord, versions: list[KeyVersionRecord],
                  now: datetime.datetime, limit: int) -> None:
    if len(versions) >= limit:
        raise LimitExceededError(
            f"The key {key.key_id} has {len(versions)} versions, and a key can "
            f"have at most {limit}.")
    if key.key_spec in SYMMETRIC_KEY_BYTES or not versions:
        return
    newest = parse_time(versions[-1].creation_date)
    if now - newest < ASYMMETRIC_VERSION_SPACING:
        raise LimitExceededError(
            f"The newest version of the asymmetric key {key.key_id} was created "
            f"at {versions[-1].creation_date}; versions of asymmetric keys are "
            "created at least 7 days apart.")


async def create_key_version(service: KeyService, key_ref: str
                             ) -> tuple[KeyRecord, KeyVersionRecord]:
    """CreateKeyVersion: add a version to a key and make it primary.

    Returns:
        The key as stored and its new version.
    Raises:
        KeyDisabledError and the other 409 errors: the key is not Enabled.
        UnsupportedOriginError: the key material was imported.
        UnsupportedOperationError: the key is an HMAC key.
        LimitExceededError: the key has its limit of versions (50 by
            default), or is asymmetric with a version younger than 7 days.
    """
    key_id = (await service.resolve(key_ref)).key_id
    async with service.write_locks.hold(key_id):
        for _ in range(_CREATE_ATTEMPTS):
            key = await service.resolve(key_id)
            _check_versionable(key)
            versions = await service.store.list_versions(key.key_id)
            _check_limits(key, versions, service.clock.now(),
                          _version_limit(service))
            try:
                return await rotation.rotate(service, key)
            except ConflictError:
                continue
    raise contention_error(f"key {key_id}")


async def describe_key_version(service: KeyService, key_ref: str,
                               version_id: str) -> tuple[KeyRecord, KeyVersionRecord]:
    """DescribeKeyVersion: one version of a key, in any key state.

    Raises:
        KeyNotFoundError: the key does not exist.
        KeyVersionNotFoundError: the version does not exist or belongs to
            another key.
    """
    key = await service.resolve(key_ref)
    version = await service.store.get_version(version_id)
    if version is None or version.key_id != key.key_id:
        raise KeyVersionNotFoundError(
            f"The key {key.key_id} has no version {version_id!r}.")
    return key, version


def version_entry(version: KeyVersionRecord) -> dict[str, str]:
    """Return the API's KeyVersion map for a version."""
    return {"KeyId": version.key_id, "KeyVersionId": version.version_id,
            "CreationDate": version.creation_date}


# --- operations --------------------------------------------------------------


def _note(ctx: RequestContext, key: KeyRecord, version_id: str | None) -> None:
    ctx.key_id = key.key_id
    ctx.key_version_id = version_id


async def create_key_version_op(services: Any, ctx: RequestContext,
                                values: dict) -> dict:
    key, version = await create_key_version(services.keys, values["KeyId"])
    _note(ctx, key, version.version_id)
    return {"KeyVersion": version_entry(version)}


async def describe_key_version_op(services: Any, ctx: RequestContext,
                                  values: dict) -> dict:
    key, version = await describe_key_version(
        services.keys, values["KeyId"], values["KeyVersionId"])
    _note(ctx, key, version.version_id)
    return {"KeyVersion": version_entry(version)}


async def list_key_versions_op(services: Any, ctx: RequestContext,
                               values: dict) -> dict:
    service: KeyService = services.keys
    key = await service.resolve(values["KeyId"])
    _note(ctx, key, None)
    versions = await service.store.list_versions(key.key_id)
    number = values.get("PageNumber", 1)
    size = values.get("PageSize", 10)
    page = versions[(number - 1) * size:number * size]
    return {"KeyVersions": {"KeyVersion": [version_entry(v) for v in page]},
            "PageNumber": number, "PageSize": size, "TotalCount": len(versions)}


def _op(name: str, handler, group: str, *params: Param) -> Operation:
    return Operation(name, handler, params, permission=f"kms:{name}", group=group)


OPERATIONS = [
    _op("CreateKeyVersion", create_key_version_op, CREATE, KEY_ID),
    _op("DescribeKeyVersion", describe_key_version_op, READ, KEY_ID,
        Param("KeyVersionId", required=True, low=1, high=64)),
    _op("ListKeyVersions", list_key_versions_op, READ, KEY_ID, PAGE_NUMBER,
        PAGE_SIZE),
]
