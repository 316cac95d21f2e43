"""Secrets Manager operations through the dispatcher, on a fake keystore.

Real parameter schemas, handlers, services and SQLite store; only the
keystore is a fake and the clock is a FakeClock.
"""

from __future__ import annotations

import pytest
import trio

from agent.secrets import lifecycle
from agent.secrets.service import DEFAULT_KEY_ALIAS
from client import errors
from tests.agent.secret_harness import SecretAgent


@pytest.fixture
async def agent(tmp_path):
    instance = SecretAgent(tmp_path)
    yield instance
    await instance.store.aclose()


async def test_create_get_round_trip(agent):
    """A text secret reads back as text with ACSCurrent on version v1."""
    created = await agent.create(data="s3cret")
    reply = await agent.value()
    assert created["Arn"] == "acs:kms:local:default:secret/app/db"
    assert reply["SecretData"] == "s3cret"
    assert reply["SecretDataType"] == "text"
    assert reply["VersionId"] == "v1"
    assert reply["VersionStages"] == {"VersionStage": ["ACSCurrent"]}
    assert "Stale" not in reply


async def test_binary_value_round_trip(agent):
    """A binary secret keeps arbitrary bytes and reads back as bytes."""
    data = bytes(range(256))
    await agent.create(data=data, SecretDataType="binary")
    reply = await agent.value()
    assert reply["SecretData"] == data
    assert reply["SecretDataType"] == "binary"


async def test_arn_names_secret(agent):
    """GetSecretValue accepts the secret's ARN as SecretName."""
    created = await agent.create(data="x")
    reply = await agent.value(created["Arn"])
    assert reply["SecretName"] == "app/db"


async def test_put_moves_current_previous(agent):
    """Each put takes ACSCurrent; only the last old current is ACSPrevious."""
    await agent.create()
    await agent.put("app/db", "v2", "second")
    await agent.put("app/db", "v3", "third")
    assert await agent.stages() == {
        "v1": [], "v2": ["ACSPrevious"], "v3": ["ACSCurrent"]}
    assert (await agent.value())["SecretData"] == "third"
    previous = await agent.value(VersionStage="ACSPrevious")
    assert previous["SecretData"] == "second"


async def test_put_custom_stage_keeps_current(agent):
    """A put with only a custom stage leaves ACSCurrent where it was."""
    await agent.create()
    reply = await agent.put("app/db", "v2", "next", VersionStages=["pending"])
    assert reply["VersionStages"] == {"VersionStage": ["pending"]}
    assert (await agent.value())["VersionId"] == "v1"
    assert (await agent.value(VersionStage="pending"))["SecretData"] == "next"


async def test_get_by_version_id(agent):
    """VersionId selects an old version; a wrong stage for it is not found."""
    await agent.create(data="old")
    await agent.put("app/db", "v2", "new")
    assert (await agent.value(VersionId="v1"))["SecretData"] == "old"
    with pytest.raises(errors.ResourceNotFoundError):
        await agent.value(VersionId="v1", VersionStage="ACSCurrent")


async def test_missing_stage_not_found(agent):
    """A stage no version carries is Forbidden.ResourceNotFound."""
    await agent.create()
    with pytest.raises(errors.ResourceNotFoundError) as caught:
        await agent.value(VersionStage="ACSPrevious")
    assert caught.value.http_status == 404


async def test_put_same_data_idempotent(agent):
    """Repeating a put with the same VersionId and data changes nothing."""
    await agent.create()
    await agent.put("app/db", "v2", "second")
    reply = await agent.put("app/db", "v2", "second")
    assert reply["VersionStages"] == {"VersionStage": ["ACSCurrent"]}
    assert await agent.stages() == {"v1": ["ACSPrevious"], "v2": ["ACSCurrent"]}


