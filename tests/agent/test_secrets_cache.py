"""The secret value cache and the data key cache, through the dispatcher.

Cache time follows the FakeClock. A FlakyKeystore yields on every call,
so concurrent readers and writers interleave, and it can be made to
fail. The store is made to fail by replacing one of its read methods.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing

from agent.cache.values import ValueCache
from agent.config import DataKeyCacheConfig
from agent.store.base import StoreError
from agent.store.lookups import RECHECK_SECONDS
from agent.store.sqlite import SqliteStore
from client import errors
from tests.agent.secret_harness import SecretAgent, config


@pytest.fixture
async def agent(tmp_path):
    instance = SecretAgent(tmp_path, config(cache_ttl=300, stale_max_age=3600))
    yield instance
    await instance.store.aclose()


async def cache_stats(agent) -> dict:
    return (await agent.call("DescribeAgentCache"))["SecretValueCache"]


def break_store(agent, monkeypatch) -> None:
    async def fail(*args):
        raise StoreError("store read failed: disk I/O error")

    monkeypatch.setattr(agent.store, "read_secret_version", fail)


async def test_warm_read_is_hit(agent):
    """A second read within the TTL is a cache hit."""
    await agent.create()
    await agent.value()
    await agent.value()
    stats = await cache_stats(agent)
    assert stats["Hits"] == 1
    assert stats["Misses"] == 1
    assert stats["Entries"] == 1


async def test_ttl_expiry_refetches(agent):
    """After the TTL the value is read from the store again."""
    await agent.create()
    await agent.value()
    agent.clock.advance(seconds=301)
    await agent.value()
    assert (await cache_stats(agent))["Misses"] == 2


async def test_other_agent_write_seen_before_ttl(agent, tmp_path):
    """A value another agent replaces on the shared store is not served from cache."""
    other = SecretAgent(tmp_path, config(cache_ttl=300), store=SqliteStore(
        tmp_path / "data"), keystore=agent.keystore, clock=agent.clock)
    try:
        await agent.create(data="first")
        assert (await other.value())["SecretData"] == "first"
        await agent.put("app/db", "v2", "second")
        # The other agent's store notices the commit within RECHECK_SECONDS.
        await trio.sleep(2 * RECHECK_SECONDS)
        assert (await other.value())["SecretData"] == "second"
        await agent.call("DeleteSecret", SecretName="app/db",
                         ForceDeleteWithoutRecovery=True)
        await trio.sleep(2 * RECHECK_SECONDS)
        with pytest.raises(errors.ResourceNotFoundError):
            await other.value()
    finally:
        await other.store.aclose()


async def test_put_invalidates_warm_entry(agent):
    """A read right after a put returns the new value, not the cached one."""
    await agent.create(data="old")
    await agent.value()
    await agent.put("app/db", "v2", "new")
    assert (await agent.value())["SecretData"] == "new"
    assert (await cache_stats(agent))["Invalidations"] >= 1


async def test_stage_move_invalidates(agent):
    """Moving ACSCurrent back is seen at once by a warm reader."""
    await agent.create(data="old")
    await agent.put("app/db", "v2", "new")
    await agent.value()
    await agent.call("UpdateSecretVersionStage", SecretName="app/db",
                     VersionStage="ACSCurrent", MoveToVersion="v1")
    assert (await agent.value())["SecretData"] == "old"


async def test_readers_never_see_old(agent):
    """No read that starts after PutSecretValue returns sees an old value."""
    await agent.create(data="0")
    returned = 0
    late_reads: list[tuple[int, int]] = []

    async def reader():
        while returned < 20:
            known = returned
            value = int((await agent.value())["SecretData"])
            late_reads.append((known, value))
            # A cache hit never yields, so let the writer run.
            await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        for _ in range(8):
            nursery.start_soon(reader)
        for number in range(1, 21):
            # Expired entries make readers fetch while the put is running.
            agent.clock.advance(seconds=301)
            await agent.put("app/db", f"n{number}", str(number))
            returned = number
    stale = [(known, value) for known, value in late_reads if value < known]
    assert any(known > 0 for known, _ in late_reads)
    assert stale == []


async def test_slow_reader_not_cached(agent):
    """A read that fetched the old value before a put cannot cache it."""
    await agent.create(data="old")
    agent.keystore.gate = trio.Event()
    first = {}

    async def slow_reader():
        first["value"] = (await agent.value())["SecretData"]

    async with trio.open_nursery() as nursery:
        nursery.start_soon(slow_reader)
        await trio.testing.wait_all_tasks_blocked()
        await agent.put("app/db", "v2", "new")
        agent.keystore.gate.set()
    assert first["value"] == "old"
    assert (await agent.value())["SecretData"] == "new"


async def test_stale_served_when_store_fails(agent, monkeypatch):
    """With the store down, an expired entry is served and marked stale."""
    await agent.create(data="cached")
    await agent.value()
    agent.clock.advance(seconds=400)
    break_store(agent, monkeypatch)
    reply = await agent.value()
    assert reply["SecretData"] == "cached"
    assert reply["Stale"] is True
    assert reply["StaleAgeSeconds"] == 400
    assert (await cache_stats(agent))["StaleServes"] == 1


async def test_stale_served_when_keystore_fails(agent):
    """With the keystore down, an expired entry is served and marked stale."""
    await agent.create(data="cached")
    await agent.value()
    agent.clock.advance(seconds=301)
    agent.keystore.failing = True
    reply = await agent.value()
    assert reply["SecretData"] == "cached"
    assert reply["StaleAgeSeconds"] == 301


async def test_no_stale_past_max_age(agent, monkeypatch):
    """Past the stale maximum age the failure reaches the caller."""
    await agent.create()
    await agent.value()
    agent.clock.advance(seconds=3601)
    break_store(agent, monkeypatch)
    with pytest.raises(errors.InternalFailureError):
        await agent.value()


async def test_no_stale_without_entry(agent):
    """A failure with nothing cached reaches the caller."""
    await agent.create()
    agent.keystore.failing = True
    with pytest.raises(errors.InternalFailureError):
        await agent.value()


async def test_no_stale_for_caller_errors(agent):
    """A disabled key is a caller error and is never masked by the cache."""
    key_id = (await agent.call("CreateKey"))["KeyMetadata"]["KeyId"]
    await agent.create(EncryptionKeyId=key_id)
    await agent.value()
    agent.clock.advance(seconds=301)
    await agent.call("DisableKey", KeyId=key_id)
    with pytest.raises(errors.KeyDisabledError):
        await agent.value()


async def test_no_stale_after_delete(agent, monkeypatch):
    """DeleteSecret drops cached values, so a failure cannot serve them."""
    await agent.create()
    await agent.value()
    await agent.call("DeleteSecret", SecretName="app/db")
    break_store(agent, monkeypatch)
    with pytest.raises(errors.InternalFailureError):
        await agent.value()


async def test_entry_bound_evicts(tmp_path):
    """The entry bound evicts the least recently used value."""
    agent = SecretAgent(tmp_path, config(cache_max_entries=2))
    for name in ("a", "b", "c"):
        await agent.create(name=name)
        await agent.value(name)
    stats = await cache_stats(agent)
    await agent.store.aclose()
    assert stats["Entries"] == 2
    assert stats["Evictions"] == 1


async def test_byte_bound_evicts(tmp_path):
    """The byte bound evicts values so the total stays within it."""
    agent = SecretAgent(tmp_path, config(cache_max_bytes=8192))
    for name in ("a", "b", "c"):
        await agent.create(name=name, data="x" * 3000)
        await agent.value(name)
    stats = await cache_stats(agent)
    await agent.store.aclose()
    assert stats["Bytes"] <= 8192
    assert stats["Evictions"] == 1


def test_token_refuses_late_put():
    """A value fetched before an invalidation is not stored after it."""
    cache = ValueCache(300, 10, 65536, 0, timer=lambda: 0.0)
    token = cache.token()
    cache.invalidate("s")
    assert cache.put(("s", None, "ACSCurrent"), "old", 3, token) is False
    assert cache.put(("s", None, "ACSCurrent"), "new", 3, cache.token()) is True


def test_invalidate_spares_other_names():
    """Invalidating one secret leaves other secrets' entries."""
    cache = ValueCache(300, 10, 65536, 0, timer=lambda: 0.0)
    cache.put(("a", None, "ACSCurrent"), "A", 1, cache.token())
    cache.put(("b", None, "ACSCurrent"), "B", 1, cache.token())
    cache.invalidate("a")
    assert cache.get(("a", None, "ACSCurrent")) is None
    assert cache.get(("b", None, "ACSCurrent")) == "B"


