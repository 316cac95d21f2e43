"""Rotation policy and automatic rotation, on a FakeClock with no sleeps.

The rotation job's steps (``due_key_ids`` then ``rotate_if_due`` per key)
run here directly, as ``agent.daemon.rotation_loop`` runs them, against
the real Key Service and SQLite store. Two ``Agent`` objects on one data
directory stand for two agents sharing a database.
"""

from __future__ import annotations

import functools
import logging

import pytest
import trio

from agent import daemon
from agent.config import parse_config
from agent.keys import rotation
from agent.logs import LOGGER_NAME
from agent.store.records import parse_time
from client import errors
from tests.agent.test_versions import Agent, insert_key
from tests.fakes import FakeKeystore


@pytest.fixture
async def agent(tmp_path):
    instance = Agent(tmp_path / "data")
    yield instance
    await instance.store.aclose()


async def run_job(agent) -> list[str]:
    """Run one pass of the rotation job; return the new version ids."""
    created = []
    for key_id in await rotation.due_key_ids(agent.keys):
        version = await rotation.rotate_if_due(agent.keys, key_id)
        if version is not None:
            created.append(version.version_id)
    return created


async def rotating_key(agent, interval="30d") -> str:
    return await agent.new_key(EnableAutomaticRotation=True,
                               RotationInterval=interval)


# --- intervals -----------------------------------------------------------------


@pytest.mark.parametrize("text, seconds", [
    ("7d", 604800), ("30d", 2592000), ("730d", 63072000), ("168h", 604800),
    ("720h", 2592000), ("10080m", 604800), ("604800s", 604800),
    ("63072000s", 63072000), ("0030d", 2592000),
])
def test_interval_parses(text, seconds):
    """Every unit converts to seconds within 7 to 730 days."""
    assert rotation.parse_interval(text) == seconds


@pytest.mark.parametrize("text", [
    "6d", "731d", "167h", "604799s", "63072001s", "0d", "", "30", "d", "30D",
    "30 d", " 30d", "30d ", "-30d", "+30d", "30.5d", "1w", "30dd", "3e1d",
    "99999999999999d",
])
def test_interval_rejects(text):
    """Malformed or out-of-range intervals are InvalidParameter."""
    with pytest.raises(errors.InvalidParameterError):
        rotation.parse_interval(text)


def test_interval_formats_seconds():
    """Intervals are reported in seconds with an s suffix."""
    assert rotation.format_interval(2592000) == "2592000s"


@pytest.mark.parametrize("values, expected", [
    ({}, None),
    ({"EnableAutomaticRotation": False}, None),
    ({"EnableAutomaticRotation": False, "RotationInterval": "30d"}, None),
    ({"EnableAutomaticRotation": True, "RotationInterval": "30d"}, 2592000),
    ({"RotationInterval": "8d"}, None),
])
def test_requested_interval_table(values, expected):
    """Only EnableAutomaticRotation=true turns the interval into a policy."""
    assert rotation.requested_interval(values) == expected


def test_requested_interval_missing():
    """Enabling rotation without an interval is MissingParameter."""
    with pytest.raises(errors.MissingParameterError):
        rotation.requested_interval({"EnableAutomaticRotation": True})


def test_requested_interval_checked_when_off():
    """A bad interval is rejected even when rotation stays off."""
    with pytest.raises(errors.InvalidParameterError):
        rotation.requested_interval({"EnableAutomaticRotation": False,
                                     "RotationInterval": "1d"})


# --- policy through the API --------------------------------------------------------


async def test_create_key_with_rotation(agent):
    """CreateKey with a policy shows it and the first due date in DescribeKey."""
    meta = (await agent.call("CreateKey", EnableAutomaticRotation=True,
                             RotationInterval="720h"))["KeyMetadata"]
    assert meta["AutomaticRotation"] == "Enabled"
    assert meta["RotationInterval"] == "2592000s"
    assert meta["NextRotationDate"] == "2026-01-31T00:00:00Z"
    assert "LastRotationDate" not in meta
    described = await agent.describe(meta["KeyId"])
    assert described["NextRotationDate"] == "2026-01-31T00:00:00Z"


async def test_create_key_without_rotation(agent):
    """A key created without a policy has AutomaticRotation Disabled."""
    meta = await agent.describe(await agent.new_key())
    assert meta["AutomaticRotation"] == "Disabled"
    assert "RotationInterval" not in meta
    assert "NextRotationDate" not in meta