async def test_put_other_data_rejected(agent):
    """The same VersionId with other data is Rejected.ResourceExist."""
    await agent.create()
    with pytest.raises(errors.ResourceExistError) as caught:
        await agent.put("app/db", "v1", "marker-q7x")
    assert caught.value.http_status == 409
    assert "marker-q7x" not in caught.value.message


async def test_put_other_type_rejected(agent):
    """The same VersionId and bytes under another data type is rejected."""
    await agent.create(data="same")
    with pytest.raises(errors.ResourceExistError):
        await agent.put("app/db", "v1", b"same", SecretDataType="binary")


async def test_create_existing_name_rejected(agent):
    """A second secret with the same name is Rejected.ResourceExist."""
    await agent.create()
    with pytest.raises(errors.ResourceExistError):
        await agent.create()


@pytest.mark.parametrize("name", [
    "acs/ecs/x", "bad name", "semi;colon", "", "a" * 193, "ünïcode",
])
async def test_invalid_names_rejected(agent, name):
    """Malformed, overlong and reserved names are InvalidParameter."""
    with pytest.raises((errors.InvalidParameterError, errors.MissingParameterError)):
        await agent.create(name=name)


async def test_name_charset_accepted(agent):
    """Every character of the name alphabet is accepted, 192 long."""
    name = ("Az09_/+=.@-" * 20)[:192]
    await agent.create(name=name)
    assert (await agent.value(name))["SecretName"] == name


async def test_value_size_limit(agent):
    """30,720 bytes are accepted; one byte more is InvalidParameter."""
    await agent.create(data=b"x" * 30720, SecretDataType="binary")
    with pytest.raises(errors.InvalidParameterError):
        await agent.put("app/db", "v2", b"x" * 30721, SecretDataType="binary")


async def test_text_must_be_utf8(agent):
    """Bytes that are not UTF-8 need SecretDataType binary."""
    with pytest.raises(errors.InvalidParameterError) as caught:
        await agent.create(data=b"\xff\xfe")
    assert "binary" in caught.value.message


async def test_long_version_id_rejected(agent):
    """A VersionId longer than 64 characters is InvalidParameter."""
    with pytest.raises(errors.InvalidParameterError):
        await agent.create(version="v" * 65)


@pytest.mark.parametrize("op, params", [
    ("GetSecretValue", {}),
    ("DescribeSecret", {}),
    ("PutSecretValue", {"VersionId": "v2", "SecretData": "x"}),
    ("UpdateSecret", {"Description": "d"}),
    ("DeleteSecret", {}),
    ("RestoreSecret", {}),
])
async def test_missing_secret_not_found(agent, op, params):
    """Every operation on an unknown secret is Forbidden.ResourceNotFound."""
    with pytest.raises(errors.ResourceNotFoundError):
        await agent.call(op, SecretName="nope", **params)


async def test_eleventh_version_evicts_oldest(agent):
    """Past 10 versions the oldest version without a stage is dropped."""
    await agent.create()
    for number in range(2, 12):
        await agent.put("app/db", f"v{number}", f"value {number}")
    versions = await agent.stages()
    assert len(versions) == 10
    assert "v1" not in versions
    with pytest.raises(errors.ResourceNotFoundError):
        await agent.value(VersionId="v1")


async def test_staged_version_survives_eviction(agent):
    """A version with a custom stage is kept; the next unstaged one goes."""
    await agent.create()
    await agent.call("UpdateSecretVersionStage", SecretName="app/db",
                     VersionStage="pinned", MoveToVersion="v1")
    for number in range(2, 12):
        await agent.put("app/db", f"v{number}", f"value {number}")
    versions = await agent.stages()
    assert versions["v1"] == ["pinned"]
    assert "v2" not in versions


