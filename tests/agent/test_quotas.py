"""Request quotas and resource limits.

Bucket tests move a fake monotonic clock by hand, never sleep. Stage
and limit tests run the real dispatcher, services and SQLite store on a
fake keystore. The key spec tests use a stub key service, so that
asymmetric keys need no keystore support.
"""

from __future__ import annotations

import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
import trio

from agent.config import ConfigError, QUOTA_RATES, parse_config
from agent.context import FakeClock, Peer, RequestContext
from agent.daemon import Services, all_operations
from agent.keys.service import KeyService
from agent.quotas import (
    ASYMMETRIC_CRYPTO, BUCKETS, SYMMETRIC_CRYPTO, QuotaStage, QuotaTable, Rate,
)
from agent.rpc.dispatch import CRYPTO, Dispatcher, Operation
from agent.store.base import LimitError
from agent.store.limits import ResourceLimits
from agent.store.records import KeyFilter, KeyRecord
from agent.store.sqlite import SqliteStore
from client import errors
from tests.agent.secret_harness import SecretAgent
from tests.agent.test_key_operations import Agent
from tests.fakes import FakeKeystore


class FakeTime:
    """A monotonic clock in seconds that moves only when a test advances it."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def table(time, max_callers=100, **rates):
    values = {name: Rate(0, 1) for name in BUCKETS}
    values.update(rates)
    return QuotaTable(values, time, max_callers)


def takes(quotas, caller, bucket, count):
    """Return how many of ``count`` takes in a row succeed."""
    return sum(quotas.take(caller, bucket) for _ in range(count))


# --- buckets ---------------------------------------------------------------------


def test_burst_then_refused():
    """A full bucket allows its burst, then refuses."""
    quotas = table(FakeTime(), read=Rate(10, 5))
    assert takes(quotas, "a", "read", 5) == 5
    assert quotas.take("a", "read") is False


def test_refill_at_rate():
    """An empty bucket gains rate tokens per second."""
    time = FakeTime()
    quotas = table(time, read=Rate(10, 5))
    takes(quotas, "a", "read", 5)
    time.now += 0.25
    assert takes(quotas, "a", "read", 5) == 2


def test_refill_stops_at_burst():
    """A long idle time refills the bucket to its burst, no more."""
    time = FakeTime()
    quotas = table(time, read=Rate(10, 5))
    takes(quotas, "a", "read", 5)
    time.now += 100
    assert takes(quotas, "a", "read", 20) == 5


def test_refused_take_costs_nothing():
    """A refused request does not use up the tokens that arrive later."""
    time = FakeTime()
    quotas = table(time, read=Rate(1, 1))
    quotas.take("a", "read")
    takes(quotas, "a", "read", 10)
    time.now += 1
    assert quotas.take("a", "read") is True


def test_callers_have_separate_buckets():
    """One caller's empty bucket does not slow another."""
    quotas = table(FakeTime(), read=Rate(10, 2))
    takes(quotas, "a", "read", 2)
    assert quotas.take("a", "read") is False
    assert quotas.take("b", "read") is True


def test_groups_have_separate_buckets():
    """An empty read bucket leaves the write bucket of the caller alone."""
    quotas = table(FakeTime(), read=Rate(10, 2), write=Rate(10, 2))
    takes(quotas, "a", "read", 2)
    assert quotas.take("a", "read") is False
    assert quotas.take("a", "write") is True


def test_zero_rate_is_unlimited():
    """A rate of 0 turns the bucket off."""
    quotas = table(FakeTime(), read=Rate(0, 1))
    assert takes(quotas, "a", "read", 1000) == 1000
    assert len(quotas) == 0


def test_idle_buckets_evicted():
    """Buckets idle long enough to be full again are deleted."""
    time = FakeTime()
    quotas = table(time, read=Rate(10, 20))
    for caller in range(50):
        quotas.take(caller, "read")
    assert len(quotas) == 50
    time.now += 2
    quotas.take("late", "read")
    assert len(quotas) == 1


