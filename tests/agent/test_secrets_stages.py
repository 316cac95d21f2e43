"""The version stage rules as pure functions, table by table."""

from __future__ import annotations

import pytest

from agent.secrets import stages
from client import errors

C, P = "ACSCurrent", "ACSPrevious"


@pytest.mark.parametrize("before, version, requested, after", [
    ({}, "v1", [C], {C: "v1"}),
    ({C: "v1"}, "v2", [C], {C: "v2", P: "v1"}),
    ({C: "v2", P: "v1"}, "v3", [C], {C: "v3", P: "v2"}),
    ({C: "v1"}, "v2", ["blue"], {C: "v1", "blue": "v2"}),
    ({C: "v1", "blue": "v1"}, "v2", ["blue"], {C: "v1", "blue": "v2"}),
    ({C: "v1"}, "v2", [C, "blue"], {C: "v2", P: "v1", "blue": "v2"}),
    ({C: "v1"}, "v2", [], {C: "v1"}),
])
def test_put_stage_table(before, version, requested, after):
    """A put moves requested stages; ACSCurrent demotes to ACSPrevious."""
    assert stages.stages_after_put(before, version, requested) == after


@pytest.mark.parametrize("before, stage, remove, move, after", [
    ({C: "v2", P: "v1"}, C, "v2", "v1", {C: "v1", P: "v2"}),
    ({C: "v2", P: "v1"}, C, None, "v1", {C: "v1", P: "v2"}),
    ({C: "v2", P: "v1"}, P, None, "v2", {C: "v2", P: "v2"}),
    ({C: "v1", "blue": "v1"}, "blue", "v1", None, {C: "v1"}),
    ({C: "v1"}, "blue", None, "v2", {C: "v1", "blue": "v2"}),
    ({C: "v1", "blue": "v1"}, "blue", "v1", "v2", {C: "v1", "blue": "v2"}),
    ({C: "v1"}, C, "v1", "v1", {C: "v1"}),
])
def test_update_stage_table(before, stage, remove, move, after):
    """UpdateSecretVersionStage moves or removes one stage."""
    result = stages.stages_after_update(before, stage, remove, move, {"v1", "v2"})
    assert result == after


@pytest.mark.parametrize("before, stage, remove, move", [
    ({C: "v1"}, C, "v1", None),
    ({C: "v1", P: "v2"}, P, "v2", None),
    ({C: "v1"}, "blue", None, None),
    ({C: "v1"}, C, "v2", "v2"),
    ({C: "v1"}, "blue", None, "v9"),
    ({C: "v1"}, "bad stage", None, "v1"),
])
def test_update_stage_rejections(before, stage, remove, move):
    """Forbidden stage changes raise InvalidParameter."""
    with pytest.raises(errors.InvalidParameterError):
        stages.stages_after_update(before, stage, remove, move, {"v1", "v2"})


def test_stage_count_limit():
    """Eight stages are allowed and the ninth raises LimitExceeded."""
    full = {f"s{n}": "v1" for n in range(8)}
    with pytest.raises(errors.LimitExceededError):
        stages.stages_after_put(full, "v2", ["s8"])


def test_stage_count_at_limit():
    """Moving a stage that exists keeps the count at eight."""
    full = {f"s{n}": "v1" for n in range(8)}
    assert stages.stages_after_put(full, "v2", ["s7"])["s7"] == "v2"


@pytest.mark.parametrize("count, staged, dropped", [
    (10, {C: "v10"}, []),
    (11, {C: "v11", P: "v10"}, ["v1"]),
    (11, {C: "v11", P: "v10", "pin": "v1"}, ["v2"]),
    (12, {C: "v12", "pin": "v1", "old": "v2"}, ["v3", "v4"]),
])
def test_version_eviction_table(count, staged, dropped):
    """Beyond ten versions the oldest stageless ones are dropped."""
    ids = [f"v{n}" for n in range(1, count + 1)]
    assert stages.versions_to_drop(ids, staged) == dropped
