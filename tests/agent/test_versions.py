"""Key versions through the dispatcher: create, describe, list, decrypt.

The real schemas, handlers, Key Service and SQLite store run here; only
the keystore is a fake and the clock is a FakeClock.
"""

from __future__ import annotations

import dataclasses

import uuid

import pytest

from agent.context import FakeClock, Peer, RequestContext
from agent.daemon import Services, all_operations
from agent.keys import rotation, versions
from agent.keys.service import KeyService
from agent.rpc.dispatch import Dispatcher
from agent.store.records import KeyRecord, KeyVersionRecord
from agent.store.sqlite import SqliteStore
from client import errors
from tests.fakes import FakeKeystore


class Agent:
    """One agent over a store in ``data_dir``, called like the wire would.

    Two instances on one ``data_dir`` behave like two agents sharing a
    database; ``keystore`` and ``clock`` may be shared between them.
    """

    def __init__(self, data_dir, clock=None, keystore=None):
        self.clock = clock or FakeClock()
        self.keystore = keystore or FakeKeystore()
        self.store = SqliteStore(data_dir)
        self.keys = KeyService(self.store, {"default": self.keystore}, "default",
                               self.clock, "local")
        self.dispatcher = Dispatcher(all_operations(), Services(keys=self.keys))

    async def call(self, op, **params):
        ctx = RequestContext.new(op, Peer(1000, 1000, 42))
        return await self.dispatcher.handle(ctx, params)

    async def new_key(self, **params):
        reply = await self.call("CreateKey", **params)
        return reply["KeyMetadata"]["KeyId"]

    async def describe(self, key_id):
        return (await self.call("DescribeKey", KeyId=key_id))["KeyMetadata"]

    async def version_ids(self, key_id):
        reply = await self.call("ListKeyVersions", KeyId=key_id, PageSize=100)
        return [v["KeyVersionId"] for v in reply["KeyVersions"]["KeyVersion"]]


@pytest.fixture
async def agent(tmp_path):
    instance = Agent(tmp_path / "data")
    yield instance
    await instance.store.aclose()


async def insert_key(agent, key_spec, origin="Aliyun_KMS", state="Enabled") -> str:
    """Store a key of any spec directly, with one version of fake material."""
    key_id = "key-" + uuid.uuid4().hex[:24]
    version_id = str(uuid.uuid4())
    now = agent.keys.now()
    key = KeyRecord(
        key_id=key_id, keystore="default", key_spec=key_spec,
        key_usage="SIGN/VERIFY", origin=origin, protection_level="SOFTWARE",
        description="", creator="test", creation_date=now, state=state,
        primary_version_id=version_id)
    version = KeyVersionRecord(version_id, key_id, now, "SOFTWARE", 99, b"sealed")
    await agent.store.insert_key(key, version, {})
    return key_id


async def test_new_key_has_one_version(agent):
    """A new key lists exactly its primary version."""
    key_id = await agent.new_key()
    meta = await agent.describe(key_id)
    assert await agent.version_ids(key_id) == [meta["PrimaryKeyVersion"]]


async def test_create_version_becomes_primary(agent):
    """CreateKeyVersion returns a new version that DescribeKey shows as primary."""
    key_id = await agent.new_key()
    first = (await agent.describe(key_id))["PrimaryKeyVersion"]
    agent.clock.advance(hours=1)
    reply = await agent.call("CreateKeyVersion", KeyId=key_id)
    version = reply["KeyVersion"]
    assert version["KeyId"] == key_id
    assert version["KeyVersionId"] != first
    assert version["CreationDate"] == "2026-01-01T01:00:00Z"
    meta = await agent.describe(key_id)
    assert meta["PrimaryKeyVersion"] == version["KeyVersionId"]
    assert meta["LastRotationDate"] == "2026-01-01T01:00:00Z"
    assert await agent.version_ids(key_id) == [first, version["KeyVersionId"]]