def test_busy_buckets_kept():
    """A bucket used within its refill time survives a sweep."""
    time = FakeTime()
    quotas = table(time, read=Rate(10, 20))
    takes(quotas, "old", "read", 20)
    time.now += 1.5
    takes(quotas, "busy", "read", 20)
    time.now += 0.6
    quotas.take("late", "read")
    assert len(quotas) == 2
    assert quotas.take("busy", "read") is True
    assert takes(quotas, "busy", "read", 20) == 5


def test_max_callers_bounds_memory():
    """At most max_callers buckets are kept, the least recently used go."""
    quotas = table(FakeTime(), max_callers=10, read=Rate(1, 3))
    takes(quotas, "kept", "read", 3)
    for caller in range(30):
        quotas.take(caller, "read")
        quotas.take("kept", "read")
    assert len(quotas) == 10
    assert quotas.take("kept", "read") is False


# --- the stage --------------------------------------------------------------------


class QuotaAgent(Agent):
    """The key operations agent with a quota stage on a fake clock."""

    def __init__(self, tmp_path, **rates):
        super().__init__(tmp_path)
        self.time = FakeTime()
        self.quotas = table(self.time, **rates)
        self.dispatcher.stages = [QuotaStage(self.quotas, self.keys)]

    async def call_as(self, op, principal=None, uid=1000, **params):
        ctx = RequestContext.new(op, Peer(uid, uid, 42))
        ctx.principal = principal
        return await self.dispatcher.handle(ctx, params)


@pytest.fixture
async def quota_agent(tmp_path):
    instance = QuotaAgent(tmp_path, read=Rate(1, 2), create=Rate(1, 1))
    yield instance
    await instance.store.aclose()


async def test_throttled_request_gets_429(quota_agent):
    """A request over its quota gets Rejected.Throttling, HTTP 429."""
    await quota_agent.call("ListKeys")
    await quota_agent.call("ListKeys")
    with pytest.raises(errors.ThrottlingError) as caught:
        await quota_agent.call("ListKeys")
    assert caught.value.code == "Rejected.Throttling"
    assert caught.value.http_status == 429
    assert caught.value.message == "QPS Limit Exceeded"
    assert caught.value.request_id


async def test_throttled_create_changes_nothing(quota_agent):
    """A throttled CreateKey is refused before its handler runs."""
    await quota_agent.call("CreateKey")
    with pytest.raises(errors.ThrottlingError):
        await quota_agent.call("CreateKey")
    _, total = await quota_agent.store.list_keys(KeyFilter(), 0, 10)
    assert total == 1


async def test_principals_counted_apart(quota_agent):
    """Two principals of one uid have their own buckets."""
    for _ in range(2):
        await quota_agent.call_as("ListKeys", principal="a")
    with pytest.raises(errors.ThrottlingError):
        await quota_agent.call_as("ListKeys", principal="a")
    await quota_agent.call_as("ListKeys", principal="b")


async def test_uids_counted_apart(quota_agent):
    """Without a principal, each uid has its own buckets."""
    for _ in range(2):
        await quota_agent.call_as("ListKeys", uid=1000)
    with pytest.raises(errors.ThrottlingError):
        await quota_agent.call_as("ListKeys", uid=1000)
    await quota_agent.call_as("ListKeys", uid=1001)


async def test_quota_refills_with_clock(quota_agent):
    """After the fake clock moves on, the caller is served again."""
    for _ in range(2):
        await quota_agent.call("ListKeys")
    with pytest.raises(errors.ThrottlingError):
        await quota_agent.call("ListKeys")
    quota_agent.time.now += 1
    await quota_agent.call("ListKeys")


async def test_crypto_uses_symmetric_bucket(tmp_path):
    """Encrypt under an AES key takes from the symmetric bucket."""
    agent = QuotaAgent(tmp_path, create=Rate(0, 1),
                       cryptographic=Rate(1, 1), cryptographic_asymmetric=Rate(1, 5))
    key_id = await agent.new_key()
    await agent.call("Encrypt", KeyId=key_id, Plaintext=b"x")
    with pytest.raises(errors.ThrottlingError):
        await agent.call("Encrypt", KeyId=key_id, Plaintext=b"x")
    await agent.store.aclose()


