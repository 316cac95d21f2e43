"""Key rotation: the automatic rotation policy and the rotation step.

A rotation creates a key version and makes it primary. The new version
and the key update are stored in one compare-and-swap on the key's
revision. So when several agents share a store, exactly one of them
rotates a key for each due date, and the others see a conflict and
reread the key.

Automatic rotation follows UpdateRotationPolicy: intervals of 7 to 730
days, given as a number and a unit (``30d``, ``720h``, ``604800s``) and
reported in seconds (``2592000s``). The next rotation is due one
interval after the last one, or after key creation. A key is rotated
once per due date, however late. Asymmetric, HMAC and EXTERNAL keys
cannot rotate automatically. A policy on a key that is not Enabled is
kept but shown as Suspended, and the key rotates once it is enabled.
The job that calls ``rotate_if_due`` is in ``agent.daemon``.
"""

from __future__ import annotations

import dataclasses
import datetime
import re
from typing import TYPE_CHECKING, Any

from agent.context import RequestContext
from agent.keys import states
from agent.keystore.base import SYMMETRIC_KEY_BYTES
from agent.rpc.dispatch import WRITE, Operation
from agent.rpc.params import BOOL, Param
from agent.store.base import ConflictError
from agent.store.records import (
    ENABLED, KeyRecord, KeyVersionRecord, format_time, parse_time,
)
from client.errors import (
    InvalidParameterError, MissingParameterError, UnsupportedOperationError,
    UnsupportedOriginError,
)

if TYPE_CHECKING:
    from agent.keys.service import KeyService

POLICY_ENABLED = "Enabled"
POLICY_DISABLED = "Disabled"
POLICY_SUSPENDED = "Suspended"
MIN_INTERVAL_SECONDS = 7 * 86400
MAX_INTERVAL_SECONDS = 730 * 86400
# The origin of keys whose material the agent generates, as
# ``service.ORIGIN_KMS`` (which imports this module). EXTERNAL keys hold
# imported material that the agent cannot renew.
ORIGIN_KMS = "Aliyun_KMS"
_UNIT_SECONDS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
_INTERVAL = re.compile(r"([0-9]{1,12})([dhms])")
_ROTATE_ATTEMPTS = 5


# --- the policy --------------------------------------------------------------


def parse_interval(text: str) -> int:
    """Parse a RotationInterval such as ``30d`` and return it in seconds.

    Raises:
        InvalidParameterError: the text is malformed or the interval is
            outside 7 to 730 days.
    """
    match = _INTERVAL.fullmatch(text)
    if match is None:
        raise InvalidParameterError(
            f"RotationInterval {text!r} is invalid: use a whole number followed "
            "by d, h, m or s, such as 30d or 604800s.")
    seconds = int(match[1]) * _UNIT_SECONDS[match[2]]
    if not MIN_INTERVAL_SECONDS <= seconds <= MAX_INTERVAL_SECONDS:
        raise InvalidParameterError(
            f"RotationInterval {text} is outside 7 to 730 days "
            f"({MIN_INTERVAL_SECONDS}s to {MAX_INTERVAL_SECONDS}s).")
    return seconds


def format_interval(seconds: int) -> str:
    """Format an interval as the API reports it, such as ``604800s``."""
    return f"{seconds}s"


def interval_seconds(key: KeyRecord) -> int:
    """Return the rotation interval of a key with a policy, in seconds."""
    if key.rotation_interval is None:
        raise ValueError(f"key {key.key_id} has no rotation interval")
    return int(key.rotation_interval.removesuffix("s"))


def requested_interval(values: dict[str, Any]) -> int | None:
    """Return the interval that request parameters enable, or None.

    Reads EnableAutomaticRotation and RotationInterval, as CreateKey and
    UpdateRotationPolicy take them. An interval is checked even when
    rotation is not enabled, and is then ignored.

    Raises:
        MissingParameterError: rotation is enabled without an interval.
        InvalidParameterError: the interval is invalid.
    """
    text = values.get("RotationInterval")
    seconds = None if text is None else parse_interval(text)
    if not values.get("EnableAutomaticRotation"):
        return None
    if seconds is None:
        raise MissingParameterError(
            "The parameter RotationInterval is required when "
            "EnableAutomaticRotation is true.")
    return seconds


def check_rotatable(key: KeyRecord) -> None:
    """Raise if ``key`` can never rotate automatically.

    Raises:
        UnsupportedOriginError: the key material was imported (EXTERNAL).
        UnsupportedOperationError: the key is asymmetric or an HMAC key.
    """
    if key.origin != ORIGIN_KMS:
        raise UnsupportedOriginError(
            f"The key {key.key_id} has Origin {key.origin}, and only keys with "
            f"Origin {ORIGIN_KMS} can rotate automatically.")
    if key.key_spec not in SYMMETRIC_KEY_BYTES:
        raise UnsupportedOperationError(
            f"The key {key.key_id} has KeySpec {key.key_spec}, and only "
            "symmetric keys can rotate automatically.")


