"""kmsctl against the real daemon, and the dev mode agent."""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from client import KmsClient, envelope
from tests.integration.conftest import REPO, AgentProcess, wait_until_serving

pytestmark = pytest.mark.hsm
KMSCTL = [str(Path(sys.executable).with_name("kmsctl"))]


def kmsctl(agent, *args, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*KMSCTL, "--socket", str(agent.socket), *args],
                          input=stdin, capture_output=True, cwd=REPO, timeout=120)


def test_create_encrypt_decrypt(shared_agent):
    """kmsctl creates a key, encrypts with a context and decrypts."""
    created = kmsctl(shared_agent, "CreateKey", "--Description", "cli key")
    assert created.returncode == 0, created.stderr
    key_id = json.loads(created.stdout)["KeyMetadata"]["KeyId"]
    encrypted = kmsctl(shared_agent, "Encrypt", "--KeyId", key_id, "--Plaintext",
                       "hello", "--EncryptionContext", '{"app":"x"}')
    assert encrypted.returncode == 0, encrypted.stderr
    blob = json.loads(encrypted.stdout)["CiphertextBlob"]
    decrypted = kmsctl(shared_agent, "Decrypt", "--CiphertextBlob", blob,
                       "--EncryptionContext", '{"app":"x"}')
    assert decrypted.returncode == 0, decrypted.stderr
    assert json.loads(decrypted.stdout)["Plaintext"] == "aGVsbG8="
    wrong = kmsctl(shared_agent, "Decrypt", "--CiphertextBlob", blob,
                   "--EncryptionContext", '{"app":"y"}')
    assert wrong.returncode == 1
    assert json.loads(wrong.stderr)["Code"] == "InvalidCiphertext"


def test_file_round_trip(shared_agent, tmp_path):
    """encrypt-file and decrypt-file round trip a 24 MB file exactly."""
    with KmsClient(shared_agent.socket) as client:
        key_id = client.create_key()["KeyMetadata"]["KeyId"]
    source = tmp_path / "data.bin"
    with open(source, "wb") as stream:
        for _ in range(24):
            stream.write(os.urandom(2**20))
    sealed = tmp_path / "data.sealed"
    opened = tmp_path / "data.out"
    result = kmsctl(shared_agent, "encrypt-file", "--KeyId", key_id,
                    "--EncryptionContext", '{"file":"data"}', str(source),
                    str(sealed))
    assert result.returncode == 0, result.stderr
    result = kmsctl(shared_agent, "decrypt-file", "--EncryptionContext",
                    '{"file":"data"}', str(sealed), str(opened))
    assert result.returncode == 0, result.stderr
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    assert hashlib.sha256(opened.read_bytes()).hexdigest() == digest
    other = tmp_path / "other.out"
    result = kmsctl(shared_agent, "decrypt-file", "--EncryptionContext",
                    '{"file":"other"}', str(sealed), str(other))
    assert result.returncode == 1
    assert not other.exists()


def _sealed(agent: AgentProcess, key_id: str, plaintext: bytes) -> bytes:
    sink = io.BytesIO()
    with KmsClient(agent.socket) as client:
        envelope.encrypt_stream(client, key_id, io.BytesIO(plaintext), sink)
    return sink.getvalue()


def _wait_for_partial_output(directory: Path,
                             process: subprocess.Popen) -> Path:
    """Return the first non-empty file in ``directory``."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read()
        for path in directory.iterdir():
            if path.stat().st_size > 0:
                return path
        time.sleep(0.01)
    raise AssertionError(f"kmsctl wrote no output into {directory}")


@pytest.mark.parametrize("command", ["encrypt-file", "decrypt-file"])
@pytest.mark.parametrize("signal_number", [signal.SIGTERM, signal.SIGHUP])
def test_file_command_signal_cleanup(shared_agent, tmp_path, command,
                                     signal_number):
    """SIGTERM or SIGHUP midway removes the partial output and exits 128+N."""
    with KmsClient(shared_agent.socket) as client:
        key_id = client.create_key()["KeyMetadata"]["KeyId"]
    plaintext = os.urandom(8 * envelope.DEFAULT_CHUNK_SIZE)
    if command == "encrypt-file":
        data, options = plaintext, ["--KeyId", key_id]
    else:
        data, options = _sealed(shared_agent, key_id, plaintext), []
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "data.out"
    process = subprocess.Popen(
        [*KMSCTL, "--socket", str(shared_agent.socket), command, *options, "-",
         str(out)], stdin=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)
    try:
        # Half the input is sent and stdin stays open, so kmsctl blocks
        # reading the rest with part of its output in the temporary file.
        process.stdin.write(data[:len(data) // 2])
        process.stdin.flush()
        partial = _wait_for_partial_output(out_dir, process)
        process.send_signal(signal_number)
        status = process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdin.close()
        process.stderr.close()
    assert partial.name.startswith(".data.out.")
    assert not partial.exists()
    assert not out.exists()
    assert list(out_dir.iterdir()) == []
    assert status == 128 + signal_number


def test_unreachable_socket_exit_code(tmp_path):
    """A missing socket exits 2 with SDK.ServerUnreachable."""
    result = subprocess.run([*KMSCTL, "--socket", str(tmp_path / "none.sock"),
                             "ListKeys"], capture_output=True, cwd=REPO, timeout=60)
    assert result.returncode == 2
    assert json.loads(result.stderr)["Code"] == "SDK.ServerUnreachable"


def test_dev_mode_serves(tmp_path):
    """kms-agent --dev DIR makes its own token and serves on DIR/agent.sock."""
    directory = tmp_path / "dev"
    log = tmp_path / "dev.log"
    with open(log, "wb") as stream:
        process = subprocess.Popen([sys.executable, "-m", "agent", "--dev",
                                    str(directory)], stdout=stream,
                                   stderr=subprocess.STDOUT, cwd=REPO)
    agent = AgentProcess(process, directory / "agent.sock", directory, log,
                         directory / "token" / "pin")
    try:
        wait_until_serving(agent)
        with KmsClient(agent.socket) as client:
            key_id = client.create_key()["KeyMetadata"]["KeyId"]
            blob = client.encrypt(key_id, b"dev")["CiphertextBlob"]
            assert client.decrypt(blob)["Plaintext"] == b"dev"
        assert oct(os.stat(directory / "token" / "pin").st_mode & 0o777) == "0o600"
    finally:
        assert agent.stop(signal.SIGTERM) == 0