async def test_ninth_stage_limit_exceeded(agent):
    """A secret carries at most 8 stages; the 9th is Rejected.LimitExceeded."""
    await agent.create()
    await agent.put("app/db", "v2", "second")
    for number in range(6):
        await agent.call("UpdateSecretVersionStage", SecretName="app/db",
                         VersionStage=f"s{number}", MoveToVersion="v1")
    with pytest.raises(errors.LimitExceededError):
        await agent.call("UpdateSecretVersionStage", SecretName="app/db",
                         VersionStage="s6", MoveToVersion="v1")


async def test_current_needs_move_to(agent):
    """ACSCurrent cannot be removed without MoveToVersion."""
    await agent.create()
    with pytest.raises(errors.InvalidParameterError):
        await agent.call("UpdateSecretVersionStage", SecretName="app/db",
                         VersionStage="ACSCurrent", RemoveFromVersion="v1")


async def test_move_current_demotes_old(agent):
    """Moving ACSCurrent back makes the old current ACSPrevious."""
    await agent.create(data="old")
    await agent.put("app/db", "v2", "new")
    await agent.call("UpdateSecretVersionStage", SecretName="app/db",
                     VersionStage="ACSCurrent", RemoveFromVersion="v2",
                     MoveToVersion="v1")
    assert await agent.stages() == {"v1": ["ACSCurrent"], "v2": ["ACSPrevious"]}
    assert (await agent.value())["SecretData"] == "old"


async def test_remove_custom_stage(agent):
    """A custom stage can be removed with RemoveFromVersion alone."""
    await agent.create()
    await agent.put("app/db", "v2", "x", VersionStages=["blue"])
    await agent.call("UpdateSecretVersionStage", SecretName="app/db",
                     VersionStage="blue", RemoveFromVersion="v2")
    assert await agent.stages() == {"v1": ["ACSCurrent"], "v2": []}


async def test_remove_from_wrong_version(agent):
    """RemoveFromVersion must name the version that carries the stage."""
    await agent.create()
    await agent.put("app/db", "v2", "x")
    with pytest.raises(errors.InvalidParameterError):
        await agent.call("UpdateSecretVersionStage", SecretName="app/db",
                         VersionStage="ACSCurrent", RemoveFromVersion="v1",
                         MoveToVersion="v1")


async def test_move_to_unknown_version(agent):
    """MoveToVersion must name an existing version."""
    await agent.create()
    with pytest.raises(errors.InvalidParameterError):
        await agent.call("UpdateSecretVersionStage", SecretName="app/db",
                         VersionStage="blue", MoveToVersion="v9")


async def test_update_secret_description(agent):
    """UpdateSecret changes the description DescribeSecret returns."""
    await agent.create(Description="old")
    agent.clock.advance(seconds=5)
    await agent.call("UpdateSecret", SecretName="app/db", Description="new")
    described = await agent.call("DescribeSecret", SecretName="app/db")
    assert described["Description"] == "new"
    assert described["UpdateTime"] == "2026-01-01T00:00:05Z"


async def test_delete_blocks_reads(agent):
    """A secret in its recovery window rejects reads with a 409."""
    await agent.create()
    reply = await agent.call("DeleteSecret", SecretName="app/db")
    assert reply["PlannedDeleteTime"] == "2026-01-31T00:00:00Z"
    with pytest.raises(errors.ResourceInDeleteWindowError) as caught:
        await agent.value()
    assert caught.value.http_status == 409


async def test_deleted_name_not_reusable(agent):
    """CreateSecret with the name of a secret in its window is rejected."""
    await agent.create()
    await agent.call("DeleteSecret", SecretName="app/db", RecoveryWindowInDays=7)
    with pytest.raises(errors.ResourceInDeleteWindowError):
        await agent.create()