def with_policy(key: KeyRecord, seconds: int | None) -> KeyRecord:
    """Return ``key`` rotating every ``seconds``, or not at all for None.

    The next rotation is due one interval after the last rotation, or
    after key creation; a date already past makes it due at once.

    Raises:
        UnsupportedOriginError, UnsupportedOperationError: as
            ``check_rotatable``, when rotation is being enabled.
    """
    if seconds is None:
        return dataclasses.replace(
            key, automatic_rotation=POLICY_DISABLED, rotation_interval=None,
            next_rotation_date=None)
    check_rotatable(key)
    last = parse_time(key.last_rotation_date or key.creation_date)
    next_date = last + datetime.timedelta(seconds=seconds)
    return dataclasses.replace(
        key, automatic_rotation=POLICY_ENABLED,
        rotation_interval=format_interval(seconds),
        next_rotation_date=format_time(next_date))


def policy_status(key: KeyRecord) -> str:
    """Return AutomaticRotation as DescribeKey shows it.

    A policy on a key that is not Enabled is Suspended: it resumes when
    the key is enabled again.
    """
    if key.automatic_rotation == POLICY_ENABLED and key.state != ENABLED:
        return POLICY_SUSPENDED
    return key.automatic_rotation


def is_due(key: KeyRecord, now: datetime.datetime) -> bool:
    """Return whether automatic rotation of ``key`` is due at ``now``."""
    return (key.automatic_rotation == POLICY_ENABLED and key.state == ENABLED
            and key.next_rotation_date is not None
            and key.next_rotation_date <= format_time(now))


def _rotated(key: KeyRecord, version_id: str, now: datetime.datetime) -> KeyRecord:
    next_date = key.next_rotation_date
    if key.automatic_rotation == POLICY_ENABLED:
        interval = datetime.timedelta(seconds=interval_seconds(key))
        next_date = format_time(now + interval)
    return dataclasses.replace(
        key, primary_version_id=version_id, last_rotation_date=format_time(now),
        next_rotation_date=next_date)


# --- rotating ----------------------------------------------------------------


async def rotate(service: KeyService,
                 key: KeyRecord) -> tuple[KeyRecord, KeyVersionRecord]:
    """Create a version of ``key``, make it primary and store both at once.

    Sets LastRotationDate to now and, under an automatic policy, the next
    rotation one interval later. The caller checks state and limits.

    Returns:
        The stored key and its new version.
    Raises:
        ConflictError: ``key`` changed since it was read; nothing is stored.
    """
    version = await service.new_version(key)
    now = parse_time(version.creation_date)
    updated = _rotated(key, version.version_id, now)
    stored = await service.store.add_key_version(updated, version)
    return stored, version


async def update_policy(service: KeyService, key_ref: str,
                        seconds: int | None) -> KeyRecord:
    """UpdateRotationPolicy: rotate every ``seconds``, or stop for None.

    Raises:
        UnsupportedOriginError, UnsupportedOperationError: the key cannot
            rotate.
        KeyDisabledError and the other 409 errors: the key is not Enabled.
    """
    def mutate(key: KeyRecord) -> KeyRecord:
        check_rotatable(key)
        states.require_state(key, states.USE)
        return with_policy(key, seconds)

    return await service.change_key(key_ref, mutate)


async def due_key_ids(service: KeyService) -> list[str]:
    """Return the ids of keys whose automatic rotation is due now."""
    return await service.store.keys_due_for_rotation(service.now())


async def rotate_if_due(service: KeyService, key_id: str) -> KeyVersionRecord | None:
    """Rotate one key if its automatic rotation is due.

    Safe to run on several agents at once: the losers of the
    compare-and-swap reread the key, find it no longer due and stop.

    Returns:
        The new primary version, or None if the key was not due (or is
        gone, or kept changing under concurrent writers).
    Raises:
        UnsupportedOriginError, UnsupportedOperationError: a key that
            cannot rotate has a policy, which the API never sets.
    """
    for _ in range(_ROTATE_ATTEMPTS):
        key = await service.store.get_key(key_id)
        if key is None or not is_due(key, service.clock.now()):
            return None
        check_rotatable(key)
        try:
            return (await rotate(service, key))[1]
        except ConflictError:
            continue
    return None


# --- operations --------------------------------------------------------------


async def update_rotation_policy(services: Any, ctx: RequestContext,
                                 values: dict) -> dict:
    key = await update_policy(services.keys, values["KeyId"],
                              requested_interval(values))
    ctx.key_id = key.key_id
    return {}


OPERATIONS = [
    Operation("UpdateRotationPolicy", update_rotation_policy,
              (Param("KeyId", required=True, low=1, high=512),
               Param("EnableAutomaticRotation", BOOL, required=True),
               Param("RotationInterval", high=32)),
              permission="kms:UpdateRotationPolicy", group=WRITE),
]