async def test_create_version_accepts_alias(agent):
    """CreateKeyVersion resolves an alias to its key."""
    key_id = await agent.new_key()
    await agent.call("CreateAlias", AliasName="alias/rotating", KeyId=key_id)
    reply = await agent.call("CreateKeyVersion", KeyId="alias/rotating")
    assert reply["KeyVersion"]["KeyId"] == key_id


async def test_old_blobs_decrypt_after_versions(agent):
    """Blobs of every earlier version decrypt, each with its own version."""
    key_id = await agent.new_key()
    blobs = []
    for index in range(3):
        enc = await agent.call("Encrypt", KeyId=key_id, Plaintext=b"m%d" % index,
                               EncryptionContext={"n": str(index)})
        blobs.append((enc["CiphertextBlob"], enc["KeyVersionId"]))
        await agent.call("CreateKeyVersion", KeyId=key_id)
    for index, (blob, version_id) in enumerate(blobs):
        dec = await agent.call("Decrypt", CiphertextBlob=blob,
                               EncryptionContext={"n": str(index)})
        assert dec["Plaintext"] == b"m%d" % index
        assert dec["KeyVersionId"] == version_id
    assert len({version_id for _, version_id in blobs}) == 3


async def test_encrypt_uses_new_primary(agent):
    """Encrypt and GenerateDataKey use the version created last."""
    key_id = await agent.new_key()
    version_id = (await agent.call("CreateKeyVersion", KeyId=key_id))[
        "KeyVersion"]["KeyVersionId"]
    enc = await agent.call("Encrypt", KeyId=key_id, Plaintext=b"p")
    data_key = await agent.call("GenerateDataKey", KeyId=key_id)
    assert enc["KeyVersionId"] == version_id
    assert enc["CiphertextBlob"][:36].decode() == version_id
    assert data_key["KeyVersionId"] == version_id


async def test_re_encrypt_moves_to_primary(agent):
    """ReEncrypt of an old blob under its own key yields a primary-version blob."""
    key_id = await agent.new_key()
    old = await agent.call("Encrypt", KeyId=key_id, Plaintext=b"keep me",
                           EncryptionContext={"a": "1"})
    new_version = (await agent.call("CreateKeyVersion", KeyId=key_id))[
        "KeyVersion"]["KeyVersionId"]
    moved = await agent.call(
        "ReEncrypt", CiphertextBlob=old["CiphertextBlob"], DestinationKeyId=key_id,
        SourceEncryptionContext={"a": "1"},
        DestinationEncryptionContext={"a": "2"})
    assert moved["KeyVersionId"] == new_version
    assert moved["CiphertextBlob"][:36].decode() == new_version
    dec = await agent.call("Decrypt", CiphertextBlob=moved["CiphertextBlob"],
                           EncryptionContext={"a": "2"})
    assert dec["Plaintext"] == b"keep me"
    assert dec["KeyVersionId"] == new_version


async def test_describe_version_of_key(agent):
    """DescribeKeyVersion returns the version's id, key and creation date."""
    key_id = await agent.new_key()
    primary = (await agent.describe(key_id))["PrimaryKeyVersion"]
    reply = await agent.call("DescribeKeyVersion", KeyId=key_id,
                             KeyVersionId=primary)
    assert reply["KeyVersion"] == {
        "KeyId": key_id, "KeyVersionId": primary,
        "CreationDate": "2026-01-01T00:00:00Z"}


async def test_describe_version_of_other_key(agent):
    """A version id of another key is KeyVersionNotFound, not a leak."""
    key_a = await agent.new_key()
    key_b = await agent.new_key()
    version_b = (await agent.describe(key_b))["PrimaryKeyVersion"]
    with pytest.raises(errors.KeyVersionNotFoundError) as caught:
        await agent.call("DescribeKeyVersion", KeyId=key_a, KeyVersionId=version_b)
    assert caught.value.http_status == 404


