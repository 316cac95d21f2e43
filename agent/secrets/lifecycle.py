"""Deletion, restore, rotation and long polls of secrets.

DeleteSecret schedules deletion after a recovery window of 7 to 30 days
(default 30), or deletes at once with ForceDeleteWithoutRecovery. A
secret in its window keeps everything; RestoreSecret clears the window
and nothing else, and a purge job deletes it once the window ends.

Rotation of a generic secret runs the configured rotator (see
``rotation``) and stores its output as a new version that takes
ACSCurrent. A failed rotation leaves every version and stage as it was
and records the cause in ``last_rotation_error``. Scheduled rotation
first claims a due secret with a compare-and-swap that pushes its next
rotation date out by the retry delay, so one agent of several runs it.
"""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

import trio

from agent.config import RotationRule
from agent.secrets import validate
from agent.secrets.rotation import RotationError
from agent.secrets.service import WAIT_POLL_SECONDS, SecretService
from agent.store.base import ConflictError
from agent.store.records import ACS_CURRENT, SecretRecord
from client.errors import (
    InvalidParameterError, KmsError, MissingParameterError, ResourceNotFoundError,
    RotationFailedError, UnsupportedOperationError,
)

DEFAULT_RECOVERY_DAYS = 30


async def delete_secret(service: SecretService, ref: str, recovery_days: int | None,
                        force: bool) -> str:
    """DeleteSecret; return the planned delete time (now when forced).

    Raises:
        InvalidParameterError: a recovery window was given with force.
        ResourceInDeleteWindowError: already scheduled, without force.
    """
    name = service.secret_name(ref)
    if force and recovery_days is not None:
        raise InvalidParameterError(
            "Set RecoveryWindowInDays or ForceDeleteWithoutRecovery, not both.")
    if force:
        try:
            if not await service.store.delete_secret(name):
                raise ResourceNotFoundError(f"The secret {name!r} is not found.")
        finally:
            service.changed(name)
        return service.now()
    delete_at = service.later((recovery_days or DEFAULT_RECOVERY_DAYS) * 86400)

    async def mutate(secret: SecretRecord):
        return dataclasses.replace(secret, planned_delete_time=delete_at), None, []

    stored = await service.change(name, mutate)
    return stored.planned_delete_time or delete_at


async def restore_secret(service: SecretService, ref: str) -> SecretRecord:
    """RestoreSecret: end the recovery window; a live secret is unchanged.

    Raises:
        ResourceNotFoundError: the secret does not exist, including after
            a forced deletion or the end of its window.
    """
    secret = await service.get_secret(ref, allow_pending=True)
    if secret.planned_delete_time is None:
        return secret

    async def mutate(current: SecretRecord):
        return dataclasses.replace(current, planned_delete_time=None), None, []

    return await service.change(secret.secret_name, mutate, allow_pending=True)


async def purge_due_secrets(service: SecretService) -> list[str]:
    """Delete every secret whose recovery window has ended; return names.

    Safe with several agents on one database: the store deletes a secret
    only if it is still due, so exactly one run purges each.
    """
    now = service.now()
    purged = []
    for name in await service.store.secrets_due_for_deletion(now):
        if await service.store.purge_secret(name, now):
            service.changed(name)
            purged.append(name)
    return purged


async def update_rotation_policy(service: SecretService, ref: str, enabled: bool,
                                 interval_text: str | None) -> SecretRecord:
    """UpdateSecretRotationPolicy.

    Raises:
        UnsupportedOperationError: enabling without a configured rotator.
        MissingParameterError: enabling without any RotationInterval.
    """
    name = service.secret_name(ref)
    interval = (validate.rotation_interval(interval_text)
                if interval_text is not None else None)
    if enabled:
        require_rotator(service, name)

    async def mutate(secret: SecretRecord):
        seconds = interval or secret.rotation_interval
        if enabled and seconds is None:
            raise MissingParameterError(
                "RotationInterval is required to enable automatic rotation.")
        updated = dataclasses.replace(
            secret, automatic_rotation="Enabled" if enabled else "Disabled",
            rotation_interval=seconds,
            next_rotation_date=service.later(seconds) if enabled else None)
        return updated, None, []

    return await service.change(name, mutate)


