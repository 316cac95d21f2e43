"""Remembered point lookups: served again until any connection commits."""

from __future__ import annotations

import dataclasses
import sqlite3

import pytest

from agent.store.base import StoreError
from agent.store.lookups import LookupCache
from agent.store.records import ENABLED, PENDING_DELETION
from agent.store.sqlite import DATABASE_NAME, SqliteStore
from tests.store.test_sqlite import make_key, make_version


async def test_repeated_lookup_hits_cache(store):
    """The second read of an unchanged key returns the same record object."""
    await store.insert_key(make_key("k1"), make_version("k1"), {})
    first = await store.get_key("k1")
    hits = store.lookups.hits
    assert await store.get_key("k1") is first
    assert store.lookups.hits == hits + 1


async def test_own_write_seen_at_once(store):
    """A change through the store's writer is seen by the next lookup."""
    await store.insert_key(make_key("k1"), make_version("k1"), {})
    key = await store.get_key("k1")
    await store.update_key(dataclasses.replace(key, state=PENDING_DELETION))
    assert (await store.get_key("k1")).state == PENDING_DELETION


def _commit_elsewhere(path, sql: str, *args) -> None:
    # A second connection to the file, as another agent's process has.
    other = sqlite3.connect(path / DATABASE_NAME, isolation_level=None)
    try:
        other.execute(sql, args)
    finally:
        other.close()


async def test_other_commit_seen_after_recheck(store, tmp_path):
    """Another connection's commit is seen once the recheck interval has passed."""
    now = [0.0]
    store.lookups = LookupCache(store._reader, recheck_seconds=0.001,
                                clock=lambda: now[0])
    await store.insert_key(make_key("k1"), make_version("k1"), {})
    assert (await store.get_key("k1")).state == ENABLED
    _commit_elsewhere(tmp_path, "UPDATE keys SET state = ? WHERE key_id = 'k1'",
                      PENDING_DELETION)
    # Within the interval the remembered record is still served ...
    assert (await store.get_key("k1")).state == ENABLED
    now[0] += 0.001
    # ... and after it the change is seen.
    assert (await store.get_key("k1")).state == PENDING_DELETION


async def test_other_commit_seen_without_interval(store, tmp_path):
    """With a zero interval every lookup checks data_version first."""
    store.lookups = LookupCache(store._reader, recheck_seconds=0)
    await store.insert_key(make_key("k1"), make_version("k1"), {})
    assert (await store.get_key("k1")).description == ""
    _commit_elsewhere(tmp_path, "UPDATE keys SET description = 'x' WHERE key_id = 'k1'")
    assert (await store.get_key("k1")).description == "x"


async def test_remembered_miss_then_created(store):
    """A remembered miss does not hide a record created afterwards."""
    assert await store.get_key("k1") is None
    assert await store.get_version("k1-v1") is None
    await store.insert_key(make_key("k1"), make_version("k1"), {})
    assert (await store.get_key("k1")).key_id == "k1"
    assert (await store.get_version("k1-v1")).wrapped == b"sealed"


async def test_purged_key_gone_from_lookups(store):
    """After a purge neither the key nor its version is served from memory."""
    await store.insert_key(make_key("k1", state=PENDING_DELETION,
                                    delete_date="2026-01-02T00:00:00Z"),
                           make_version("k1"), {})
    assert await store.get_key("k1") is not None
    assert await store.get_version("k1-v1") is not None
    assert await store.purge_key("k1", "2026-01-03T00:00:00Z")
    assert await store.get_key("k1") is None
    assert await store.get_version("k1-v1") is None


def test_cache_starts_over_when_full(tmp_path):
    """More distinct lookups than the bound empty the cache instead of growing it."""
    conn = sqlite3.connect(tmp_path / "bound.db", isolation_level=None)
    cache = LookupCache(conn, max_entries=3)
    entries = cache.current()
    for index in range(3):
        cache.remember(entries, ("get", index), index)
    assert len(entries) == 3
    cache.remember(entries, ("get", 3), 3)
    assert entries == {("get", 3): 3}
    conn.close()


async def test_closed_store_lookup_raises(tmp_path):
    """A lookup on a closed store raises StoreError, even one remembered."""
    store = SqliteStore(tmp_path)
    store.lookups = LookupCache(store._reader, recheck_seconds=0.001,
                                clock=lambda: 0.0)
    await store.insert_key(make_key("k1"), make_version("k1"), {})
    assert (await store.get_key("k1")).key_id == "k1"
    await store.aclose()
    with pytest.raises(StoreError):
        await store.get_key("k1")
