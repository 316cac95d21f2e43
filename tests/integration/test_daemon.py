"""The daemon's life: socket rules, single instance, drain, crash, logs."""

from __future__ import annotations

import base64
import json
import os
import signal
import stat
import subprocess
import sys
import threading

import pytest

from client import KmsClient, errors
from tests.integration.conftest import REPO, launch, start_agent

pytestmark = pytest.mark.hsm


def test_socket_mode_from_config(running_agent):
    """The socket is created with the configured mode (0600 here)."""
    mode = stat.S_IMODE(os.stat(running_agent.socket).st_mode)
    assert mode == 0o600


def test_second_agent_refused(running_agent):
    """A second agent on the same socket exits with a clear message."""
    result = subprocess.run(
        [sys.executable, "-m", "agent", "--config", str(running_agent.config)],
        cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "another agent is already serving" in result.stderr
    with KmsClient(running_agent.socket) as client:
        assert client.call("ListKeys")["TotalCount"] >= 0


def test_stale_socket_replaced_after_kill(tmp_path):
    """After kill -9 the stale socket is removed and keys still decrypt."""
    agent = start_agent(tmp_path / "agent")
    with KmsClient(agent.socket) as client:
        key_id = client.create_key()["KeyMetadata"]["KeyId"]
        blob = client.encrypt(key_id, b"durable")["CiphertextBlob"]
    agent.stop(signal.SIGKILL)
    assert agent.socket.exists()
    again = launch(agent.config, agent.config.parent)
    try:
        with KmsClient(again.socket) as client:
            assert client.decrypt(blob)["Plaintext"] == b"durable"
    finally:
        again.stop()


def test_sigterm_drains_in_flight(tmp_path):
    """SIGTERM lets running requests finish, then exits 0 and removes the socket."""
    agent = start_agent(tmp_path / "agent")
    results = []
    client = KmsClient(agent.socket)
    key_id = client.create_key()["KeyMetadata"]["KeyId"]

    def work():
        try:
            for _ in range(200):
                client.encrypt(key_id, b"x")
                results.append("ok")
        except errors.KmsError as exc:
            results.append(exc.code)

    thread = threading.Thread(target=work)
    thread.start()
    while not results:
        pass
    assert agent.stop(signal.SIGTERM) == 0
    thread.join()
    client.close()
    assert "ok" in results
    assert not agent.socket.exists()
    assert '"stopping"' in agent.log_text()


def test_missing_socket_directory(tmp_path):
    """A socket in a missing directory is a startup error naming it."""
    agent = start_agent(tmp_path / "agent")
    agent.stop()
    text = agent.config.read_text().replace(
        'socket = "agent.sock"', 'socket = "nowhere/agent.sock"')
    agent.config.write_text(text)
    result = subprocess.run(
        [sys.executable, "-m", "agent", "--config", str(agent.config)],
        cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "nowhere" in result.stderr


def test_one_log_line_per_request(running_agent):
    """Each request logs one JSON line with op, code, duration and ids."""
    with KmsClient(running_agent.socket) as client:
        key_id = client.create_key()["KeyMetadata"]["KeyId"]
        with pytest.raises(errors.KeyNotFoundError):
            client.describe_key("key-absent")
    lines = [json.loads(line) for line in running_agent.log_text().splitlines()
             if line.startswith("{")]
    requests = [line for line in lines if line["msg"] == "request"]
    create = [line for line in requests if line["op"] == "CreateKey"]
    assert len(create) == 1
    assert create[0]["key_id"] == key_id
    assert create[0]["code"] == "OK"
    assert create[0]["peer_uid"] == os.getuid()
    assert "duration_ms" in create[0]
    failed = [line for line in requests if line["op"] == "DescribeKey"]
    assert failed[0]["code"] == "Forbidden.KeyNotFound"


def test_no_secret_in_logs(tmp_path):
    """Plaintexts, data keys and the PIN never reach the log or errors."""
    agent = start_agent(tmp_path / "agent")
    plaintext = b"TOP-SECRET-PLAINTEXT-4242"
    try:
        with KmsClient(agent.socket) as client:
            key_id = client.create_key()["KeyMetadata"]["KeyId"]
            blob = client.encrypt(key_id, plaintext, {"ctx": "v"})["CiphertextBlob"]
            client.decrypt(blob, {"ctx": "v"})
            data_key = client.generate_data_key(key_id)["Plaintext"]
            with pytest.raises(errors.InvalidCiphertextError) as caught:
                client.decrypt(blob, {"ctx": "wrong"})
            error_text = str(caught.value)
            with pytest.raises(errors.InvalidParameterError) as too_big:
                client.encrypt(key_id, plaintext * 300)
    finally:
        agent.stop()
    pin = agent.pin_file.read_text().strip()
    log = agent.log_text()
    secrets = [plaintext, data_key, pin.encode()]
    for secret in secrets:
        forms = [secret, base64.b64encode(secret), secret.hex().encode()]
        for form in forms:
            assert form.decode(errors="replace") not in log
            assert form.decode(errors="replace") not in error_text
            assert form.decode(errors="replace") not in str(too_big.value)


def test_changed_domain_key_label_refused(tmp_path):
    """A domain key label that does not match the store stops the start."""
    agent = start_agent(tmp_path / "agent")
    with KmsClient(agent.socket) as client:
        client.create_key()
    agent.stop()
    text = agent.config.read_text().replace(
        "[keystores.default]\n", '[keystores.default]\ndomain_key_label = "typo"\n')
    agent.config.write_text(text)
    result = subprocess.run(
        [sys.executable, "-m", "agent", "--config", str(agent.config)],
        cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "cannot unseal the key material" in result.stderr
