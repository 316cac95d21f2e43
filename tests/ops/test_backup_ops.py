"""The backup operations: create, read in parts, delete, expire, limit."""

from __future__ import annotations

import hashlib

import pytest

from agent.ops import backup_ops
from agent.ops.backup_ops import BackupSessions
from agent.store.sqlite import SqliteStore
from client import errors


class Timer:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


@pytest.fixture
async def sessions(tmp_path):
    store = SqliteStore(tmp_path / "data")
    timer = Timer()
    instance = BackupSessions(store.path, tmp_path / "data", timer)
    instance.timer = timer
    yield instance
    instance.close()
    await store.aclose()


async def test_parts_join_to_digest(sessions):
    """Parts read in sequence join to a file with the announced SHA-256."""
    backup_id, info = await sessions.create()
    data, offset = b"", 0
    while offset < info.size:
        part, size = await sessions.read(backup_id, offset, 4096)
        data += part
        offset += len(part)
    assert size == info.size
    assert hashlib.sha256(data).hexdigest() == info.sha256


async def test_snapshot_file_removed(sessions, tmp_path):
    """The intermediate snapshot does not stay in the data directory."""
    await sessions.create()
    names = sorted(p.name for p in (tmp_path / "data").iterdir())
    assert not [n for n in names if n.startswith(backup_ops.SNAPSHOT_PREFIX)]


async def test_deleted_backup_not_found(sessions):
    """A deleted backup can no longer be read."""
    backup_id, _ = await sessions.create()
    sessions.delete(backup_id)
    with pytest.raises(errors.ResourceNotFoundError):
        await sessions.read(backup_id, 0, 10)


async def test_idle_backup_expires(sessions):
    """A backup not read for the idle timeout is dropped."""
    backup_id, _ = await sessions.create()
    sessions.timer.now += backup_ops.IDLE_SECONDS + 1
    with pytest.raises(errors.ResourceNotFoundError):
        await sessions.read(backup_id, 0, 10)


async def test_backup_count_limited(sessions):
    """At most MAX_BACKUPS exist at once."""
    for _ in range(backup_ops.MAX_BACKUPS):
        await sessions.create()
    with pytest.raises(errors.LimitExceededError):
        await sessions.create()


async def test_offset_past_end_rejected(sessions):
    """An offset past the end is an invalid parameter."""
    backup_id, info = await sessions.create()
    with pytest.raises(errors.InvalidParameterError):
        await sessions.read(backup_id, info.size + 1, 10)


def test_stale_snapshots_removed(tmp_path):
    """Snapshot files of a killed agent are removed at start."""
    (tmp_path / ".backup-abc.db").write_bytes(b"x")
    (tmp_path / "kms-agent.db").write_bytes(b"keep")
    backup_ops.remove_stale_snapshots(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kms-agent.db"]