# --- data keys ---------------------------------------------------------------


@pytest.fixture
async def keyed(tmp_path):
    limits = DataKeyCacheConfig(max_age=60, max_uses=3, max_bytes=1000,
                                max_entries=10)
    instance = SecretAgent(tmp_path, data_keys=limits)
    instance.key_id = (await instance.call("CreateKey"))["KeyMetadata"]["KeyId"]
    yield instance
    await instance.store.aclose()


async def data_key(agent, **params):
    return await agent.call("GenerateDataKey", KeyId=agent.key_id, **params)


async def test_data_key_cache_off_default(keyed):
    """Without AllowCachedDataKey every call makes a new data key."""
    first = await data_key(keyed)
    second = await data_key(keyed)
    assert first["Plaintext"] != second["Plaintext"]
    assert "CachedDataKey" not in second


async def test_data_key_reused_when_allowed(keyed):
    """With AllowCachedDataKey the same data key and blob are returned."""
    first = await data_key(keyed, AllowCachedDataKey=True)
    second = await data_key(keyed, AllowCachedDataKey=True)
    assert second["Plaintext"] == first["Plaintext"]
    assert second["CiphertextBlob"] == first["CiphertextBlob"]
    assert first["CachedDataKey"] is False
    assert second["CachedDataKey"] is True