@pytest.mark.parametrize("params, error", [
    ({"EnableAutomaticRotation": True}, errors.MissingParameterError),
    ({"EnableAutomaticRotation": True, "RotationInterval": "6d"},
     errors.InvalidParameterError),
    ({"EnableAutomaticRotation": True, "RotationInterval": "7"},
     errors.InvalidParameterError),
    ({"EnableAutomaticRotation": "yes", "RotationInterval": "7d"},
     errors.InvalidParameterError),
])
async def test_create_key_bad_policy(agent, params, error):
    """CreateKey with a bad policy fails and creates no key."""
    with pytest.raises(error):
        await agent.call("CreateKey", **params)
    assert (await agent.call("ListKeys"))["TotalCount"] == 0
    assert agent.keystore.generated == 0


async def test_update_policy_enables(agent):
    """UpdateRotationPolicy sets the interval and the next due date."""
    key_id = await agent.new_key()
    agent.clock.advance(days=3)
    await agent.call("UpdateRotationPolicy", KeyId=key_id,
                     EnableAutomaticRotation=True, RotationInterval="604800s")
    meta = await agent.describe(key_id)
    assert meta["AutomaticRotation"] == "Enabled"
    assert meta["RotationInterval"] == "604800s"
    assert meta["NextRotationDate"] == "2026-01-08T00:00:00Z"


async def test_update_policy_disables(agent):
    """Turning rotation off clears the interval and the due date."""
    key_id = await rotating_key(agent)
    await agent.call("UpdateRotationPolicy", KeyId=key_id,
                     EnableAutomaticRotation=False)
    meta = await agent.describe(key_id)
    assert meta["AutomaticRotation"] == "Disabled"
    assert "RotationInterval" not in meta
    assert "NextRotationDate" not in meta
    agent.clock.advance(days=400)
    assert await run_job(agent) == []


async def test_update_policy_changes_interval(agent):
    """A new interval counts from the last rotation."""
    key_id = await rotating_key(agent, "30d")
    agent.clock.advance(days=31)
    await run_job(agent)
    await agent.call("UpdateRotationPolicy", KeyId=key_id,
                     EnableAutomaticRotation=True, RotationInterval="10d")
    meta = await agent.describe(key_id)
    assert meta["LastRotationDate"] == "2026-02-01T00:00:00Z"
    assert meta["NextRotationDate"] == "2026-02-11T00:00:00Z"


async def test_update_policy_needs_enable_flag(agent):
    """EnableAutomaticRotation is required."""
    key_id = await agent.new_key()
    with pytest.raises(errors.MissingParameterError):
        await agent.call("UpdateRotationPolicy", KeyId=key_id,
                         RotationInterval="30d")


async def test_update_policy_missing_interval(agent):
    """Enabling without RotationInterval is MissingParameter."""
    key_id = await agent.new_key()
    with pytest.raises(errors.MissingParameterError):
        await agent.call("UpdateRotationPolicy", KeyId=key_id,
                         EnableAutomaticRotation=True)


async def test_update_policy_unknown_key(agent):
    """A policy for an unknown key is KeyNotFound."""
    with pytest.raises(errors.KeyNotFoundError):
        await agent.call("UpdateRotationPolicy", KeyId="key-nothere",
                         EnableAutomaticRotation=True, RotationInterval="30d")


@pytest.mark.parametrize("prepare, error", [
    ("DisableKey", errors.KeyDisabledError),
    ("ScheduleKeyDeletion", errors.KeyPendingDeletionError),
])
@pytest.mark.parametrize("enable", [True, False])
async def test_update_policy_state_errors(agent, prepare, error, enable):
    """UpdateRotationPolicy on a key that is not Enabled is a 409 error."""
    key_id = await agent.new_key()
    params = {"PendingWindowInDays": 7} if prepare == "ScheduleKeyDeletion" else {}
    await agent.call(prepare, KeyId=key_id, **params)
    with pytest.raises(error):
        await agent.call("UpdateRotationPolicy", KeyId=key_id,
                         EnableAutomaticRotation=enable, RotationInterval="30d")


