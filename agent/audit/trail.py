"""The audit trail in the event loop: batch records, fsync off the loop.

``AuditTrail.run`` is a background task. Requests ``submit`` records,
and the task takes every record queued so far as one batch. It hands
the batch to the writer (an ``AuditFile``, or a fake in tests) in a
worker thread, so one fsync covers every request that finished
meanwhile. ``write``
waits until the batch that holds its record is durable and raises
``AuditWriteError`` if that batch failed; read-only requests submit and
go on, and their records wait up to ``LINGER_SECONDS`` for company. The task logs when the trail starts failing and when it works
again, not once per failed record.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

import trio

from agent.logs import log

# How long a stopping agent keeps writing the records still queued.
FINAL_FLUSH_SECONDS = 5.0
# How long records that nobody waits for are held to share a write with
# later ones; a record that a reply waits for ends the wait at once.
LINGER_SECONDS = 0.005

_FAILING_CLOSED = ("audit trail cannot be written; state-changing requests are "
                   "refused until it can")
_FAILING_OPEN = ("audit trail cannot be written; requests are served without "
                 "audit records (fail_closed = false)")


class Writer(Protocol):
    """The file interface the trail writes to, as ``agent.audit.file.AuditFile``."""

    reopened: bool

    def append(self, records: list[dict[str, Any]]) -> None: ...

    def reopen(self) -> None: ...

    def close(self) -> None: ...


class AuditWriteError(Exception):
    """A batch of audit records could not be written."""


class _Batch:
    __slots__ = ("records", "done", "error")

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self.done = trio.Event()
        self.error: str | None = None


class AuditTrail:
    """Queue audit records and write them in batches; see the module docstring."""

    def __init__(self, writer: Writer, path: str = "", fail_closed: bool = True):
        self.writer = writer
        self.path = path
        self.fail_closed = fail_closed
        self.healthy = True
        self.written = 0
        self._open = _Batch()
        self._wakeup = trio.Event()
        self._awaited = trio.Event()
        self._file_lock = trio.Lock()

    def submit(self, fields: dict[str, Any]) -> _Batch:
        """Queue one record; return the batch it will be written in."""
        batch = self._open
        batch.records.append(fields)
        self._wakeup.set()
        return batch

    async def write(self, fields: dict[str, Any]) -> None:
        """Queue one record and wait until it is on disk.

        Raises:
            AuditWriteError: the batch holding the record failed.
        """
        batch = self.submit(fields)
        self._awaited.set()
        await batch.done.wait()
        if batch.error is not None:
            raise AuditWriteError(batch.error)

    async def run(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Write batches until cancelled, then write what is still queued."""
        task_status.started()
        try:
            while True:
                await self._wakeup.wait()
                with trio.move_on_after(LINGER_SECONDS):
                    await self._awaited.wait()
                await self.flush()
        finally:
            with trio.CancelScope(shield=True):
                with trio.move_on_after(FINAL_FLUSH_SECONDS):
                    await self.flush()
                self.writer.close()

    async def flush(self) -> None:
        """Write every record queued so far as one batch."""
        async with self._file_lock:
            # A flush cancelled while it waits for the lock leaves its
            # records queued; once taken, the batch is written in full.
            self._wakeup, self._awaited = trio.Event(), trio.Event()
            batch, self._open = self._open, _Batch()
            if not batch.records:
                return
            try:
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(self.writer.append, batch.records)
            except Exception as exc:  # any failure fails the batch, not the agent
                batch.error = _describe(exc)
            else:
                self.written += len(batch.records)
            self._note_outcome(batch.error)
            batch.done.set()

    async def recover(self) -> bool:
        """Try to reopen a failing file; return whether the trail works now."""
        async with self._file_lock:
            if not self.healthy:
                await self._reopen()
        return self.healthy

    async def reopen(self) -> None:
        """Reopen the file at its path, as log rotation needs (SIGHUP)."""
        async with self._file_lock:
            await self._reopen()

    async def _reopen(self) -> None:
        try:
            await trio.to_thread.run_sync(self.writer.reopen)
        except Exception as exc:  # the trail stays failing until a reopen works
            self._note_outcome(_describe(exc))
        else:
            self._note_outcome(None)

    def _note_outcome(self, error: str | None) -> None:
        if self.writer.reopened:
            self.writer.reopened = False
            log(logging.INFO, "audit file opened", detail=self.path)
        if error is not None and self.healthy:
            message = (_FAILING_CLOSED if self.fail_closed else _FAILING_OPEN)
            log(logging.ERROR, message, detail=self.path, error=error)
        elif error is None and not self.healthy:
            log(logging.INFO, "audit trail can be written again", detail=self.path)
        self.healthy = error is None


def _describe(exc: Exception) -> str:
    strerror = getattr(exc, "strerror", None)
    return f"{type(exc).__name__}: {strerror}" if strerror else str(exc) or repr(exc)
