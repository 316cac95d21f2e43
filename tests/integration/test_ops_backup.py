"""Backups of the real daemon under load, restored into a new directory."""

from __future__ import annotations

import io
import subprocess
import sys
import threading

import pytest

from client import KmsClient, cli
from tests.integration.conftest import REPO, launch, start_agent

pytestmark = pytest.mark.hsm

BEFORE_BACKUP = 40


def restore(backup, data_dir) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "agent", "restore", str(backup), str(data_dir)],
        cwd=REPO, capture_output=True, text=True, timeout=60)


def kmsctl_backup(socket_path, out) -> int:
    stdout = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
    return cli.run(["--socket", str(socket_path), "backup", str(out)],
                   stdout=stdout, stderr=io.StringIO())


class Load:
    """Encrypt with several keys from a thread until stopped."""

    def __init__(self, socket_path, key_ids):
        self.client = KmsClient(socket_path)
        self.key_ids = key_ids
        self.stop = threading.Event()
        self.done = 0
        self.errors: list[Exception] = []
        self.thread = threading.Thread(target=self.run)

    def run(self):
        try:
            while not self.stop.is_set():
                for key_id in self.key_ids:
                    self.client.encrypt(key_id, b"during the backup")
                    self.done += 1
        except Exception as exc:  # reported by the test's asserts
            self.errors.append(exc)

    def __enter__(self):
        self.thread.start()
        while self.done < 10 and not self.errors:
            self.stop.wait(0.01)
        return self

    def __exit__(self, *exc_info):
        self.stop.set()
        self.thread.join(60)
        self.client.close()


def test_backup_under_load_restores(tmp_path):
    """Every ciphertext made before a backup taken under load decrypts after restore."""
    agent = start_agent(tmp_path / "agent")
    blobs = []
    with KmsClient(agent.socket) as client:
        key_ids = [client.create_key()["KeyMetadata"]["KeyId"] for _ in range(3)]
        for index in range(BEFORE_BACKUP):
            plaintext = f"message {index}".encode()
            blob = client.encrypt(key_ids[index % 3], plaintext)["CiphertextBlob"]
            blobs.append((blob, plaintext))
    with Load(agent.socket, key_ids) as load:
        status = kmsctl_backup(agent.socket, tmp_path / "agent.bak")
    assert status == 0
    assert load.errors == []
    assert agent.stop() == 0

    restored = restore(tmp_path / "agent.bak", tmp_path / "restored")
    assert restored.returncode == 0, restored.stderr
    assert "default (3 keys)" in restored.stdout
    config = agent.config.read_text().replace('data_dir = "data"',
                                              f'data_dir = "{tmp_path / "restored"}"')
    agent.config.write_text(config)
    again = launch(agent.config, agent.config.parent)
    try:
        with KmsClient(again.socket) as client:
            for blob, plaintext in blobs:
                assert client.decrypt(blob)["Plaintext"] == plaintext
    finally:
        again.stop()


@pytest.fixture(scope="module")
def backup_file(tmp_path_factory):
    directory = tmp_path_factory.mktemp("backup")
    agent = start_agent(directory / "agent")
    try:
        with KmsClient(agent.socket) as client:
            client.create_key()
        assert kmsctl_backup(agent.socket, directory / "agent.bak") == 0
    finally:
        agent.stop()
    return directory / "agent.bak"


def test_restore_nonempty_refused(tmp_path, backup_file):
    """A restore into a non-empty directory exits 2 and changes nothing."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "kms-agent.db").write_bytes(b"live store")
    result = restore(backup_file, tmp_path / "data")
    assert result.returncode == 2
    assert "is not empty" in result.stderr
    assert (tmp_path / "data" / "kms-agent.db").read_bytes() == b"live store"


def test_restore_corrupt_refused(tmp_path, backup_file):
    """A backup with one byte changed is refused as corrupt."""
    data = bytearray(backup_file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / "bad.bak").write_bytes(bytes(data))
    result = restore(tmp_path / "bad.bak", tmp_path / "data")
    assert result.returncode == 2
    assert "is corrupt" in result.stderr
    assert not (tmp_path / "data").exists()


def test_restore_truncated_refused(tmp_path, backup_file):
    """A backup cut short is refused as truncated."""
    (tmp_path / "cut.bak").write_bytes(backup_file.read_bytes()[:-100])
    result = restore(tmp_path / "cut.bak", tmp_path / "data")
    assert result.returncode == 2
    assert "is truncated" in result.stderr
    assert not (tmp_path / "data").exists()


def test_restore_missing_file_refused(tmp_path):
    """A backup path that does not exist is named in the message."""
    result = restore(tmp_path / "nothing.bak", tmp_path / "data")
    assert result.returncode == 2
    assert "nothing.bak" in result.stderr