async def test_describe_unknown_version(agent):
    """An unknown version id is KeyVersionNotFound; an unknown key KeyNotFound."""
    key_id = await agent.new_key()
    with pytest.raises(errors.KeyVersionNotFoundError):
        await agent.call("DescribeKeyVersion", KeyId=key_id,
                         KeyVersionId=str(uuid.uuid4()))
    with pytest.raises(errors.KeyNotFoundError):
        await agent.call("DescribeKeyVersion", KeyId="key-missing",
                         KeyVersionId=str(uuid.uuid4()))


async def test_describe_version_needs_id(agent):
    """DescribeKeyVersion without KeyVersionId is MissingParameter."""
    key_id = await agent.new_key()
    with pytest.raises(errors.MissingParameterError):
        await agent.call("DescribeKeyVersion", KeyId=key_id)


async def test_list_versions_pages(agent):
    """ListKeyVersions pages oldest first and reports the total count."""
    key_id = await agent.new_key()
    for _ in range(4):
        await agent.call("CreateKeyVersion", KeyId=key_id)
    every = await agent.version_ids(key_id)
    page = await agent.call("ListKeyVersions", KeyId=key_id, PageNumber=2,
                            PageSize=2)
    assert page["TotalCount"] == 5
    assert page["PageNumber"] == 2
    assert page["PageSize"] == 2
    assert [v["KeyVersionId"] for v in page["KeyVersions"]["KeyVersion"]] == every[2:4]
    last = await agent.call("ListKeyVersions", KeyId=key_id, PageNumber=3,
                            PageSize=2)
    assert [v["KeyVersionId"] for v in last["KeyVersions"]["KeyVersion"]] == every[4:]
    beyond = await agent.call("ListKeyVersions", KeyId=key_id, PageNumber=9)
    assert beyond["KeyVersions"]["KeyVersion"] == []
    assert beyond["TotalCount"] == 5


async def test_list_versions_default_page(agent):
    """ListKeyVersions defaults to page 1 of 10 entries."""
    key_id = await agent.new_key()
    reply = await agent.call("ListKeyVersions", KeyId=key_id)
    assert reply["PageNumber"] == 1
    assert reply["PageSize"] == 10
    assert reply["TotalCount"] == 1


@pytest.mark.parametrize("size", [0, 101])
async def test_list_versions_page_size_bounds(agent, size):
    """PageSize outside 1 to 100 is InvalidParameter."""
    key_id = await agent.new_key()
    with pytest.raises(errors.InvalidParameterError):
        await agent.call("ListKeyVersions", KeyId=key_id, PageSize=size)


async def test_version_limit_is_fifty(agent):
    """The 51st version is Rejected.LimitExceeded and changes nothing."""
    key_id = await agent.new_key()
    for _ in range(versions.MAX_VERSIONS - 1):
        await agent.call("CreateKeyVersion", KeyId=key_id)
    primary = (await agent.describe(key_id))["PrimaryKeyVersion"]
    with pytest.raises(errors.LimitExceededError) as caught:
        await agent.call("CreateKeyVersion", KeyId=key_id)
    assert caught.value.http_status == 400
    assert len(await agent.version_ids(key_id)) == versions.MAX_VERSIONS
    assert (await agent.describe(key_id))["PrimaryKeyVersion"] == primary


@pytest.mark.parametrize("prepare, error", [
    ("DisableKey", errors.KeyDisabledError),
    ("ScheduleKeyDeletion", errors.KeyPendingDeletionError),
])
async def test_create_version_state_errors(agent, prepare, error):
    """CreateKeyVersion follows the key-state matrix with 409 errors."""
    key_id = await agent.new_key()
    params = {"PendingWindowInDays": 7} if prepare == "ScheduleKeyDeletion" else {}
    await agent.call(prepare, KeyId=key_id, **params)
    generated = agent.keystore.generated
    with pytest.raises(error) as caught:
        await agent.call("CreateKeyVersion", KeyId=key_id)
    assert caught.value.http_status == 409
    assert agent.keystore.generated == generated
    assert len(await agent.version_ids(key_id)) == 1