async def test_unlisted_group_not_limited(quota_agent):
    """An operation whose group has no bucket is never throttled."""
    stage = quota_agent.dispatcher.stages[0]
    operation = Operation("Custom", None, group="other")
    ctx = RequestContext.new("Custom", Peer(1, 1, 1))
    for _ in range(10):
        await stage.before(ctx, operation, {})


# --- key spec classes ---------------------------------------------------------------


class StubKeys:
    """Keys by id and alias, and versions by id; counts lookups."""

    def __init__(self):
        self.keys = {"key-aes": "Aliyun_AES_256", "key-sm4": "Aliyun_SM4",
                     "key-rsa": "RSA_2048", "key-ec": "EC_P256", "key-sm2": "EC_SM2"}
        self.aliases = {"alias/rsa": "key-rsa"}
        self.versions = {"0" * 8 + "-0000-4000-8000-" + "0" * 12: "key-rsa"}
        self.resolved = 0
        self.store = SimpleNamespace(get_version=self.get_version)

    async def resolve(self, reference):
        self.resolved += 1
        key_id = self.aliases.get(reference, reference)
        if key_id not in self.keys:
            raise errors.KeyNotFoundError()
        return SimpleNamespace(key_id=key_id, key_spec=self.keys[key_id])

    async def get_version(self, version_id):
        key_id = self.versions.get(version_id)
        return None if key_id is None else SimpleNamespace(key_id=key_id)


RSA_BLOB = ("0" * 8 + "-0000-4000-8000-" + "0" * 12).encode() + b"\x01" + b"\x00" * 40

SPEC_CASES = [
    ({"KeyId": "key-aes"}, SYMMETRIC_CRYPTO),
    ({"KeyId": "key-sm4"}, SYMMETRIC_CRYPTO),
    ({"KeyId": "key-rsa"}, ASYMMETRIC_CRYPTO),
    ({"KeyId": "key-ec"}, ASYMMETRIC_CRYPTO),
    ({"KeyId": "key-sm2"}, ASYMMETRIC_CRYPTO),
    ({"KeyId": "alias/rsa"}, ASYMMETRIC_CRYPTO),
    ({"KeyId": "key-missing"}, SYMMETRIC_CRYPTO),
    ({"CiphertextBlob": RSA_BLOB}, ASYMMETRIC_CRYPTO),
    ({"CiphertextBlob": b"\xff" * 60}, SYMMETRIC_CRYPTO),
    ({"CiphertextBlob": b"short"}, SYMMETRIC_CRYPTO),
    ({"CiphertextBlob": b"\x00" * 60, "DestinationKeyId": "key-rsa"},
     ASYMMETRIC_CRYPTO),
    ({}, SYMMETRIC_CRYPTO),
]


@pytest.mark.parametrize("values, bucket", SPEC_CASES,
                         ids=[str(sorted(v.items()))[:40] for v, _ in SPEC_CASES])
async def test_crypto_bucket_by_key_spec(values, bucket):
    """AES and SM4 keys use one bucket, RSA, EC and SM2 keys the other."""
    stage = QuotaStage(table(FakeTime()), StubKeys())
    assert await stage.crypto_bucket(values) == bucket


async def test_key_spec_classes_separate():
    """An empty asymmetric bucket leaves symmetric requests served."""
    stage = QuotaStage(table(FakeTime(), cryptographic=Rate(1, 5),
                             cryptographic_asymmetric=Rate(1, 1)), StubKeys())
    operation = Operation("Encrypt", None, group=CRYPTO)
    ctx = RequestContext.new("Encrypt", Peer(1, 1, 1))
    await stage.before(ctx, operation, {"KeyId": "key-rsa"})
    with pytest.raises(errors.ThrottlingError):
        await stage.before(ctx, operation, {"KeyId": "key-rsa"})
    await stage.before(ctx, operation, {"KeyId": "key-aes"})