async def test_restore_returns_same_secret(agent):
    """After RestoreSecret the secret, versions and stages are as before."""
    await agent.create(data="old", Description="d")
    await agent.put("app/db", "v2", "new", VersionStages=["ACSCurrent", "blue"])
    before = await agent.call("DescribeSecret", SecretName="app/db")
    stages = await agent.stages()
    await agent.call("DeleteSecret", SecretName="app/db")
    await agent.call("RestoreSecret", SecretName="app/db")
    after = await agent.call("DescribeSecret", SecretName="app/db")
    assert {k: v for k, v in after.items() if k != "RequestId"} == {
        k: v for k, v in before.items() if k != "RequestId"}
    assert await agent.stages() == stages
    assert (await agent.value(VersionId="v1"))["SecretData"] == "old"


async def test_purge_after_window(agent):
    """The purge job deletes a secret once its window ends, not before."""
    await agent.create()
    await agent.call("DeleteSecret", SecretName="app/db", RecoveryWindowInDays=7)
    agent.clock.advance(days=6)
    assert await lifecycle.purge_due_secrets(agent.secrets) == []
    agent.clock.advance(days=1, seconds=1)
    assert await lifecycle.purge_due_secrets(agent.secrets) == ["app/db"]
    with pytest.raises(errors.ResourceNotFoundError):
        await agent.call("RestoreSecret", SecretName="app/db")


async def test_purge_by_two_agents(agent, tmp_path):
    """Two agents on one database purge a due secret exactly once."""
    other = SecretAgent(tmp_path / "other", store=agent.store,
                        keystore=agent.keystore, clock=agent.clock)
    await agent.create()
    await agent.call("DeleteSecret", SecretName="app/db", RecoveryWindowInDays=7)
    agent.clock.advance(days=8)
    results = []

    async def purge(service):
        results.append(await lifecycle.purge_due_secrets(service))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(purge, agent.secrets)
        nursery.start_soon(purge, other.secrets)
    assert sorted(results) == [[], ["app/db"]]


async def test_purge_skips_restored(agent):
    """A secret restored inside its window survives the purge job."""
    await agent.create()
    await agent.call("DeleteSecret", SecretName="app/db", RecoveryWindowInDays=7)
    await agent.call("RestoreSecret", SecretName="app/db")
    agent.clock.advance(days=8)
    assert await lifecycle.purge_due_secrets(agent.secrets) == []
    assert (await agent.value())["SecretData"] == "first"


async def test_force_delete_unrestorable(agent):
    """A force-deleted secret is gone: restore is ResourceNotFound."""
    await agent.create()
    await agent.call("DeleteSecret", SecretName="app/db",
                     ForceDeleteWithoutRecovery=True)
    with pytest.raises(errors.ResourceNotFoundError):
        await agent.call("RestoreSecret", SecretName="app/db")
    await agent.create(data="reborn")
    assert (await agent.value())["SecretData"] == "reborn"


@pytest.mark.parametrize("params", [
    {"RecoveryWindowInDays": 6},
    {"RecoveryWindowInDays": 31},
    {"RecoveryWindowInDays": 7, "ForceDeleteWithoutRecovery": True},
])
async def test_delete_window_checked(agent, params):
    """The window is 7 to 30 days and excludes a forced deletion."""
    await agent.create()
    with pytest.raises(errors.InvalidParameterError):
        await agent.call("DeleteSecret", SecretName="app/db", **params)


async def test_list_secrets_filters_pages(agent):
    """ListSecrets pages oldest first and filters by name and tag."""
    for number in range(3):
        await agent.create(name=f"team/s{number}",
                           Tags=[{"TagKey": "env", "TagValue": f"e{number % 2}"}])
    await agent.create(name="other")
    page = await agent.call("ListSecrets", PageSize=2, PageNumber=2)
    names = [s["SecretName"] for s in page["SecretList"]["Secret"]]
    assert names == ["team/s2", "other"]
    assert page["TotalCount"] == 4
    tagged = await agent.call("ListSecrets", FetchTags=True, Filters=[
        {"Key": "SecretName", "Values": ["team/"]},
        {"Key": "TagValue", "Values": ["e0"]}])
    entries = tagged["SecretList"]["Secret"]
    assert [s["SecretName"] for s in entries] == ["team/s0", "team/s2"]
    assert entries[0]["Tags"] == {"Tag": [{"TagKey": "env", "TagValue": "e0"}]}


