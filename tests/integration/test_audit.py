"""The audit trail and quotas of the real daemon on a SoftHSM2 token.

Each test starts its own agent, sends real requests over the socket,
and checks the audit file with ``kmsctl audit verify`` as an operator
would. The full-disk test mounts a 64 KiB tmpfs and is skipped where
this process may not mount one.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from client import KmsClient, errors
from client.retry import RetryPolicy
from tests.integration.conftest import launch, start_agent

pytestmark = pytest.mark.hsm

KMSCTL = str(Path(sys.executable).with_name("kmsctl"))


def verify(*paths: Path) -> subprocess.CompletedProcess:
    return subprocess.run([KMSCTL, "audit", "verify", *map(str, paths)],
                          capture_output=True, text=True, timeout=60)


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()[1:]]


def audit_path(agent) -> Path:
    return agent.config.parent / "data" / "audit.jsonl"


def log_messages(agent) -> list[str]:
    messages = []
    for line in agent.log_text().splitlines():
        try:
            messages.append(json.loads(line)["msg"])
        except (ValueError, KeyError):
            continue
    return messages


def test_daemon_audit_file_verifies(tmp_path):
    """Requests to the daemon leave a verifiable file, one record each."""
    agent = start_agent(tmp_path / "agent")
    try:
        with KmsClient(agent.socket) as client:
            created = client.create_key()
            key_id = created["KeyMetadata"]["KeyId"]
            blob = client.encrypt(key_id, b"audit-plaintext-marker")["CiphertextBlob"]
            client.decrypt(blob)
            with pytest.raises(errors.KeyNotFoundError):
                client.describe_key("key-missing")
    finally:
        assert agent.stop() == 0
    result = verify(audit_path(agent))
    assert result.returncode == 0
    assert "4 records, chain intact" in result.stdout
    written = records(audit_path(agent))
    assert [r["op"] for r in written] == ["CreateKey", "Encrypt", "Decrypt",
                                          "DescribeKey"]
    assert written[0]["request_id"] == created["RequestId"]
    assert written[1]["resource"] == key_id
    assert written[3]["code"] == "Forbidden.KeyNotFound"
    assert written[0]["uid"] == os.getuid()
    assert b"audit-plaintext-marker" not in audit_path(agent).read_bytes()


def test_restart_continues_chain(tmp_path):
    """A restarted agent appends to the same chain."""
    agent = start_agent(tmp_path / "agent")
    with KmsClient(agent.socket) as client:
        client.create_key()
    assert agent.stop() == 0
    agent = launch(agent.config, agent.config.parent)
    with KmsClient(agent.socket) as client:
        client.list_keys()
    assert agent.stop() == 0
    result = verify(audit_path(agent))
    assert result.returncode == 0
    assert "2 records, chain intact; the file starts a new chain" in result.stdout


def test_damaged_tail_stops_start(tmp_path):
    """An agent does not start on a file whose last line was cut."""
    agent = start_agent(tmp_path / "agent")
    with KmsClient(agent.socket) as client:
        client.create_key()
    assert agent.stop() == 0
    path = audit_path(agent)
    path.write_bytes(path.read_bytes()[:-15])
    process = subprocess.run(
        [sys.executable, "-m", "agent", "--config", str(agent.config)],
        capture_output=True, text=True, timeout=60,
        cwd=Path(__file__).resolve().parents[2])
    assert process.returncode != 0
    assert "kmsctl audit verify" in process.stdout + process.stderr
    result = verify(path)
    assert result.returncode == 1
    assert f"{path}:2:" in result.stderr


def test_sighup_reopens_rotated_file(tmp_path):
    """After a rename and SIGHUP, a new file continues the chain."""
    agent = start_agent(tmp_path / "agent")
    path = audit_path(agent)
    rotated = path.with_name("audit.jsonl.1")
    try:
        with KmsClient(agent.socket) as client:
            client.create_key()
            os.rename(path, rotated)
            agent.process.send_signal(signal.SIGHUP)
            client.create_key()
    finally:
        assert agent.stop() == 0
    result = verify(rotated, path)
    assert result.returncode == 0
    assert f"{path}: 1 records" in result.stdout
    assert f"{rotated}: 1 records" in result.stdout


def test_deleted_file_is_recreated(tmp_path):
    """A file deleted while the agent runs is recreated on the next write."""
    agent = start_agent(tmp_path / "agent")
    path = audit_path(agent)
    try:
        with KmsClient(agent.socket) as client:
            client.create_key()
            path.unlink()
            client.create_key()
    finally:
        assert agent.stop() == 0
    result = verify(path)
    assert result.returncode == 0
    assert "1 records, chain intact; the file continues the chain" in result.stdout


def _mount_tmpfs(directory: Path) -> None:
    directory.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs",
                              str(directory)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")


def _fill(path: Path) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError:
        pass
    finally:
        os.close(fd)


def _change_until_refused(client: KmsClient, key_id: str) -> errors.KmsError:
    for number in range(100):
        try:
            client.call("UpdateKeyDescription", KeyId=key_id,
                        Description=f"change {number}")
        except errors.AuditUnavailableError as error:
            return error
    raise AssertionError("no change was refused on the full disk")


def test_full_disk_fails_closed(tmp_path):
    """A full disk refuses changes with 503 until space is freed."""
    disk = tmp_path / "disk"
    _mount_tmpfs(disk)
    try:
        agent = start_agent(tmp_path / "agent",
                            extra_agent=f'\n[audit]\npath = "{disk}/audit.jsonl"\n')
        try:
            with KmsClient(agent.socket) as client:
                key_id = client.create_key()["KeyMetadata"]["KeyId"]
                _fill(disk / "filler")
                # Records fill the last page of the file first, so a later
                # change is the first that needs a new page and fails.
                refused = _change_until_refused(client, key_id)
                assert refused.http_status == 503
                assert client.describe_key(key_id)["KeyMetadata"]["KeyId"] == key_id
                (disk / "filler").unlink()
                client.create_key()
        finally:
            assert agent.stop() == 0
        messages = log_messages(agent)
        assert any(m.startswith("audit trail cannot be written") for m in messages)
        assert "audit trail can be written again" in messages
        assert verify(disk / "audit.jsonl").returncode == 0
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def test_small_quota_throttles_burst(tmp_path):
    """With a burst of 3 reads, the fourth read in a row is throttled."""
    agent = start_agent(tmp_path / "agent",
                        extra_agent="\n[quotas]\nenabled = true\nread_rate = 0.001\n"
                                    "read_burst = 3\n")
    try:
        with KmsClient(agent.socket) as client:
            for _ in range(3):
                client.list_keys()
            with pytest.raises(errors.ThrottlingError) as caught:
                client.list_keys()
            client.create_key()
    finally:
        assert agent.stop() == 0
    assert caught.value.http_status == 429
    assert caught.value.message == "QPS Limit Exceeded"
    codes = [r["code"] for r in records(audit_path(agent))]
    assert codes == ["OK", "OK", "OK", "Rejected.Throttling", "OK"]


def test_client_retries_throttled_read(tmp_path):
    """A client with retries rides out a throttled read."""
    agent = start_agent(tmp_path / "agent",
                        extra_agent="\n[quotas]\nenabled = true\nread_rate = 20\n"
                                    "read_burst = 1\n")
    policy = RetryPolicy(retries=10, base_delay=0.05, max_delay=0.5, deadline=30)
    try:
        with KmsClient(agent.socket, retries=policy) as client:
            for _ in range(3):
                client.list_keys()
    finally:
        assert agent.stop() == 0
    codes = [r["code"] for r in records(audit_path(agent))]
    assert codes.count("OK") == 3


def test_audit_and_quotas_switch_off(tmp_path):
    """With both switched off, no file is written and nothing is throttled."""
    agent = start_agent(
        tmp_path / "agent",
        extra_agent="\n[audit]\nenabled = false\n[quotas]\nenabled = false\n")
    try:
        with KmsClient(agent.socket) as client:
            for _ in range(30):
                client.list_keys()
    finally:
        assert agent.stop() == 0
    assert not audit_path(agent).exists()
    assert "the audit trail is off ([audit] enabled = false)" in log_messages(agent)
