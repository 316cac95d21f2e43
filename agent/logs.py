"""Operator logs: constant messages, data in fields from one vocabulary.

Every log call passes its data as fields named in ``FIELDS``; a field
outside the vocabulary is a programming error caught by the tests. On a
terminal the lines are readable text; on a pipe (journald, a container
runtime) each line is one JSON object. Only the server loop, the entry
point and background jobs log; domain code raises. Nothing here ever
receives a plaintext, a data key, a PIN or a secret value.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, TextIO

LOGGER_NAME = "kms_agent"

FIELDS = frozenset({
    "op", "key_id", "key_version", "code", "http_status", "duration_ms",
    "request_id", "peer_uid", "peer_gid", "peer_pid", "detail", "error",
    "socket", "keystore", "store", "version", "count", "in_flight", "signal",
    "connections", "config", "secret_name", "secret_version", "principal",
    "client_key_id",
})

logger = logging.getLogger(LOGGER_NAME)


def log(level: int, message: str, **fields: Any) -> None:
    """Log a constant ``message`` with data in vocabulary ``fields``."""
    if not FIELDS.issuperset(fields):
        unknown = sorted(set(fields) - FIELDS)
        raise ValueError(f"log fields outside the vocabulary: {unknown}")
    if logger.isEnabledFor(level):
        # Made by hand because Logger.log would walk the stack for a caller
        # location that no line shows; this runs once per request.
        logger.handle(logger.makeRecord(LOGGER_NAME, level, "", 0, message, (),
                                        None, extra={"fields": fields}))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, msg and the fields."""

    def __init__(self) -> None:
        super().__init__()
        self._second = -1
        self._second_text = ""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": f"{self._utc_second(record.created)}.{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "msg": record.getMessage(),
        }
        entry.update(getattr(record, "fields", {}))
        if record.exc_info:
            entry["traceback"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


    def _utc_second(self, created: float) -> str:
        # strftime costs more than the rest of the line, so it runs once a second.
        second = int(created)
        if second != self._second:
            self._second = second
            self._second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return self._second_text


class TextFormatter(logging.Formatter):
    """Readable lines for a terminal: time, level, message, key=value."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        fields = getattr(record, "fields", {})
        pairs = " ".join(f"{k}={_quote(v)}" for k, v in fields.items()
                         if v is not None)
        line = f"{stamp} {record.levelname:<7} {record.getMessage()}"
        if pairs:
            line += "  " + pairs
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def _quote(value: Any) -> str:
    # A value with spaces, quotes or control characters is written as a JSON
    # string, so a caller cannot forge a second line or another field.
    text = str(value)
    if text and all(c.isprintable() and c not in ' "=' for c in text):
        return text
    return json.dumps(text)


def setup_logging(level: str, log_format: str, stream: TextIO | None = None) -> None:
    """Send agent logs to ``stream`` (stdout) in the configured format."""
    stream = stream or sys.stdout
    use_json = log_format == "json" or (
        log_format == "auto" and not stream.isatty())
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if use_json else TextFormatter())
    logger.handlers[:] = [handler]
    logger.setLevel(level.upper())
    logger.propagate = False


class LogThrottle:
    """Allow at most ``per_second`` lines of one kind; count the rest.

    Used for lines a caller can trigger at will, such as protocol errors,
    so a flood of bad frames cannot fill the disk.
    """

    def __init__(self, per_second: int = 10):
        self.per_second = per_second
        self._window = 0.0
        self._used = 0
        self.suppressed = 0

    def allow(self) -> bool:
        """Return whether a line may be written now."""
        now = time.monotonic()
        if now - self._window >= 1.0:
            self._window = now
            self._used = 0
        if self._used < self.per_second:
            self._used += 1
            return True
        self.suppressed += 1
        return False

    def take_suppressed(self) -> int | None:
        """Return and reset the count of suppressed lines, or None if zero."""
        count, self.suppressed = self.suppressed, 0
        return count or None
