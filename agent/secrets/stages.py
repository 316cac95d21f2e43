"""Version stage rules of the Secrets Manager, as pure functions.

A stage names at most one version; a version carries any number of
stages. A new version that takes ``ACSCurrent`` moves the previous
current version to ``ACSPrevious`` (which leaves its former holder). A
secret carries at most ``MAX_STAGES`` distinct stages and keeps at most
``MAX_VERSIONS`` versions: when a new version would exceed that, the
oldest versions without a stage are dropped. Every function returns a
new stage map and raises ``client.errors`` types for a forbidden change.
"""

from __future__ import annotations

import re

from agent.store.records import ACS_CURRENT, ACS_PREVIOUS
from client.errors import InvalidParameterError, LimitExceededError

MAX_STAGES = 8
MAX_VERSIONS = 10
STAGE_PATTERN = re.compile(r"[A-Za-z0-9_.@-]{1,64}")
SYSTEM_STAGES = (ACS_CURRENT, ACS_PREVIOUS)


def validate_stage(stage: str) -> str:
    """Return ``stage`` if it is a valid stage name.

    Raises:
        InvalidParameterError: it is not 1 to 64 letters, digits or _.@-
    """
    if not isinstance(stage, str) or not STAGE_PATTERN.fullmatch(stage):
        raise InvalidParameterError(
            f"VersionStage {stage!r} is invalid: use 1 to 64 letters, digits, "
            "'_', '.', '@' or '-'.")
    return stage


def _check_count(stages: dict[str, str]) -> dict[str, str]:
    if len(stages) > MAX_STAGES:
        raise LimitExceededError(
            f"A secret carries at most {MAX_STAGES} version stages.")
    return stages


def _move(stages: dict[str, str], stage: str, version_id: str) -> None:
    # Taking ACSCurrent demotes the old current version to ACSPrevious.
    old = stages.get(stage)
    if stage == ACS_CURRENT and old is not None and old != version_id:
        stages[ACS_PREVIOUS] = old
    stages[stage] = version_id


def stages_after_put(stages: dict[str, str], version_id: str,
                     requested: list[str]) -> dict[str, str]:
    """Return the stage map after a new version takes ``requested`` stages."""
    result = dict(stages)
    for stage in requested:
        _move(result, validate_stage(stage), version_id)
    return _check_count(result)


def stages_after_update(stages: dict[str, str], stage: str,
                        remove_from: str | None, move_to: str | None,
                        version_ids: set[str]) -> dict[str, str]:
    """Return the stage map after UpdateSecretVersionStage.

    ``remove_from`` must be the version that carries ``stage`` now;
    ``move_to`` must be one of ``version_ids``. ACSCurrent and
    ACSPrevious can only be moved, never just removed.

    Raises:
        InvalidParameterError: a rule above is broken.
        LimitExceededError: the secret would carry too many stages.
    """
    validate_stage(stage)
    if remove_from is None and move_to is None:
        raise InvalidParameterError(
            "Set RemoveFromVersion, MoveToVersion or both.")
    if stage in SYSTEM_STAGES and move_to is None:
        raise InvalidParameterError(
            f"The stage {stage} can only be moved: set MoveToVersion.")
    holder = stages.get(stage)
    if remove_from is not None and remove_from != holder:
        raise InvalidParameterError(
            f"The stage {stage} is not on version {remove_from!r}.")
    if move_to is not None and move_to not in version_ids:
        raise InvalidParameterError(f"The version {move_to!r} does not exist.")
    result = dict(stages)
    if move_to is None:
        del result[stage]
    else:
        _move(result, stage, move_to)
    return _check_count(result)


def versions_to_drop(version_ids: list[str], stages: dict[str, str]) -> list[str]:
    """Return the oldest stageless versions beyond ``MAX_VERSIONS``.

    ``version_ids`` is ordered oldest first.
    """
    excess = len(version_ids) - MAX_VERSIONS
    if excess <= 0:
        return []
    staged = set(stages.values())
    stageless = [version_id for version_id in version_ids if version_id not in staged]
    return stageless[:excess]


def stages_of(stages: dict[str, str], version_id: str) -> list[str]:
    """Return the stages on one version, sorted."""
    return sorted(stage for stage, holder in stages.items() if holder == version_id)
