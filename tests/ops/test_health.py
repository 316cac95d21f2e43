"""DescribeAgentHealth on fake keystores and a real SQLite store."""

from __future__ import annotations

import pytest

from agent.keystore.unavailable import UnavailableKeystore
from agent.ops.health import HealthService
from agent.store.sqlite import SqliteStore
from tests.fakes import FakeKeystore


class BrokenKeystore(FakeKeystore):
    """Reports ready but fails every call, like a token pulled out."""

    async def random_bytes(self, length):
        raise OSError("CKR_DEVICE_REMOVED")


@pytest.fixture
async def store(tmp_path):
    instance = SqliteStore(tmp_path / "data")
    yield instance
    await instance.aclose()


async def test_ready_when_all_answer(store):
    """With every keystore and the store working, the agent is ready."""
    health = HealthService({"a": FakeKeystore("a")}, store, lambda: 3)
    reply = await health.describe()
    assert reply["Status"] == "ready"
    assert reply["Ready"] is True
    assert reply["Live"] is True
    assert reply["Connections"] == 3
    assert reply["Store"] == {"Ready": True}
    assert reply["Keystores"]["Keystore"] == [
        {"Name": "a", "Type": "fake", "Ready": True}]


async def test_failed_probe_degrades(store):
    """A keystore that fails the random-bytes probe is not ready."""
    health = HealthService({"a": FakeKeystore("a"), "b": BrokenKeystore("b")}, store)
    reply = await health.describe()
    assert reply["Status"] == "degraded"
    assert reply["Ready"] is False
    assert [k["Ready"] for k in reply["Keystores"]["Keystore"]] == [True, False]


async def test_unavailable_keystore_reason_hidden(store):
    """A keystore that failed to open is listed without its reason."""
    health = HealthService({"a": UnavailableKeystore("a", "PIN file /x has mode 0644")},
                           store)
    reply = await health.describe()
    entry = reply["Keystores"]["Keystore"][0]
    assert entry == {"Name": "a", "Type": "unavailable", "Ready": False}
    assert "0644" not in repr(reply)


async def test_closed_store_not_ready(tmp_path):
    """A store that fails a read makes the agent not ready."""
    store = SqliteStore(tmp_path / "data")
    await store.aclose()
    reply = await HealthService({"a": FakeKeystore("a")}, store).describe()
    assert reply["Store"] == {"Ready": False}
    assert reply["Ready"] is False
