"""Time stamps of the operator log's JSON lines."""

from __future__ import annotations

import json
import logging

from agent import logs


def _record(created: float) -> logging.LogRecord:
    record = logging.LogRecord(logs.LOGGER_NAME, logging.INFO, "", 0, "request",
                               (), None)
    record.created = created
    record.msecs = (created - int(created)) * 1000
    record.fields = {"op": "Encrypt", "code": "OK"}
    return record


def test_json_time_is_utc_with_milliseconds():
    """Each line carries its own UTC second and millisecond, also across seconds."""
    formatter = logs.JsonFormatter()
    first = json.loads(formatter.format(_record(1767225600.25)))
    same_second = json.loads(formatter.format(_record(1767225600.5)))
    next_second = json.loads(formatter.format(_record(1767225601.0)))
    assert first["time"] == "2026-01-01T00:00:00.250Z"
    assert same_second["time"] == "2026-01-01T00:00:00.500Z"
    assert next_second["time"] == "2026-01-01T00:00:01.000Z"
    assert first["op"] == "Encrypt"
    assert first["msg"] == "request"