async def test_create_version_pending_import(agent):
    """A key waiting for imported material is Rejected.PendingImport."""
    key_id = await insert_key(agent, "Aliyun_AES_256", origin="EXTERNAL",
                              state="PendingImport")
    with pytest.raises(errors.KeyPendingImportError):
        await agent.call("CreateKeyVersion", KeyId=key_id)


async def test_create_version_external_key(agent):
    """An Enabled EXTERNAL key cannot get generated material: Unsupported.Origin."""
    key_id = await insert_key(agent, "Aliyun_AES_256", origin="EXTERNAL")
    with pytest.raises(errors.UnsupportedOriginError):
        await agent.call("CreateKeyVersion", KeyId=key_id)


async def test_create_version_hmac_key(agent):
    """An HMAC key has one version: UnsupportedOperation."""
    key_id = await insert_key(agent, "HMAC_SHA_256")
    with pytest.raises(errors.UnsupportedOperationError):
        await agent.call("CreateKeyVersion", KeyId=key_id)


async def test_asymmetric_versions_seven_days_apart(agent):
    """An asymmetric key's next version waits 7 days after the newest."""
    key_id = await insert_key(agent, "RSA_2048")
    agent.clock.advance(days=6, hours=23)
    with pytest.raises(errors.LimitExceededError):
        await agent.call("CreateKeyVersion", KeyId=key_id)
    assert agent.keystore.generated == 0


async def test_symmetric_versions_not_spaced(agent):
    """Symmetric keys may get versions back to back, within the limit."""
    key_id = await agent.new_key()
    await agent.call("CreateKeyVersion", KeyId=key_id)
    await agent.call("CreateKeyVersion", KeyId=key_id)
    assert len(await agent.version_ids(key_id)) == 3


async def test_create_version_concurrent_writer(agent, monkeypatch):
    """A key changed between read and write is reread, and the version kept."""
    key_id = await agent.new_key()
    rotate = rotation.rotate
    edited = []

    async def rotate_after_edit(service, key):
        if not edited:
            # Another agent on the same database edits the key meanwhile.
            edited.append(key.revision)
            current = await service.store.get_key(key_id)
            await service.store.update_key(
                dataclasses.replace(current, description="edited meanwhile"))
        return await rotate(service, key)

    monkeypatch.setattr(rotation, "rotate", rotate_after_edit)
    reply = await agent.call("CreateKeyVersion", KeyId=key_id)
    meta = await agent.describe(key_id)
    assert meta["Description"] == "edited meanwhile"
    assert meta["PrimaryKeyVersion"] == reply["KeyVersion"]["KeyVersionId"]
    assert len(await agent.version_ids(key_id)) == 2


async def test_versions_survive_reopen(tmp_path):
    """Versions and the primary are durable across a store reopen."""
    first = Agent(tmp_path / "data")
    key_id = await first.new_key()
    blob = (await first.call("Encrypt", KeyId=key_id, Plaintext=b"x"))[
        "CiphertextBlob"]
    created = (await first.call("CreateKeyVersion", KeyId=key_id))["KeyVersion"]
    await first.store.aclose()
    second = Agent(tmp_path / "data", keystore=first.keystore)
    try:
        meta = await second.describe(key_id)
        assert meta["PrimaryKeyVersion"] == created["KeyVersionId"]
        dec = await second.call("Decrypt", CiphertextBlob=blob)
        assert dec["Plaintext"] == b"x"
    finally:
        await second.store.aclose()



async def test_concurrent_versions_all_succeed(tmp_path):
    """Twenty concurrent CreateKeyVersion calls on one key all succeed."""
    import trio
    from tests.agent.test_key_operations import Agent
    agent = Agent(tmp_path)
    key_id = await agent.new_key()
    results = []

    async def create():
        reply = await agent.call("CreateKeyVersion", KeyId=key_id)
        results.append(reply["KeyVersion"]["KeyVersionId"])

    async with trio.open_nursery() as nursery:
        for _ in range(20):
            nursery.start_soon(create)
    assert len(set(results)) == 20
    await agent.store.aclose()
