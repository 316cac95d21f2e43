"""kmsctl health and backup against a fake client."""

from __future__ import annotations

import hashlib
import io
import json
import stat

import pytest

from client import admin, cli
from client.errors import (
    InvalidParameterError, NoPermissionError, ResourceNotFoundError,
)

BACKUP = b"K" * 2500 + b"end"


class FakeClient:
    """Replies to health and backup calls and records the operations called."""

    def __init__(self, ready=True, backup=BACKUP, digest=None, refuse=False):
        self.ready = ready
        self.refuse = refuse
        self.backup = backup
        self.digest = digest or hashlib.sha256(backup).hexdigest()
        self.calls = []
        self.closed = False

    def call(self, operation, **params):
        self.calls.append(operation)
        if operation == "DescribeAgentHealth":
            if self.refuse:
                raise NoPermissionError("no administrator")
            return {"Ready": self.ready, "Live": True}
        if operation == "CreateAgentBackup":
            return {"BackupId": "backup-1", "Size": len(self.backup),
                    "Sha256": self.digest, "SchemaVersion": 4,
                    "CreationDate": "2026-01-01T00:00:00Z"}
        if operation == "GetAgentBackupPart":
            start = params["Offset"]
            return {"Data": self.backup[start:start + 1000], "Size": len(self.backup)}
        if operation == "DeleteAgentBackup":
            return {}
        raise ResourceNotFoundError(operation)

    def close(self):
        self.closed = True


class Streams:
    def __init__(self):
        self.out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
        self.err = io.StringIO()

    def stdout_bytes(self):
        self.out.flush()
        return self.out.buffer.getvalue()


def run(argv, client, streams=None):
    streams = streams or Streams()
    status = cli.run(argv, client_factory=lambda path, timeout: client,
                     stdout=streams.out, stderr=streams.err)
    return status, streams


def test_health_ready_exit_zero():
    """A ready agent gives exit status 0 and its reply as JSON."""
    client = FakeClient(ready=True)
    status, streams = run(["health"], client)
    assert status == 0
    assert json.loads(streams.stdout_bytes())["Ready"] is True
    assert client.closed


def test_health_not_ready_exit_three():
    """A live agent that is not ready gives exit status 3."""
    status, _ = run(["health"], FakeClient(ready=False))
    assert status == admin.NOT_READY_STATUS


def test_health_live_ignores_readiness():
    """--live exits 0 whenever the agent replies."""
    status, _ = run(["--socket", "/x", "health", "--live"], FakeClient(ready=False))
    assert status == 0


def test_health_refused_is_live():
    """A refusal means the agent is live: --live exits 0, plain health 1."""
    live, _ = run(["health", "--live"], FakeClient(refuse=True))
    plain, streams = run(["health"], FakeClient(refuse=True))
    assert live == 0
    assert plain == 1
    assert "Forbidden.NoPermission" in streams.err.getvalue()


def test_health_unreachable_exit_two():
    """An agent that cannot be reached gives exit status 2."""
    def refuse(path, timeout):
        raise ConnectionRefusedError(111, "Connection refused")

    streams = Streams()
    status = cli.run(["health"], client_factory=refuse, stdout=streams.out,
                     stderr=streams.err)
    assert status == 2
    assert "SDK.ServerUnreachable" in streams.err.getvalue()


def test_backup_writes_verified_file(tmp_path):
    """backup OUT writes the parts in order, mode 0600, and deletes the backup."""
    client = FakeClient()
    out = tmp_path / "agent.bak"
    status, streams = run(["backup", str(out)], client)
    assert status == 0
    assert out.read_bytes() == BACKUP
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert client.calls[-1] == "DeleteAgentBackup"
    assert json.loads(streams.stdout_bytes())["Size"] == len(BACKUP)


def test_backup_to_stdout(tmp_path):
    """backup - writes the bytes to stdout and the summary to stderr."""
    status, streams = run(["backup", "-"], FakeClient())
    assert status == 0
    assert streams.stdout_bytes() == BACKUP
    assert json.loads(streams.err.getvalue())["Path"] == "-"


def test_damaged_backup_leaves_no_file(tmp_path):
    """A digest mismatch fails with status 2 and writes no OUT."""
    client = FakeClient(digest="0" * 64)
    out = tmp_path / "agent.bak"
    status, streams = run(["backup", str(out)], client)
    assert status == 2
    assert "damaged" in streams.err.getvalue()
    assert list(tmp_path.iterdir()) == []
    assert client.calls[-1] == "DeleteAgentBackup"


def test_old_backup_kept_on_failure(tmp_path):
    """An existing OUT stays as it was when the new backup fails."""
    out = tmp_path / "agent.bak"
    out.write_bytes(b"previous")
    run(["backup", str(out)], FakeClient(digest="0" * 64))
    assert out.read_bytes() == b"previous"


@pytest.mark.parametrize("argv", [
    ["backup"], ["backup", "a", "b"], ["health", "extra"], ["health", "--bogus"],
    ["backup", "--live", "x"], ["--timeout", "0", "health"],
])
def test_bad_arguments_rejected(argv):
    """Wrong arguments are caller errors."""
    with pytest.raises(InvalidParameterError):
        admin.parse_admin_command(argv)


def test_find_command_skips_globals():
    """Global options before the command do not hide it."""
    argv = ["--socket", "/s", "--timeout=3", "backup", "x"]
    assert admin.find_command(argv) == "backup"
    assert admin.find_command(["ListKeys"]) is None