@pytest.mark.parametrize("spec, origin, state, error", [
    ("RSA_2048", "Aliyun_KMS", "Enabled", errors.UnsupportedOperationError),
    ("EC_P256", "Aliyun_KMS", "Enabled", errors.UnsupportedOperationError),
    ("HMAC_SHA_256", "Aliyun_KMS", "Enabled", errors.UnsupportedOperationError),
    ("Aliyun_AES_256", "EXTERNAL", "Enabled", errors.UnsupportedOriginError),
    ("Aliyun_AES_256", "EXTERNAL", "PendingImport", errors.UnsupportedOriginError),
])
async def test_update_policy_unrotatable_keys(agent, spec, origin, state, error):
    """Asymmetric, HMAC and EXTERNAL keys reject a rotation policy."""
    key_id = await insert_key(agent, spec, origin=origin, state=state)
    with pytest.raises(error):
        await agent.call("UpdateRotationPolicy", KeyId=key_id,
                         EnableAutomaticRotation=True, RotationInterval="30d")
    assert (await agent.describe(key_id))["AutomaticRotation"] == "Disabled"


async def test_disabled_key_shows_suspended(agent):
    """A policy on a Disabled key is shown as Suspended, then resumes."""
    key_id = await rotating_key(agent)
    await agent.call("DisableKey", KeyId=key_id)
    assert (await agent.describe(key_id))["AutomaticRotation"] == "Suspended"
    await agent.call("EnableKey", KeyId=key_id)
    assert (await agent.describe(key_id))["AutomaticRotation"] == "Enabled"


# --- the rotation job --------------------------------------------------------------


async def test_rotation_not_due(agent):
    """Before the due date the job creates nothing."""
    key_id = await rotating_key(agent)
    agent.clock.advance(days=29, hours=23, minutes=59, seconds=59)
    assert await run_job(agent) == []
    assert len(await agent.version_ids(key_id)) == 1


async def test_rotation_due_creates_primary(agent):
    """At the due date the job adds a primary version and moves the dates."""
    key_id = await rotating_key(agent)
    first = (await agent.describe(key_id))["PrimaryKeyVersion"]
    agent.clock.advance(days=30)
    created = await run_job(agent)
    assert len(created) == 1
    meta = await agent.describe(key_id)
    assert meta["PrimaryKeyVersion"] == created[0]
    assert meta["LastRotationDate"] == "2026-01-31T00:00:00Z"
    assert meta["NextRotationDate"] == "2026-03-02T00:00:00Z"
    assert await agent.version_ids(key_id) == [first, created[0]]


async def test_rotation_once_per_due_date(agent):
    """Repeated runs rotate once per due date, however often they run."""
    key_id = await rotating_key(agent, "7d")
    agent.clock.advance(days=7)
    assert len(await run_job(agent)) == 1
    assert await run_job(agent) == []
    agent.clock.advance(days=6)
    assert await run_job(agent) == []
    agent.clock.advance(days=1)
    assert len(await run_job(agent)) == 1
    assert await run_job(agent) == []
    assert len(await agent.version_ids(key_id)) == 3


async def test_late_rotation_happens_once(agent):
    """A key several intervals overdue rotates once, then counts from now."""
    key_id = await rotating_key(agent, "7d")
    agent.clock.advance(days=40)
    assert len(await run_job(agent)) == 1
    assert await run_job(agent) == []
    meta = await agent.describe(key_id)
    assert meta["NextRotationDate"] == "2026-02-17T00:00:00Z"


async def test_rotation_after_restart(tmp_path):
    """A rotation that fell due while the agent was down runs at its start."""
    before = Agent(tmp_path / "data")
    key_id = await rotating_key(before)
    blob = (await before.call("Encrypt", KeyId=key_id, Plaintext=b"old"))[
        "CiphertextBlob"]
    await before.store.aclose()

    before.clock.advance(days=45)
    restarted = Agent(tmp_path / "data", clock=before.clock,
                      keystore=before.keystore)
    try:
        created = await run_job(restarted)
        assert len(created) == 1
        meta = await restarted.describe(key_id)
        assert meta["PrimaryKeyVersion"] == created[0]
        assert meta["LastRotationDate"] == "2026-02-15T00:00:00Z"
        assert await run_job(restarted) == []
        dec = await restarted.call("Decrypt", CiphertextBlob=blob)
        assert dec["Plaintext"] == b"old"
    finally:
        await restarted.store.aclose()


