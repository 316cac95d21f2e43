"""The audit trail: one hash-chained record per request, in its own file.

``file`` owns the file on disk (open, continue the chain, append with
fsync, reopen after rotation), ``trail`` batches records from the event
loop into that file, and ``stage`` is the dispatcher stage that builds
each record and makes state-changing replies wait for it. The line
format and its verifier are in ``client.audit``, shared with
``kmsctl audit verify``. ``open_trail`` builds the trail of a starting
agent.
"""

from __future__ import annotations

import logging
from pathlib import Path

from agent.audit.file import AuditFile, AuditFileError
from agent.audit.stage import AuditStage, format_time
from agent.audit.trail import AuditTrail
from agent.config import AuditConfig
from agent.context import Clock
from agent.logs import log

FILE_NAME = "audit.jsonl"

__all__ = ["AuditFile", "AuditFileError", "AuditStage", "AuditTrail", "open_trail"]


def open_trail(config: AuditConfig, data_dir: Path, clock: Clock) -> AuditTrail:
    """Open the audit file of a starting agent and return its trail.

    Raises:
        AuditFileError: the file cannot be opened, or its last lines are
            damaged and ``config.broken_tail`` is ``refuse``.
    """
    path = config.path or data_dir / FILE_NAME
    audit_file = AuditFile(path, lambda: format_time(clock.now()))
    try:
        aside = audit_file.open_existing(config.broken_tail)
    except OSError as exc:
        raise AuditFileError(f"cannot open the audit file {path}: "
                             f"{exc.strerror}") from None
    if aside is not None:
        log(logging.WARNING, "audit file was damaged at its end; it was set aside "
            "and a new chain started", detail=str(aside))
    audit_file.reopened = False
    log(logging.INFO, "audit trail in force", detail=str(path))
    return AuditTrail(audit_file, str(path), config.fail_closed)
