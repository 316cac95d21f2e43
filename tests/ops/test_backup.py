"""Backup files: snapshot, validation, restore and its refusals."""

from __future__ import annotations

import struct

import pytest

from agent.context import FakeClock
from agent.keys.service import KeyService
from agent.ops import backup
from agent.ops.backup_ops import BackupSessions
from agent.store.sqlite import DATABASE_NAME, SqliteStore
from client import errors
from tests.fakes import FakeKeystore


class Store:
    """A key service on a real store with a fake keystore."""

    def __init__(self, data_dir, keystore):
        self.store = SqliteStore(data_dir)
        self.keys = KeyService(self.store, {"default": keystore}, "default",
                               FakeClock(), "local")

    async def new_key(self) -> str:
        key = await self.keys.create_key(
            key_spec="Aliyun_AES_256", key_usage=None, origin="Aliyun_KMS",
            protection_level=None, description="", tags={}, keystore_name=None,
            creator="test")
        return key.key_id


@pytest.fixture
def keystore():
    return FakeKeystore()


@pytest.fixture
async def source(tmp_path, keystore):
    instance = Store(tmp_path / "data", keystore)
    yield instance
    await instance.store.aclose()


async def take_backup(source, path):
    sessions = BackupSessions(source.store.path, source.store.path.parent)
    backup_id, info = await sessions.create()
    data, size = await sessions.read(backup_id, 0, info.size)
    path.write_bytes(data)
    sessions.close()
    return info


async def test_restored_keys_decrypt(tmp_path, source, keystore):
    """Ciphertext made before the backup decrypts from the restored store."""
    key_id = await source.new_key()
    blob = (await source.keys.encrypt(key_id, b"before", None)).blob
    await take_backup(source, tmp_path / "b.bak")
    summary = backup.restore(tmp_path / "b.bak", tmp_path / "restored")
    assert summary.keys_by_keystore == {"default": 1}
    restored = Store(tmp_path / "restored", keystore)
    try:
        assert (await restored.keys.decrypt(blob, None)).plaintext == b"before"
    finally:
        await restored.store.aclose()


async def test_other_domain_key_cannot_decrypt(tmp_path, source):
    """Without the same domain key, restored keys decrypt nothing."""
    key_id = await source.new_key()
    blob = (await source.keys.encrypt(key_id, b"before", None)).blob
    await take_backup(source, tmp_path / "b.bak")
    backup.restore(tmp_path / "b.bak", tmp_path / "restored")
    restored = Store(tmp_path / "restored", FakeKeystore())
    try:
        with pytest.raises(errors.InvalidCiphertextError):
            await restored.keys.decrypt(blob, None)
    finally:
        await restored.store.aclose()


async def test_backup_holds_no_raw_material(tmp_path, source, keystore):
    """The backup contains the sealed material, never the raw key bytes."""
    key_id = await source.new_key()
    version = (await source.store.list_versions(key_id))[0]
    raw = keystore._domain.decrypt(version.wrapped[:12], version.wrapped[12:],
                                   version.version_id.encode())
    await take_backup(source, tmp_path / "b.bak")
    content = (tmp_path / "b.bak").read_bytes()
    assert version.wrapped in content
    assert raw not in content


async def test_header_describes_database(tmp_path, source):
    """The header names the format, schema version and database length."""
    info = await take_backup(source, tmp_path / "b.bak")
    header = backup.read_backup(tmp_path / "b.bak")
    assert header.format_version == backup.FORMAT_VERSION
    assert header.schema_version == info.schema_version
    assert header.database_bytes > 0


@pytest.fixture
async def backup_file(tmp_path, source):
    await source.new_key()
    await take_backup(source, tmp_path / "b.bak")
    return tmp_path / "b.bak"


async def test_nonempty_directory_rejected(tmp_path, backup_file):
    """A restore into a directory with files is rejected, leaving it alone."""
    target = tmp_path / "busy"
    target.mkdir()
    (target / "kms-agent.db").write_bytes(b"precious")
    with pytest.raises(backup.BackupError, match="not empty"):
        backup.restore(backup_file, target)
    assert (target / "kms-agent.db").read_bytes() == b"precious"


async def test_file_as_directory_rejected(tmp_path, backup_file):
    """A data directory path that is a file is rejected."""
    with pytest.raises(backup.BackupError, match="not a directory"):
        backup.restore(backup_file, backup_file)


def flip_byte(path, offset):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


async def test_corrupt_database_rejected(tmp_path, backup_file):
    """One changed byte in the database fails the checksum; nothing is created."""
    flip_byte(backup_file, backup_file.stat().st_size // 2)
    with pytest.raises(backup.BackupError, match="checksum does not match"):
        backup.restore(backup_file, tmp_path / "new")
    assert not (tmp_path / "new").exists()


async def test_corrupt_trailer_rejected(tmp_path, backup_file):
    """A changed checksum trailer is detected too."""
    flip_byte(backup_file, backup_file.stat().st_size - 1)
    with pytest.raises(backup.BackupError, match="checksum"):
        backup.restore(backup_file, tmp_path / "new")


@pytest.mark.parametrize("keep", [0, 10, 30, -1, -40])
async def test_truncated_file_rejected(tmp_path, backup_file, keep):
    """A file cut anywhere is reported as truncated; nothing is created."""
    data = backup_file.read_bytes()
    backup_file.write_bytes(data[:keep] if keep >= 0 else data[:keep])
    with pytest.raises(backup.BackupError, match="truncated|not a kms-agent"):
        backup.restore(backup_file, tmp_path / "new")
    assert not (tmp_path / "new").exists()


def test_not_a_backup_rejected(tmp_path):
    """A file of another kind is named as not a backup."""
    other = tmp_path / "notes.txt"
    other.write_bytes(b"just some text that is long enough to have a header")
    with pytest.raises(backup.BackupError, match="not a kms-agent backup"):
        backup.read_backup(other)


async def test_newer_format_rejected(tmp_path, backup_file):
    """A backup format this agent does not know is rejected by version."""
    data = bytearray(backup_file.read_bytes())
    data[16:18] = struct.pack(">H", 99)
    backup_file.write_bytes(bytes(data))
    with pytest.raises(backup.BackupError, match="format version 99"):
        backup.read_backup(backup_file)


async def test_appended_bytes_rejected(tmp_path, backup_file):
    """Bytes after the checksum make the file corrupt."""
    with open(backup_file, "ab") as stream:
        stream.write(b"extra")
    with pytest.raises(backup.BackupError, match="unexpected bytes"):
        backup.read_backup(backup_file)


async def test_restore_into_empty_directory(tmp_path, backup_file):
    """An existing empty directory is a valid target."""
    target = tmp_path / "empty"
    target.mkdir()
    summary = backup.restore(backup_file, target)
    assert summary.database == target / DATABASE_NAME
    assert sorted(p.name for p in target.iterdir()) == [DATABASE_NAME]