async def test_rotation_skips_disabled_key(agent):
    """A Disabled key is not rotated; once enabled, an overdue one rotates."""
    key_id = await rotating_key(agent, "7d")
    await agent.call("DisableKey", KeyId=key_id)
    agent.clock.advance(days=10)
    assert await run_job(agent) == []
    await agent.call("EnableKey", KeyId=key_id)
    assert len(await run_job(agent)) == 1


async def test_rotation_skips_pending_deletion(agent):
    """A key pending deletion is not rotated."""
    key_id = await rotating_key(agent, "7d")
    await agent.call("ScheduleKeyDeletion", KeyId=key_id, PendingWindowInDays=30)
    agent.clock.advance(days=10)
    assert await run_job(agent) == []
    assert len(await agent.version_ids(key_id)) == 1


async def test_rotation_rotates_only_due_keys(agent):
    """Only the keys whose date has passed rotate in one run."""
    short = await rotating_key(agent, "7d")
    long = await rotating_key(agent, "30d")
    plain = await agent.new_key()
    agent.clock.advance(days=8)
    assert len(await run_job(agent)) == 1
    assert len(await agent.version_ids(short)) == 2
    assert len(await agent.version_ids(long)) == 1
    assert len(await agent.version_ids(plain)) == 1


async def test_rotation_ignores_version_limit(agent):
    """Automatic rotation continues past the 50 versions of CreateKeyVersion."""
    key_id = await rotating_key(agent, "7d")
    for _ in range(49):
        await agent.call("CreateKeyVersion", KeyId=key_id)
    with pytest.raises(errors.LimitExceededError):
        await agent.call("CreateKeyVersion", KeyId=key_id)
    agent.clock.advance(days=7)
    assert len(await run_job(agent)) == 1
    assert len(await agent.version_ids(key_id)) == 51


async def test_manual_version_resets_schedule(agent):
    """CreateKeyVersion on a rotating key pushes the next due date."""
    key_id = await rotating_key(agent, "30d")
    agent.clock.advance(days=20)
    await agent.call("CreateKeyVersion", KeyId=key_id)
    meta = await agent.describe(key_id)
    assert meta["LastRotationDate"] == "2026-01-21T00:00:00Z"
    assert meta["NextRotationDate"] == "2026-02-20T00:00:00Z"
    agent.clock.advance(days=10)
    assert await run_job(agent) == []


async def test_old_blobs_decrypt_after_rotation(agent):
    """Blobs from before each automatic rotation still decrypt."""
    key_id = await rotating_key(agent, "7d")
    blobs = []
    for round_number in range(3):
        enc = await agent.call("Encrypt", KeyId=key_id,
                               Plaintext=b"round %d" % round_number)
        blobs.append(enc)
        agent.clock.advance(days=7)
        await run_job(agent)
    assert len({enc["KeyVersionId"] for enc in blobs}) == 3
    for round_number, enc in enumerate(blobs):
        dec = await agent.call("Decrypt", CiphertextBlob=enc["CiphertextBlob"])
        assert dec["Plaintext"] == b"round %d" % round_number
        assert dec["KeyVersionId"] == enc["KeyVersionId"]


async def test_rotation_gone_key(agent):
    """A key purged between the query and the rotation is skipped."""
    key_id = await rotating_key(agent, "7d")
    await agent.call("ScheduleKeyDeletion", KeyId=key_id, PendingWindowInDays=7)
    agent.clock.advance(days=8)
    await agent.keys.purge_due_keys()
    assert await rotation.rotate_if_due(agent.keys, key_id) is None


# --- several agents ----------------------------------------------------------------


class GatedKeystore(FakeKeystore):
    """A keystore whose generate waits until ``parties`` calls have begun,
    so concurrent rotations all read the key before any of them writes."""

    def __init__(self, parties: int):
        super().__init__()
        self.parties = parties
        self.waiting = 0
        self.gate = trio.Event()

    async def generate(self, version_id, key_spec, protection_level):
        if self.parties:
            self.waiting += 1
            if self.waiting == self.parties:
                self.gate.set()
            await self.gate.wait()
        return await super().generate(version_id, key_spec, protection_level)