async def test_key_spec_cached_by_id():
    """A key id is looked up once; later requests use the cached spec."""
    keys = StubKeys()
    stage = QuotaStage(table(FakeTime()), keys)
    for _ in range(5):
        await stage.crypto_bucket({"KeyId": "key-rsa"})
    for _ in range(5):
        await stage.crypto_bucket({"CiphertextBlob": RSA_BLOB})
    assert keys.resolved == 1


async def test_alias_resolved_every_time():
    """An alias is resolved on every request, since it may move."""
    keys = StubKeys()
    stage = QuotaStage(table(FakeTime()), keys)
    await stage.crypto_bucket({"KeyId": "alias/rsa"})
    keys.aliases["alias/rsa"] = "key-aes"
    assert await stage.crypto_bucket({"KeyId": "alias/rsa"}) == SYMMETRIC_CRYPTO


# --- configuration -------------------------------------------------------------------


def config_with(**sections):
    raw = {"agent": {"socket": "s", "data_dir": "d"},
           "keystores": {"default": {"type": "software", "domain_key_file": "k"}},
           **sections}
    return parse_config(raw, Path("/tmp"))


def test_quota_defaults_follow_reference():
    """The default rates are those of Alibaba Cloud KMS."""
    rates = config_with().quotas.rates
    assert rates["create"][0] == 10
    assert rates["cryptographic"][0] == 750
    assert rates["cryptographic_asymmetric"][0] == 200
    assert rates["read"][0] == 20
    assert rates["write"][0] == 10
    assert rates["read"][1] == 20


def test_quotas_off_by_default():
    """Quotas apply only when [quotas] enabled = true."""
    assert config_with().quotas.enabled is False
    assert config_with(quotas={"enabled": True}).quotas.enabled is True


def test_config_names_every_bucket():
    """The configuration has a rate for each bucket of the stage."""
    assert set(QUOTA_RATES) == set(BUCKETS)


def test_burst_follows_configured_rate():
    """Setting only a rate makes the default burst one second of it."""
    quotas = config_with(quotas={"read_rate": 2}).quotas
    assert quotas.rates["read"] == (2.0, 2.0)


def test_burst_set_explicitly():
    """A configured burst is used as given."""
    quotas = config_with(quotas={"read_rate": 2, "read_burst": 3}).quotas
    assert quotas.rates["read"] == (2.0, 3.0)


@pytest.mark.parametrize("section, message", [
    ({"read_rate": -1}, "quotas.read_rate"),
    ({"read_burst": 0.5}, "quotas.read_burst"),
    ({"reads_rate": 1}, "quotas.reads_rate: unknown key"),
    ({"max_callers": 0}, "quotas.max_callers"),
])
def test_quota_config_rejects_bad_values(section, message):
    """Invalid quota settings name the key."""
    with pytest.raises(ConfigError, match=message):
        config_with(quotas=section)


# --- resource limits -----------------------------------------------------------------


class LimitedAgent(Agent):
    """The key operations agent on a store with resource limits."""

    def __init__(self, tmp_path, **limits):
        self.clock = FakeClock()
        self.store = SqliteStore(tmp_path / "data", ResourceLimits(**limits))
        self.keys = KeyService(self.store, {"default": FakeKeystore(),
                                            "other": FakeKeystore("other")},
                               "default", self.clock, "local")
        self.dispatcher = Dispatcher(all_operations(), Services(keys=self.keys))

    async def try_create(self, outcomes, **params):
        try:
            await self.call("CreateKey", **params)
            outcomes.append("OK")
        except errors.LimitExceededError as error:
            outcomes.append(error.code)


@pytest.fixture
async def limited(tmp_path):
    agent = LimitedAgent(tmp_path, keys=3, aliases=2, versions=2)
    yield agent
    await agent.store.aclose()


async def test_key_limit_per_keystore(limited):
    """The fourth key of a keystore is refused; another keystore is not full."""
    for _ in range(3):
        await limited.new_key()
    with pytest.raises(errors.LimitExceededError) as caught:
        await limited.new_key()
    assert caught.value.code == "Rejected.LimitExceeded"
    assert caught.value.http_status == 400
    assert "keystore default has reached its limit of 3 keys" in caught.value.message
    await limited.new_key(DKMSInstanceId="other")


