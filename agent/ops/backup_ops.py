"""Backups over the socket: CreateAgentBackup and reading it in parts.

Agent-specific operations with no cloud counterpart; they need
``administrator`` on the agent. ``CreateAgentBackup`` takes a snapshot
of the store (see ``backup``) into an unnamed temporary file in the data
directory and returns its id, size and SHA-256. ``GetAgentBackupPart``
returns up to ``Length`` bytes from ``Offset``, so a backup of any size
fits in frames the client accepts, and ``DeleteAgentBackup`` drops it.
A backup not read for ``IDLE_SECONDS`` is dropped as well, and at most
``MAX_BACKUPS`` exist at once. ``kmsctl backup OUT`` runs all three.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import IO, Any, Callable

import trio

from agent.context import RequestContext
from agent.ops.backup import BackupError, snapshot_database, write_backup
from agent.ops.health import agent_version
from agent.rpc.dispatch import READ, WRITE, Operation
from agent.rpc.params import INT, Param
from client.errors import (
    InternalFailureError, InvalidParameterError, LimitExceededError,
    ResourceNotFoundError,
)

MAX_BACKUPS = 2
IDLE_SECONDS = 300.0
DEFAULT_PART_BYTES = 1 << 20
# Below the 16 MiB reply frames the Python clients accept.
MAX_PART_BYTES = 8 << 20
SNAPSHOT_PREFIX = ".backup-"


@dataclasses.dataclass
class _Backup:
    file: IO[bytes]
    size: int
    sha256: str
    schema_version: int
    created: str
    last_used: float


class BackupSessions:
    """Backups taken and not yet dropped; see the module docstring.

    Args:
        database: the store's SQLite file.
        work_dir: where snapshots are made (the data directory, so they
            stay on the store's file system with its permissions).
    """

    def __init__(self, database: Path, work_dir: Path,
                 timer: Callable[[], float] = time.monotonic):
        self.database = database
        self.work_dir = work_dir
        self._timer = timer
        self._backups: dict[str, _Backup] = {}
        self._lock = trio.Lock()
        self.on_result: Callable[[str], None] = lambda result: None
        remove_stale_snapshots(work_dir)

    async def create(self) -> tuple[str, _Backup]:
        """Take a snapshot and keep it for reading.

        Raises:
            LimitExceededError: ``MAX_BACKUPS`` backups exist already.
            BackupError: SQLite failed to copy the store.
        """
        self._expire()
        async with self._lock:
            if len(self._backups) >= MAX_BACKUPS:
                raise LimitExceededError(
                    f"{MAX_BACKUPS} backups are being read already; finish or delete "
                    f"one, or wait {IDLE_SECONDS:g} s until an idle one expires.")
            try:
                backup = await trio.to_thread.run_sync(self._take)
            except BackupError:
                self.on_result("failed")
                raise
            self.on_result("ok")
            backup_id = f"backup-{uuid.uuid4()}"
            self._backups[backup_id] = backup
            return backup_id, backup

    def _take(self) -> _Backup:
        descriptor, name = tempfile.mkstemp(prefix=SNAPSHOT_PREFIX, suffix=".db",
                                            dir=self.work_dir)
        os.close(descriptor)
        snapshot = Path(name)
        output = tempfile.TemporaryFile(dir=self.work_dir)
        try:
            version = snapshot_database(self.database, snapshot)
            size, sha256 = write_backup(snapshot, version, agent_version(), output)
            output.flush()
        except BaseException:
            output.close()
            raise
        finally:
            snapshot.unlink(missing_ok=True)
        created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        return _Backup(output, size, sha256, version, created, self._timer())

    async def read(self, backup_id: str, offset: int, length: int) -> tuple[bytes, int]:
        """Return ``(bytes from offset, total size)`` of a backup.

        Raises:
            ResourceNotFoundError: no backup has that id (or it expired).
            InvalidParameterError: ``offset`` is past the end.
        """
        self._expire()
        backup = self._find(backup_id)
        if offset > backup.size:
            raise InvalidParameterError(
                f"Offset {offset} is past the end of the backup ({backup.size} bytes).")
        backup.last_used = self._timer()
        data = await trio.to_thread.run_sync(_read_at, backup.file, offset, length)
        return data, backup.size

    def delete(self, backup_id: str) -> None:
        """Drop a backup.

        Raises:
            ResourceNotFoundError: no backup has that id.
        """
        self._find(backup_id)
        self._backups.pop(backup_id).file.close()

    def close(self) -> None:
        """Drop every backup; their files vanish with their descriptors."""
        for backup in self._backups.values():
            backup.file.close()
        self._backups.clear()

    def _find(self, backup_id: str) -> _Backup:
        backup = self._backups.get(backup_id)
        if backup is None:
            raise ResourceNotFoundError(
                f"The backup {backup_id!r} was not found; a backup is dropped after "
                f"{IDLE_SECONDS:g} s without reads.")
        return backup

    def _expire(self) -> None:
        now = self._timer()
        for backup_id, backup in list(self._backups.items()):
            if now - backup.last_used > IDLE_SECONDS:
                self._backups.pop(backup_id).file.close()


def _read_at(file: IO[bytes], offset: int, length: int) -> bytes:
    return os.pread(file.fileno(), length, offset)


def remove_stale_snapshots(work_dir: Path) -> None:
    """Remove snapshot files left by an agent killed while taking one."""
    if not work_dir.is_dir():
        return
    for path in work_dir.glob(f"{SNAPSHOT_PREFIX}*.db"):
        path.unlink(missing_ok=True)


# --- operations -----------------------------------------------------------


async def create_agent_backup(services: Any, ctx: RequestContext,
                              values: dict) -> dict:
    try:
        backup_id, backup = await services.ops.backups.create()
    except BackupError as exc:
        # SQLite's message and the store's path go to the request's log
        # line; the caller gets the generic InternalFailure.
        error = InternalFailureError()
        error.detail = str(exc)  # type: ignore[attr-defined]
        raise error from None
    return {"BackupId": backup_id, "Size": backup.size, "Sha256": backup.sha256,
            "SchemaVersion": backup.schema_version, "CreationDate": backup.created,
            "IdleTimeoutSeconds": int(IDLE_SECONDS)}


async def get_agent_backup_part(services: Any, ctx: RequestContext,
                                values: dict) -> dict:
    offset = values["Offset"]
    length = values.get("Length", DEFAULT_PART_BYTES)
    data, size = await services.ops.backups.read(values["BackupId"], offset, length)
    return {"BackupId": values["BackupId"], "Offset": offset, "Data": data,
            "Size": size}


async def delete_agent_backup(services: Any, ctx: RequestContext,
                              values: dict) -> dict:
    services.ops.backups.delete(values["BackupId"])
    return {"BackupId": values["BackupId"]}


_BACKUP_ID = Param("BackupId", required=True, low=1, high=64)

OPERATIONS = [
    Operation("CreateAgentBackup", create_agent_backup, (),
              permission="kms:CreateAgentBackup", group=WRITE),
    Operation("GetAgentBackupPart", get_agent_backup_part,
              (_BACKUP_ID, Param("Offset", INT, required=True, low=0, high=2**53),
               Param("Length", INT, low=1, high=MAX_PART_BYTES)),
              permission="kms:GetAgentBackupPart", group=READ),
    Operation("DeleteAgentBackup", delete_agent_backup, (_BACKUP_ID,),
              permission="kms:DeleteAgentBackup", group=WRITE),
]