async def test_two_agents_rotate_once(tmp_path):
    """Two agents running the job at once create exactly one version."""
    keystore = GatedKeystore(parties=0)
    first = Agent(tmp_path / "data", keystore=keystore)
    second = Agent(tmp_path / "data", clock=first.clock, keystore=keystore)
    try:
        key_id = await rotating_key(first, "7d")
        first.clock.advance(days=7)
        keystore.parties = 2
        results = {}

        async def run(name, agent):
            results[name] = await run_job(agent)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(run, "first", first)
            nursery.start_soon(run, "second", second)
        assert keystore.waiting == 2
        assert sorted(len(created) for created in results.values()) == [0, 1]
        assert len(await second.version_ids(key_id)) == 2
        winner = [v for created in results.values() for v in created][0]
        assert (await first.describe(key_id))["PrimaryKeyVersion"] == winner
    finally:
        await first.store.aclose()
        await second.store.aclose()


async def test_concurrent_manual_and_automatic(tmp_path):
    """CreateKeyVersion racing the job: both versions land, the job rereads."""
    keystore = GatedKeystore(parties=0)
    first = Agent(tmp_path / "data", keystore=keystore)
    second = Agent(tmp_path / "data", clock=first.clock, keystore=keystore)
    try:
        key_id = await rotating_key(first, "7d")
        first.clock.advance(days=7)
        keystore.parties = 2
        job_created = []

        async def job():
            job_created.extend(await run_job(first))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(job)
            nursery.start_soon(
                functools.partial(second.call, "CreateKeyVersion", KeyId=key_id))
        versions = await first.version_ids(key_id)
        meta = await first.describe(key_id)
        # Whichever loses the compare-and-swap rereads: a losing
        # CreateKeyVersion generates again, a losing job finds nothing due.
        assert keystore.waiting == 2 + len(job_created)
        assert len(versions) == 2 + len(job_created)
        assert meta["PrimaryKeyVersion"] == versions[-1]
        assert parse_time(meta["NextRotationDate"]) > first.clock.now()
    finally:
        await first.store.aclose()
        await second.store.aclose()


# --- the daemon's job and configuration -----------------------------------------


class LogRecords(logging.Handler):
    """Collect the agent's log records while installed."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)

    def named(self, message):
        return [r for r in self.records if r.getMessage() == message]


@pytest.fixture
def agent_log():
    handler = LogRecords()
    logger = logging.getLogger(LOGGER_NAME)
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


async def run_loop_once(service, monkeypatch):
    """Run the daemon's rotation loop for one pass, then cancel it."""
    due_key_ids = rotation.due_key_ids
    passes = []
    with trio.CancelScope() as scope:
        async def counted(service):
            passes.append(service)
            if len(passes) > 1:
                scope.cancel()
                return []
            return await due_key_ids(service)

        monkeypatch.setattr(rotation, "due_key_ids", counted)
        await daemon.rotation_loop(service, interval=0)
    assert len(passes) == 2


async def test_rotation_loop_logs_rotation(agent, agent_log, monkeypatch):
    """The daemon job rotates a due key on its first pass and logs it."""
    key_id = await rotating_key(agent, "7d")
    agent.clock.advance(days=7)
    await run_loop_once(agent.keys, monkeypatch)
    primary = (await agent.describe(key_id))["PrimaryKeyVersion"]
    records = agent_log.named("key rotated")
    assert len(records) == 1
    assert records[0].fields == {"key_id": key_id, "key_version": primary}


async def test_rotation_loop_logs_failure(agent, agent_log, monkeypatch):
    """A failing rotation is logged with the key id and the job goes on."""
    key_id = await rotating_key(agent, "7d")
    agent.clock.advance(days=7)

    async def broken(service, key):
        raise RuntimeError("token removed")

    monkeypatch.setattr(rotation, "rotate", broken)
    await run_loop_once(agent.keys, monkeypatch)
    records = agent_log.named("key rotation failed")
    assert len(records) == 1
    assert records[0].fields["key_id"] == key_id
    assert "token removed" in records[0].fields["error"]
    assert agent_log.named("key rotated") == []


def test_config_rotation_check_interval(tmp_path):
    """agent.rotation_check_interval defaults to 60 s and is range checked."""
    raw = {"agent": {"socket": "s", "data_dir": "d"},
           "keystores": {"default": {"type": "software", "domain_key_file": "k"}}}
    assert parse_config(raw, tmp_path).rotation_check_interval == 60.0
    raw["agent"]["rotation_check_interval"] = 0.5
    assert parse_config(raw, tmp_path).rotation_check_interval == 0.5
    raw["agent"]["rotation_check_interval"] = 0
    with pytest.raises(Exception, match="rotation_check_interval"):
        parse_config(raw, tmp_path)
