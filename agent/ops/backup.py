"""Backup files of the store: snapshot, format, validation and restore.

``snapshot_database`` copies the SQLite store with SQLite's online backup
API in a single step, which holds one read transaction on the source: the
copy is the state of one instant, while the agent goes on serving (WAL
mode lets writers continue). A backup holds only what the store holds:
key material sealed under the keystores' domain keys, metadata, and
secret values as ciphertext. It never contains plaintext key material,
and restored keys decrypt only where the same domain keys are present.

The file format, version 1 (integers big-endian)::

    magic "KMS-AGENT-BACKUP" (16 bytes) | format version u16 | header length u32
    | header (UTF-8 JSON) | database (the SQLite file) | SHA-256 of all before

The header records the creation time, the store's schema version, and
the database's length and SHA-256. ``read_backup`` checks all of it, so
a truncated or altered file is rejected before anything is written.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import os
import sqlite3
import struct
from pathlib import Path
from typing import BinaryIO

from agent.store.sqlite import DATABASE_NAME, MIGRATIONS

MAGIC = b"KMS-AGENT-BACKUP"
FORMAT_VERSION = 1
_PREFIX = struct.Struct(">16sHI")
DIGEST_BYTES = 32
MAX_HEADER_BYTES = 65536
_CHUNK = 1 << 20


class BackupError(Exception):
    """A backup cannot be made, read or restored; the message names the cause."""


@dataclasses.dataclass(frozen=True)
class BackupHeader:
    """The header of a backup file, describing the database it carries."""

    format_version: int
    created: str
    schema_version: int
    database_bytes: int
    database_sha256: str
    agent_version: str

    def to_json(self) -> bytes:
        return json.dumps(dataclasses.asdict(self), sort_keys=True).encode("utf-8")


def snapshot_database(database: Path, target: Path) -> int:
    """Copy the live database to ``target``; return its schema version.

    ``target`` is a new file; it is left as a self-contained SQLite file
    (rollback journal mode, no -wal file).

    Raises:
        BackupError: SQLite failed or the copy fails its integrity check.
    """
    try:
        source = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
        try:
            copy = sqlite3.connect(target)
            try:
                source.backup(copy)
                copy.execute("PRAGMA journal_mode=DELETE")
                check = copy.execute("PRAGMA quick_check").fetchone()[0]
                version = copy.execute("PRAGMA user_version").fetchone()[0]
            finally:
                copy.close()
        finally:
            source.close()
    except sqlite3.Error as exc:
        raise BackupError(f"snapshot of {database} failed: {exc}") from None
    if check != "ok":
        raise BackupError(f"the snapshot fails SQLite's integrity check: {check}")
    return version


def write_backup(database: Path, schema_version: int, agent_version: str,
                 output: BinaryIO) -> tuple[int, str]:
    """Write a backup file of ``database`` to ``output``.

    Returns:
        ``(bytes written, SHA-256 hex of the whole file)``.
    """
    size, digest = _file_digest(database)
    header = BackupHeader(
        FORMAT_VERSION, _utc_now(), schema_version, size, digest, agent_version
    ).to_json()
    whole = hashlib.sha256()

    def emit(data: bytes) -> None:
        whole.update(data)
        output.write(data)

    emit(_PREFIX.pack(MAGIC, FORMAT_VERSION, len(header)))
    emit(header)
    with open(database, "rb") as stream:
        while chunk := stream.read(_CHUNK):
            emit(chunk)
    trailer = whole.digest()
    output.write(trailer)
    # The digest of the whole file, trailer included, lets a client check
    # the transfer without parsing the format.
    whole.update(trailer)
    total = _PREFIX.size + len(header) + size + DIGEST_BYTES
    return total, whole.hexdigest()


def read_backup(path: Path) -> BackupHeader:
    """Check a backup file completely and return its header.

    Raises:
        BackupError: the file cannot be read, is not a kms-agent backup,
            has an unknown format version, is truncated, or its checksum
            does not match; the message names the problem.
    """
    try:
        with open(path, "rb") as stream:
            size = os.fstat(stream.fileno()).st_size
            header, header_bytes = _read_header(stream, path, size)
            _check_length(path, size, _PREFIX.size + header_bytes, header)
            _check_digests(stream, path, header)
    except OSError as exc:
        raise BackupError(f"cannot read {path}: {exc.strerror}") from None
    return header


def _read_header(stream: BinaryIO, path: Path, size: int) -> tuple[BackupHeader, int]:
    prefix = stream.read(_PREFIX.size)
    if len(prefix) < _PREFIX.size:
        raise BackupError(f"{path} is truncated: {size} bytes, shorter than a "
                          "backup header")
    magic, version, length = _PREFIX.unpack(prefix)
    if magic != MAGIC:
        raise BackupError(f"{path} is not a kms-agent backup file")
    if version != FORMAT_VERSION:
        raise BackupError(f"{path} has backup format version {version}; this agent "
                          f"reads version {FORMAT_VERSION}")
    if length > MAX_HEADER_BYTES:
        raise BackupError(f"{path} is corrupt: header length {length} is too large")
    raw = stream.read(length)
    if len(raw) < length:
        raise BackupError(f"{path} is truncated inside its header")
    return _parse_header(path, raw), length


def _parse_header(path: Path, raw: bytes) -> BackupHeader:
    try:
        values = json.loads(raw.decode("utf-8"))
        header = BackupHeader(**values)
    except (UnicodeDecodeError, ValueError, TypeError):
        raise BackupError(f"{path} is corrupt: its header is not valid") from None
    numbers = (header.format_version, header.schema_version, header.database_bytes)
    if not all(isinstance(n, int) and n >= 0 for n in numbers):
        raise BackupError(f"{path} is corrupt: its header has invalid numbers")
    return header


def _check_length(path: Path, size: int, offset: int, header: BackupHeader) -> None:
    expected = offset + header.database_bytes + DIGEST_BYTES
    if size < expected:
        raise BackupError(f"{path} is truncated: {size} bytes of the expected "
                          f"{expected}")
    if size > expected:
        raise BackupError(f"{path} is corrupt: {size - expected} unexpected bytes "
                          "after the end")


def _check_digests(stream: BinaryIO, path: Path, header: BackupHeader) -> None:
    # Hash the prefix and header again, then the database, then compare.
    position = stream.tell()
    stream.seek(0)
    whole = hashlib.sha256(stream.read(position))
    database = hashlib.sha256()
    remaining = header.database_bytes
    while remaining:
        chunk = stream.read(min(_CHUNK, remaining))
        if not chunk:
            raise BackupError(f"{path} is truncated inside the database")
        whole.update(chunk)
        database.update(chunk)
        remaining -= len(chunk)
    if stream.read(DIGEST_BYTES) != whole.digest():
        raise BackupError(f"{path} is corrupt: its checksum does not match")
    if database.hexdigest() != header.database_sha256:
        raise BackupError(f"{path} is corrupt: the database checksum does not match")


@dataclasses.dataclass(frozen=True)
class RestoreSummary:
    """The result of a restore: the header, the database and the counts."""

    header: BackupHeader
    database: Path
    keys_by_keystore: dict[str, int]
    secrets: int


def restore(backup: Path, data_dir: Path) -> RestoreSummary:
    """Restore ``backup`` as the store of a new, empty ``data_dir``.

    The backup is checked completely first; nothing is created unless it
    passes. On a failure after that, what was created is removed again.

    Raises:
        BackupError: ``data_dir`` is not empty or not a directory, or the
            backup is invalid or newer than this agent's store.
    """
    _check_empty(data_dir)
    header = read_backup(backup)
    if header.schema_version > len(MIGRATIONS):
        raise BackupError(
            f"{backup} contains store schema version {header.schema_version}, newer "
            f"than this agent supports ({len(MIGRATIONS)}); upgrade the agent")
    created = not data_dir.exists()
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    temporary = data_dir / f".restore-{os.getpid()}.tmp"
    try:
        _extract(backup, header, temporary)
        keys, secrets = _check_database(temporary)
        target = data_dir / DATABASE_NAME
        os.replace(temporary, target)
        _fsync_directory(data_dir)
    except BaseException:
        temporary.unlink(missing_ok=True)
        if created:
            data_dir.rmdir()
        raise
    return RestoreSummary(header, target, keys, secrets)


def _check_empty(data_dir: Path) -> None:
    if not data_dir.exists():
        return
    if not data_dir.is_dir():
        raise BackupError(f"{data_dir} exists and is not a directory")
    entries = sorted(entry.name for entry in data_dir.iterdir())
    if entries:
        raise BackupError(
            f"{data_dir} is not empty (it contains {entries[0]}); restore only into "
            "a new or empty directory, so no store is overwritten")


def _extract(backup: Path, header: BackupHeader, target: Path) -> None:
    descriptor = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                         0o600)
    digest = hashlib.sha256()
    with open(backup, "rb") as source, os.fdopen(descriptor, "wb") as output:
        source.seek(_PREFIX.size + _PREFIX.unpack(source.read(_PREFIX.size))[2])
        remaining = header.database_bytes
        while remaining:
            chunk = source.read(min(_CHUNK, remaining))
            if not chunk:
                break
            digest.update(chunk)
            output.write(chunk)
            remaining -= len(chunk)
        output.flush()
        os.fsync(output.fileno())
    # The file could have changed since read_backup checked it.
    if remaining or digest.hexdigest() != header.database_sha256:
        raise BackupError(f"{backup} changed while it was being restored")


def _check_database(path: Path) -> tuple[dict[str, int], int]:
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            check = conn.execute("PRAGMA integrity_check").fetchone()[0]
            keys = dict(conn.execute(
                "SELECT keystore, count(*) FROM keys GROUP BY keystore").fetchall())
            secrets = _count_secrets(conn)
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise BackupError(f"the restored database cannot be read: {exc}") from None
    if check != "ok":
        raise BackupError(f"the restored database fails its integrity check: {check}")
    return keys, secrets


def _count_secrets(conn: sqlite3.Connection) -> int:
    try:
        return conn.execute("SELECT count(*) FROM secrets").fetchone()[0]
    except sqlite3.OperationalError:  # a store older than secrets
        return 0


def _file_digest(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as stream:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def _fsync_directory(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _utc_now() -> str:
    now = datetime.datetime.now(datetime.timezone.utc)
    return now.strftime("%Y-%m-%dT%H:%M:%SZ")