async def test_data_key_use_limit(keyed):
    """A cached data key is retired after max_uses calls."""
    keys = [(await data_key(keyed, AllowCachedDataKey=True))["Plaintext"]
            for _ in range(4)]
    assert keys[0] == keys[2]
    assert keys[3] != keys[0]


async def test_data_key_age_limit(keyed):
    """A cached data key is retired after max_age seconds."""
    first = await data_key(keyed, AllowCachedDataKey=True)
    keyed.clock.advance(seconds=61)
    second = await data_key(keyed, AllowCachedDataKey=True)
    assert second["Plaintext"] != first["Plaintext"]


async def test_data_key_byte_limit(keyed):
    """Declared usage bytes past max_bytes retire the cached data key."""
    first = await data_key(keyed, AllowCachedDataKey=True, DataKeyUsageBytes=600)
    second = await data_key(keyed, AllowCachedDataKey=True, DataKeyUsageBytes=600)
    assert second["Plaintext"] != first["Plaintext"]


async def test_data_key_context_separates(keyed):
    """Another encryption context never gets the cached data key."""
    first = await data_key(keyed, AllowCachedDataKey=True,
                           EncryptionContext={"file": "a"})
    second = await data_key(keyed, AllowCachedDataKey=True,
                            EncryptionContext={"file": "b"})
    assert second["Plaintext"] != first["Plaintext"]


async def test_cached_data_key_decrypts(keyed):
    """A cached data key's blob decrypts under its context."""
    await data_key(keyed, AllowCachedDataKey=True, EncryptionContext={"f": "a"})
    reply = await data_key(keyed, AllowCachedDataKey=True,
                           EncryptionContext={"f": "a"})
    plain = await keyed.call("Decrypt", CiphertextBlob=reply["CiphertextBlob"],
                             EncryptionContext={"f": "a"})
    assert plain["Plaintext"] == reply["Plaintext"]


async def test_cached_data_key_disabled_key(keyed):
    """Disabling the key stops cached data keys at once."""
    await data_key(keyed, AllowCachedDataKey=True)
    await keyed.call("DisableKey", KeyId=keyed.key_id)
    with pytest.raises(errors.KeyDisabledError):
        await data_key(keyed, AllowCachedDataKey=True)


async def test_describe_agent_cache(keyed):
    """DescribeAgentCache reports data key hits and misses."""
    await data_key(keyed, AllowCachedDataKey=True)
    await data_key(keyed, AllowCachedDataKey=True)
    reply = await keyed.call("DescribeAgentCache")
    assert reply["DataKeyCache"]["Hits"] == 1
    assert reply["DataKeyCache"]["Misses"] == 1
    assert reply["DataKeyCache"]["Entries"] == 1
    assert reply["SecretWaiters"] == 0



@pytest.mark.parametrize("change", ["DisableKey", "ScheduleKeyDeletion"])
async def test_key_change_stops_cached_value(tmp_path, change):
    """Disabling or scheduling a secret's key stops its cached value at once."""
    agent = SecretAgent(tmp_path, config(cache_ttl=300, stale_max_age=3600))
    key_id = (await agent.call("CreateKey"))["KeyMetadata"]["KeyId"]
    await agent.create(name="c/db", EncryptionKeyId=key_id)
    assert (await agent.call("GetSecretValue", SecretName="c/db"))["SecretData"]
    params = {"PendingWindowInDays": 7} if change == "ScheduleKeyDeletion" else {}
    await agent.call(change, KeyId=key_id, **params)
    with pytest.raises((errors.KeyDisabledError, errors.KeyPendingDeletionError)):
        await agent.call("GetSecretValue", SecretName="c/db")
    await agent.store.aclose()
