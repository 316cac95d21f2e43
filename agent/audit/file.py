"""The audit file on disk: open, continue the chain, append with fsync.

``AuditFile`` is synchronous and meant to run in one worker thread at a
time (``agent.audit.trail`` serializes it). ``append`` writes a batch of
records and returns only after ``fsync``. On any error it cuts its own
partial write off again and closes the file, and the next call reopens
the path. Before each write it checks that the path still names the
open file, so a file that was deleted, renamed away or replaced is
noticed: an empty or missing path gets a new header that continues the
chain, while a non-empty file at the path must end with the agent's
last record. The line format lives in ``client.audit``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

from client.audit import GENESIS, ChainError, check_tail, header_fields, seal

# How much of the end of an existing file is read to check its tail.
TAIL_BYTES = 65536
REFUSE = "refuse"
SET_ASIDE = "set_aside"


class AuditFileError(Exception):
    """The audit file cannot be used; the message gives the cause and the fix."""


class AuditFile:
    """One audit file, appended to in hash-chained, fsynced batches.

    Args:
        path: the file; created with mode 0600 when missing.
        now: returns the current time as text, for header lines.
    """

    def __init__(self, path: Path, now: Callable[[], str]):
        self.path = path
        self._now = now
        self._fd: int | None = None
        self._identity: tuple[int, int] | None = None
        # The hash of the last record known to be on disk, and the size
        # of the file up to the end of that record.
        self.last_hash: str | None = None
        self._size = 0
        self.reopened = False

    def open_existing(self, broken_tail: str = REFUSE) -> Path | None:
        """Open the file at start, continuing the chain of its last record.

        With ``broken_tail`` set to ``set_aside``, a file whose tail is
        damaged is renamed to ``<name>.broken-<time>`` and a new chain
        starts.

        Returns:
            The name the damaged file was given, or None.
        Raises:
            AuditFileError: the tail is damaged and ``broken_tail`` is
                ``refuse``, or the file cannot be opened.
        """
        try:
            self._open()
            return None
        except ChainError as error:
            if broken_tail != SET_ASIDE:
                raise AuditFileError(
                    f"the end of the audit file {self.path} is damaged ({error}); "
                    f"run 'kmsctl audit verify {self.path}' to find the first bad "
                    "line, then move the file away, or set [audit] broken_tail = "
                    "\"set_aside\"") from None
        aside = self.path.with_name(
            f"{self.path.name}.broken-{self._now().replace(':', '')}")
        try:
            os.rename(self.path, aside)
            self._open()
        except (OSError, ChainError) as error:
            raise AuditFileError(f"cannot set aside the audit file {self.path}: "
                                 f"{error}") from None
        return aside

    def append(self, records: list[dict[str, Any]]) -> None:
        """Chain ``records`` after the last one and write them durably.

        Raises:
            OSError: the write or fsync failed; nothing of the batch is
                left in the chain, and the next call reopens the file.
            AuditFileError: the file at the path does not continue the
                agent's chain.
        """
        self._ensure_open()
        prev = self.last_hash or GENESIS
        lines = []
        for fields in records:
            line, prev = seal(fields, prev)
            lines.append(line)
        data = b"".join(lines)
        try:
            _write_all(self._fd, data)
            os.fsync(self._fd)
        except OSError:
            self._abandon()
            raise
        self._size += len(data)
        self.last_hash = prev

    def reopen(self) -> None:
        """Close the file and open the path again, as after log rotation.

        Raises:
            OSError, AuditFileError: as ``append``; the file stays closed.
        """
        self.close()
        self._ensure_open()

    def close(self) -> None:
        """Close the file; the next append opens the path again."""
        if self._fd is not None:
            os.close(self._fd)
        self._fd = None
        self._identity = None

    # --- opening ----------------------------------------------------------------

    def _ensure_open(self) -> None:
        if self._fd is not None and self._path_identity() == self._identity:
            return
        self.close()
        try:
            self._open()
        except ChainError as error:
            raise AuditFileError(
                f"the audit file {self.path} does not end with a valid record "
                f"({error}); move it away so the agent can start a new file"
            ) from None
        self.reopened = True

    def _path_identity(self) -> tuple[int, int] | None:
        try:
            status = os.stat(self.path)
        except FileNotFoundError:
            return None
        return status.st_dev, status.st_ino

    def _open(self) -> None:
        # Raises OSError, ChainError or AuditFileError; leaves nothing open.
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                     0o600)
        try:
            status = os.fstat(fd)
            if status.st_size == 0:
                size, last_hash = self._write_header(fd)
            else:
                size, last_hash = self._continue(fd, status.st_size)
        except BaseException:
            os.close(fd)
            raise
        self._fd, self._size, self.last_hash = fd, size, last_hash
        self._identity = (status.st_dev, status.st_ino)

    def _write_header(self, fd: int) -> tuple[int, str]:
        line, digest = seal(header_fields(self._now()), self.last_hash or GENESIS)
        _write_all(fd, line)
        os.fsync(fd)
        _fsync_directory(self.path.parent)
        return len(line), digest

    def _continue(self, fd: int, size: int) -> tuple[int, str]:
        start = max(0, size - TAIL_BYTES)
        with open(self.path, "rb") as stream:
            stream.seek(start)
            tail = stream.read(size - start)
        end = tail.rfind(b"\n") + 1
        if end < len(tail) and self.last_hash is not None and end > 0:
            # A partial line after the agent's own last record is a write
            # that failed midway and was never acknowledged: cut it off.
            if check_tail(tail[:end], start == 0) == self.last_hash:
                os.ftruncate(fd, start + end)
                os.fsync(fd)
                return start + end, self.last_hash
        last_hash = check_tail(tail, start == 0)
        if self.last_hash is not None and last_hash != self.last_hash:
            raise AuditFileError(
                f"the audit file {self.path} was replaced by a file that does not "
                "end with the agent's last record; move it away so the agent can "
                "start a new file")
        return size, last_hash

    def _abandon(self) -> None:
        # Cut off what the failed write left behind, so a retry appends
        # after the last whole record, then close.
        try:
            os.ftruncate(self._fd, self._size)
        except OSError:
            pass  # the reopen finds the partial line and cuts it then
        self.close()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