async def test_concurrent_creates_hold_limit(limited):
    """Twenty creates at once leave exactly the limit of keys."""
    outcomes = []
    async with trio.open_nursery() as nursery:
        for _ in range(20):
            nursery.start_soon(limited.try_create, outcomes)
    assert outcomes.count("OK") == 3
    assert outcomes.count("Rejected.LimitExceeded") == 17
    assert (await limited.call("ListKeys"))["TotalCount"] == 3


def test_two_stores_hold_limit(tmp_path):
    """Two agents' stores on one database never pass the limit together."""
    limits = ResourceLimits(keys=10)
    first = SqliteStore(tmp_path / "shared", limits)
    second = SqliteStore(tmp_path / "shared", limits)
    outcomes = []

    def insert_many(store, prefix):
        async def run():
            for number in range(15):
                key = KeyRecord(
                    key_id=f"key-{prefix}{number}", keystore="default",
                    key_spec="Aliyun_AES_256", key_usage="ENCRYPT/DECRYPT",
                    origin="Aliyun_KMS", protection_level="HSM", description="",
                    creator="test", creation_date="2026-01-01T00:00:00Z",
                    state="Enabled", primary_version_id=None)
                try:
                    await store.insert_key(key, None, {})
                    outcomes.append("OK")
                except LimitError:
                    outcomes.append("limit")
        trio.run(run)

    threads = [threading.Thread(target=insert_many, args=(store, prefix))
               for store, prefix in ((first, "a"), (second, "b"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes.count("OK") == 10
    assert outcomes.count("limit") == 20


async def test_alias_limit_per_keystore(limited):
    """The third alias of a keystore is refused."""
    key_id = await limited.new_key()
    await limited.call("CreateAlias", AliasName="alias/one", KeyId=key_id)
    await limited.call("CreateAlias", AliasName="alias/two", KeyId=key_id)
    with pytest.raises(errors.LimitExceededError, match="limit of 2 aliases"):
        await limited.call("CreateAlias", AliasName="alias/three", KeyId=key_id)
    assert await limited.store.get_alias("alias/three") is None


async def test_version_limit_configured(limited):
    """[limits] versions caps CreateKeyVersion."""
    key_id = await limited.new_key()
    await limited.call("CreateKeyVersion", KeyId=key_id)
    with pytest.raises(errors.LimitExceededError, match="at most 2"):
        await limited.call("CreateKeyVersion", KeyId=key_id)


async def test_secret_limit_per_keystore(tmp_path):
    """The second secret of a keystore is refused when the limit is one."""
    store = SqliteStore(tmp_path / "data", ResourceLimits(secrets=1))
    agent = SecretAgent(tmp_path, store=store)
    await agent.create(name="app/one")
    with pytest.raises(errors.LimitExceededError, match="limit of 1 secrets"):
        await agent.create(name="app/two")
    assert await store.get_secret("app/two") is None
    await store.aclose()


async def test_store_without_limits(tmp_path):
    """A store built without limits takes any number of keys."""
    agent = Agent(tmp_path)
    for _ in range(5):
        await agent.new_key()
    assert agent.store.limits == ResourceLimits()
    await agent.store.aclose()


async def test_key_count_uses_index(limited):
    """Counting the keys of a keystore reads an index, not the table."""
    rows = limited.store._read(
        "EXPLAIN QUERY PLAN SELECT count(*) FROM keys WHERE keystore = ?", ("x",))
    assert "keys_by_keystore" in " ".join(str(row[3]) for row in rows)


def test_limits_config_defaults():
    """The default limits are generous, with 50 versions per key."""
    limits = config_with().limits
    assert limits.keys == 100000
    assert limits.aliases == 100000
    assert limits.versions == 50
    assert limits.secrets == 100000


def test_limits_config_rejects_zero():
    """A limit below one is invalid."""
    with pytest.raises(ConfigError, match="limits.keys"):
        config_with(limits={"keys": 0})
