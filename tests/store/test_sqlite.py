"""The SQLite store: compare-and-swap, migrations, purging, crash safety."""

from __future__ import annotations

import dataclasses
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap

import pytest
import trio

from agent.store.base import ConflictError, DuplicateError, StoreError
from agent.store.records import (
    ENABLED, PENDING_DELETION, AliasRecord, KeyFilter, KeyRecord, KeyVersionRecord,
)
from agent.store.sqlite import DATABASE_NAME, MIGRATIONS, SqliteStore


def make_key(key_id: str, **changes) -> KeyRecord:
    key = KeyRecord(
        key_id=key_id, keystore="default", key_spec="Aliyun_AES_256",
        key_usage="ENCRYPT/DECRYPT", origin="Aliyun_KMS", protection_level="HSM",
        description="", creator="0", creation_date="2026-01-01T00:00:00Z",
        state=ENABLED, primary_version_id=f"{key_id}-v1")
    return dataclasses.replace(key, **changes)


def make_version(key_id: str) -> KeyVersionRecord:
    return KeyVersionRecord(f"{key_id}-v1", key_id, "2026-01-01T00:00:00Z", "HSM", 1,
                            b"sealed")


async def test_insert_and_read_back(store):
    """A key, its version and tags read back exactly."""
    await store.insert_key(make_key("k1"), make_version("k1"), {"env": "prod"})
    assert await store.get_key("k1") == make_key("k1")
    assert (await store.get_version("k1-v1")).wrapped == b"sealed"
    assert await store.get_tags("key", "k1") == {"env": "prod"}


async def test_update_bumps_revision(store):
    """update_key stores the change with the next revision."""
    await store.insert_key(make_key("k1"), make_version("k1"), {})
    stored = await store.update_key(make_key("k1", description="new"))
    assert stored.revision == 1
    assert (await store.get_key("k1")).description == "new"


async def test_stale_update_conflicts(store):
    """A writer holding an old revision loses with ConflictError."""
    await store.insert_key(make_key("k1"), make_version("k1"), {})
    await store.update_key(make_key("k1", description="first"))
    with pytest.raises(ConflictError):
        await store.update_key(make_key("k1", description="stale"))
    assert (await store.get_key("k1")).description == "first"


async def test_duplicate_alias_rejected(store):
    """A second alias with the same name raises DuplicateError."""
    await store.insert_key(make_key("k1"), make_version("k1"), {})
    alias = AliasRecord("alias/a", "k1", "t", "t")
    await store.create_alias(alias)
    with pytest.raises(DuplicateError):
        await store.create_alias(alias)


async def test_list_keys_filters_and_pages(store):
    """Filters OR within a field, AND across fields; pages keep order."""
    for number in range(5):
        state = ENABLED if number % 2 == 0 else "Disabled"
        await store.insert_key(make_key(f"k{number}", state=state),
                               make_version(f"k{number}"), {"n": str(number)})
    keys, total = await store.list_keys(KeyFilter(key_state=(ENABLED,)), 0, 2)
    assert total == 3
    assert [k.key_id for k in keys] == ["k0", "k2"]
    keys, total = await store.list_keys(
        KeyFilter(key_state=(ENABLED,), tag_value=("2", "3")), 0, 10)
    assert [k.key_id for k in keys] == ["k2"]


async def test_purge_runs_once(store):
    """Two concurrent purges of one due key delete it exactly once."""
    await store.insert_key(make_key("k1", state=PENDING_DELETION,
                                    delete_date="2026-01-02T00:00:00Z"),
                           make_version("k1"), {"a": "b"})
    await store.create_alias(AliasRecord("alias/a", "k1", "t", "t"))
    results = []

    async def purge():
        results.append(await store.purge_key("k1", "2026-01-03T00:00:00Z"))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(purge)
        nursery.start_soon(purge)
    assert sorted(results) == [False, True]
    assert await store.get_key("k1") is None
    assert await store.get_alias("alias/a") is None
    assert await store.get_version("k1-v1") is None


async def test_purge_skips_key_not_due(store):
    """A key whose date has not come is not purged."""
    await store.insert_key(make_key("k1", state=PENDING_DELETION,
                                    delete_date="2026-02-01T00:00:00Z"),
                           make_version("k1"), {})
    assert await store.keys_due_for_deletion("2026-01-15T00:00:00Z") == []
    assert not await store.purge_key("k1", "2026-01-15T00:00:00Z")


def test_migrations_set_schema_version(tmp_path):
    """A new store is at the latest schema version in WAL mode."""
    SqliteStore(tmp_path)
    conn = sqlite3.connect(tmp_path / DATABASE_NAME)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_newer_schema_refused(tmp_path):
    """A store written by a newer agent is refused with a clear error."""
    SqliteStore(tmp_path)
    conn = sqlite3.connect(tmp_path / DATABASE_NAME)
    conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    conn.close()
    with pytest.raises(StoreError, match="newer than this agent"):
        SqliteStore(tmp_path)


WRITER = textwrap.dedent("""
    import sys, trio
    sys.path.insert(0, sys.argv[2])
    from tests.store.test_sqlite import make_key, make_version
    from agent.store.sqlite import SqliteStore

    async def main():
        store = SqliteStore(__import__("pathlib").Path(sys.argv[1]))
        number = 0
        while True:
            key_id = f"k{number}"
            await store.insert_key(make_key(key_id), make_version(key_id), {"n": "1"})
            await store.update_key(make_key(key_id, description="updated"))
            print(number, flush=True)
            number += 1

    trio.run(main)
""")


def test_kill_nine_keeps_acknowledged_writes(tmp_path):
    """After kill -9 mid-write, every acknowledged write is present and whole."""
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), repo],
                            stdout=subprocess.PIPE, text=True)
    acknowledged = -1
    for line in proc.stdout:
        acknowledged = int(line)
        if acknowledged >= 40:
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    conn = sqlite3.connect(tmp_path / DATABASE_NAME)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    rows = dict(conn.execute("SELECT key_id, description FROM keys"))
    for number in range(acknowledged + 1):
        assert rows[f"k{number}"] == "updated", number
    orphans = conn.execute(
        "SELECT count(*) FROM key_versions WHERE key_id NOT IN "
        "(SELECT key_id FROM keys)").fetchone()[0]
    assert orphans == 0


def test_open_data_dir_refused(tmp_path):
    """A data directory that other users can enter is refused."""
    tmp_path.chmod(0o755)
    with pytest.raises(StoreError, match="accessible by other users"):
        SqliteStore(tmp_path)


def test_database_file_private(tmp_path):
    """The database file is created readable by its owner only."""
    SqliteStore(tmp_path)
    assert os.stat(tmp_path / DATABASE_NAME).st_mode & 0o777 == 0o600


async def test_tags_need_an_existing_resource(store):
    """set_tags on a gone key, a missing certificate or a secret in its window conflicts."""
    with pytest.raises(ConflictError):
        await store.set_tags("key", "k1", {"a": "b"})
    with pytest.raises(ConflictError):
        await store.set_tags("certificate", "cert-1", {"a": "b"})
    with pytest.raises(ConflictError):
        await store.set_tags("secret", "app/db", {"a": "b"})
    await store.insert_key(make_key("k1"), make_version("k1"), {})
    await store.set_tags("key", "k1", {"a": "b"})
    assert await store.get_tags("key", "k1") == {"a": "b"}
    assert await store.get_tags("certificate", "cert-1") == {}