async def test_list_filter_key_checked(agent):
    """An unknown filter key is InvalidParameter."""
    with pytest.raises(errors.InvalidParameterError):
        await agent.call("ListSecrets", Filters=[{"Key": "Color", "Values": ["x"]}])


async def test_batch_get_reports_errors(agent):
    """BatchGetSecretValue returns values and a per-secret Errors list."""
    await agent.create(name="a", data="A")
    await agent.create(name="b", data="B")
    reply = await agent.call("BatchGetSecretValue", SecretsList=[
        {"SecretName": "a"}, {"SecretName": "missing"},
        {"SecretName": "b", "VersionId": "v1"}])
    assert [v["SecretData"] for v in reply["SecretValues"]] == ["A", "B"]
    assert reply["Errors"] == [{
        "SecretName": "missing", "Code": "Forbidden.ResourceNotFound",
        "HttpStatus": 404, "Message": "The secret 'missing' is not found."}]


async def test_batch_get_limit(agent):
    """More than 20 secrets in one batch is InvalidParameter."""
    with pytest.raises(errors.InvalidParameterError):
        await agent.call("BatchGetSecretValue",
                         SecretsList=[{"SecretName": "a"}] * 21)


async def test_default_key_created_once(agent):
    """Concurrent first creates share one agent key under the alias."""
    async with trio.open_nursery() as nursery:
        for number in range(4):
            nursery.start_soon(agent.create, f"s{number}")
    alias = await agent.store.get_alias(DEFAULT_KEY_ALIAS)
    keys = (await agent.call("ListKeys"))["Keys"]["Key"]
    described = await agent.call("DescribeSecret", SecretName="s3")
    assert [k["KeyId"] for k in keys] == [alias.key_id]
    assert described["EncryptionKeyId"] == alias.key_id


async def test_reserved_alias_not_creatable(agent):
    """Callers cannot create the agent's reserved alias."""
    key_id = (await agent.call("CreateKey"))["KeyMetadata"]["KeyId"]
    with pytest.raises(errors.UnsupportedAliasError):
        await agent.call("CreateAlias", AliasName=DEFAULT_KEY_ALIAS, KeyId=key_id)


async def test_explicit_key_state_enforced(agent):
    """A secret under a disabled key cannot be read."""
    key_id = (await agent.call("CreateKey"))["KeyMetadata"]["KeyId"]
    await agent.create(EncryptionKeyId=key_id)
    described = await agent.call("DescribeSecret", SecretName="app/db")
    await agent.call("DisableKey", KeyId=key_id)
    assert described["EncryptionKeyId"] == key_id
    with pytest.raises(errors.KeyDisabledError):
        await agent.value()


async def test_store_holds_no_plaintext(agent, tmp_path):
    """The database file never contains the secret value."""
    value = b"plaintext-marker-7f3a9c"
    await agent.create(data=value)
    await agent.put("app/db", "v2", value + b"-2")
    database = b"".join(path.read_bytes() for path in (tmp_path / "data").iterdir())
    assert value not in database


@pytest.mark.parametrize("stages", [["ACSPrevious"], ["ACSCurrent", "ACSPrevious"]])
async def test_put_cannot_claim_previous(tmp_path, stages):
    """PutSecretValue refuses to set ACSPrevious and changes nothing."""
    agent = SecretAgent(tmp_path)
    await agent.create(name="p/db", data="one", version="v1")
    with pytest.raises(errors.InvalidParameterError):
        await agent.call("PutSecretValue", SecretName="p/db", VersionId="v2",
                         SecretData="two", VersionStages=stages)
    current = await agent.call("GetSecretValue", SecretName="p/db")
    assert current["VersionId"] == "v1"
    await agent.store.aclose()