def require_rotator(service: SecretService, name: str) -> RotationRule:
    """Return the rotation rule for ``name`` or raise UnsupportedOperation."""
    rule = service.rotator.rule_for(name)
    if rule is None:
        raise UnsupportedOperationError(
            f"No rotation command or entry point is configured for secret "
            f"{name!r}; add a [[secrets.rotation]] rule that matches it.")
    return rule


async def rotate_secret(service: SecretService, ref: str, version_id: str,
                        caller: Any = None) -> SecretRecord:
    """RotateSecret: store the rotator's output as version ``version_id``.

    An existing ``version_id`` succeeds and changes nothing. Any other
    call counts against the ``caller``'s hourly budget, failed ones too;
    scheduled rotations pass no caller and are not counted.

    Raises:
        UnsupportedOperationError: no rotator is configured for the name.
        LimitExceededError: the caller used up its rotations for the hour.
        RotationFailedError: the rotator failed; nothing changed but
            ``last_rotation_error``.
    """
    validate.version_id(version_id)
    secret = await service.get_secret(ref)
    name = secret.secret_name
    versions = await service.store.list_secret_versions(name)
    if any(v.version_id == version_id for v in versions):
        return secret
    rule = require_rotator(service, name)
    if caller is not None:
        service.rotation_budget.take(caller)
    current = await service.read_value(name, None, ACS_CURRENT)
    try:
        data = await service.rotator.next_value(
            rule, name, current.version_id, current.data_type, current.data)
    except RotationError as exc:
        await _record_error(service, name, str(exc))
        raise RotationFailedError(
            f"Rotation of secret {name!r} failed: {exc}. The current version "
            "is unchanged.") from None

    def rotated(record: SecretRecord) -> SecretRecord:
        interval = record.rotation_interval
        enabled = record.automatic_rotation == "Enabled" and interval is not None
        return dataclasses.replace(
            record, last_rotation_date=service.now(), last_rotation_error=None,
            next_rotation_date=service.later(interval) if enabled else None)

    stored, _ = await service.put_value(name, version_id, data, current.data_type,
                                        [ACS_CURRENT], metadata=rotated)
    return stored


async def _record_error(service: SecretService, name: str, message: str) -> None:
    async def mutate(secret: SecretRecord):
        return dataclasses.replace(secret, last_rotation_error=message), None, []

    await service.change(name, mutate)


async def rotate_due_secrets(service: SecretService
                             ) -> list[tuple[str, str, KmsError | None]]:
    """Rotate every secret whose rotation is due and that this agent claims.

    Returns:
        ``(secret name, new version id, error or None)`` for each attempt.
    """
    results: list[tuple[str, str, KmsError | None]] = []
    for name in await service.store.secrets_due_for_rotation(service.now()):
        if not await _claim(service, name):
            continue
        version_id = str(uuid.uuid4())
        try:
            await rotate_secret(service, name, version_id)
            results.append((name, version_id, None))
        except KmsError as exc:
            results.append((name, version_id, exc))
    return results


async def _claim(service: SecretService, name: str) -> bool:
    now = service.now()
    secret = await service.store.get_secret(name)
    if (secret is None or secret.automatic_rotation != "Enabled"
            or secret.planned_delete_time is not None
            or not secret.next_rotation_date or secret.next_rotation_date > now):
        return False
    claimed = dataclasses.replace(
        secret, next_rotation_date=service.later(service.config.rotation_retry_delay))
    try:
        await service.store.write_secret(claimed, None, [])
    except ConflictError:
        return False
    return True


async def wait_change(service: SecretService, ref: str, known_version: str | None,
                      timeout: float) -> tuple[str, bool]:
    """WaitSecretChange: wait until ACSCurrent differs from ``known_version``.

    Without ``known_version`` it waits for the next change from now. It
    returns early, unchanged, when the agent stops.

    Returns:
        ``(current version id, changed)``.
    Raises:
        ResourceNotFoundError, ResourceInDeleteWindowError: the secret is
            gone or scheduled for deletion, also while waiting.
    """
    name = service.secret_name(ref)
    deadline = trio.current_time() + timeout
    while True:
        event = service.notifier.event(name)
        secret = await service.get_secret(name)
        current = secret.stages.get(ACS_CURRENT, "")
        known_version = current if known_version is None else known_version
        remaining = deadline - trio.current_time()
        if current != known_version or remaining <= 0 or service.notifier.closed:
            return current, current != known_version
        await service.notifier.wait(event, name, min(remaining, WAIT_POLL_SECONDS))

