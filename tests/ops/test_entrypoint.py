"""The container entry point, run directly in a temporary directory.

Without a Docker daemon the image cannot be built here. So these tests
run deploy/entrypoint.sh as the image would: first start, second start,
a mounted configuration, bad input, and the sidecar flow in which an
application uid reads a secret through the shared socket.
"""

from __future__ import annotations

import os
import pickle
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from agent.keystore.softhsm import find_softhsm_module
from client import KmsClient, errors

ENTRYPOINT = Path(__file__).resolve().parents[2] / "deploy" / "entrypoint.sh"
BIN = Path(sys.executable).parent
APP_UID = 31337
OTHER_UID = 31338

pytestmark = pytest.mark.skipif(find_softhsm_module() is None,
                                reason="SoftHSM2 is not installed")


def environment(tmp_path, socket_dir=None, **extra) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("SOFTHSM2_", "KMS_AGENT_"))}
    env.update(PATH=f"{BIN}:{env.get('PATH', '/usr/bin:/bin')}",
               KMS_AGENT_STATE_DIR=str(tmp_path / "state"),
               KMS_AGENT_SOCKET_DIR=str(socket_dir or tmp_path / "run"),
               KMS_AGENT_PYTHON=sys.executable, **extra)
    return env


def entrypoint(tmp_path, *command, **extra) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", str(ENTRYPOINT), *command], capture_output=True,
                          text=True, timeout=120, env=environment(tmp_path, **extra))


def test_first_start_creates_state(tmp_path):
    """The first start makes the token, a private PIN file and a valid config."""
    result = entrypoint(tmp_path, "kms-agent", "--check-config",
                        str(tmp_path / "state" / "config.toml"))
    assert result.returncode == 0, result.stderr
    assert "config.toml: valid" in result.stdout
    pin = tmp_path / "state" / "token" / "pin"
    assert stat.S_IMODE(pin.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "run").stat().st_mode) == 0o750
    assert not (tmp_path / "state" / "data").exists()


@pytest.mark.parametrize("mode", [0o755, 0o701, 0o704])
def test_check_config_open_data_dir(tmp_path, mode):
    """--check-config rejects a data directory other users can access."""
    assert entrypoint(tmp_path, "true").returncode == 0
    data_dir = tmp_path / "state" / "data"
    data_dir.mkdir()
    data_dir.chmod(mode)
    result = entrypoint(tmp_path, "kms-agent", "--check-config",
                        str(tmp_path / "state" / "config.toml"))
    assert result.returncode == 2
    assert f"data directory {data_dir} is accessible by other users" in result.stderr
    assert f"run chmod o-rwx {data_dir}" in result.stderr
    assert "valid" not in result.stdout
    assert list(data_dir.iterdir()) == []


def test_check_config_group_data_dir(tmp_path):
    """--check-config accepts a data directory that only its group can read."""
    assert entrypoint(tmp_path, "true").returncode == 0
    data_dir = tmp_path / "state" / "data"
    data_dir.mkdir()
    data_dir.chmod(0o750)
    result = entrypoint(tmp_path, "kms-agent", "--check-config",
                        str(tmp_path / "state" / "config.toml"))
    assert result.returncode == 0, result.stderr
    assert "config.toml: valid" in result.stdout


def test_second_start_keeps_config(tmp_path):
    """A later start reuses the configuration and token as they are."""
    assert entrypoint(tmp_path, "true").returncode == 0
    config = tmp_path / "state" / "config.toml"
    config.write_text(config.read_text() + "# edited by the operator\n")
    pin = (tmp_path / "state" / "token" / "pin").read_text()
    assert entrypoint(tmp_path, "true").returncode == 0
    assert config.read_text().endswith("# edited by the operator\n")
    assert (tmp_path / "state" / "token" / "pin").read_text() == pin


def test_mounted_config_creates_nothing(tmp_path):
    """With a configuration mounted, no token or file is created."""
    mounted = tmp_path / "hsm.toml"
    mounted.write_text("# the operator's file for a real HSM\n")
    result = entrypoint(tmp_path, "true", KMS_AGENT_CONFIG=str(mounted))
    assert result.returncode == 0
    assert list((tmp_path / "state").iterdir()) == []


@pytest.mark.parametrize("name, value", [
    ("KMS_AGENT_APP_UIDS", "1000,root"),
    ("KMS_AGENT_APP_UIDS", "1000,"),
    ("KMS_AGENT_SOCKET_MODE", "0666"),
    ("KMS_AGENT_TOKEN_LABEL", 'a"b'),
])
def test_bad_setting_rejected(tmp_path, name, value):
    """A malformed setting stops the start with its name; nothing is created."""
    result = entrypoint(tmp_path, "true", **{name: value})
    assert result.returncode == 1
    assert "kms-agent-entrypoint:" in result.stderr
    assert not (tmp_path / "state").exists()


def call_as(uid: int, socket_path: Path, operation: str, **params) -> str:
    """Call the agent from a child running as ``uid``; return the code."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop root, keep group 0 to reach the socket
        code = "child failed"
        try:
            os.setgroups([0])
            os.setgid(uid)
            os.setuid(uid)
            with KmsClient(socket_path) as client:
                client.call(operation, **params)
            code = "OK"
        except errors.KmsError as error:
            code = error.code
        finally:
            os.write(write_end, pickle.dumps(code))
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as stream:
        code = pickle.loads(stream.read())
    os.waitpid(pid, 0)
    return code


def wait_for_socket(path: Path, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, "the agent exited at start"
        probe = socket.socket(socket.AF_UNIX)
        try:
            probe.connect(str(path))
            return
        except OSError:
            time.sleep(0.05)
        finally:
            probe.close()
    raise AssertionError("the agent did not listen in time")


@pytest.fixture
def shared_volume():
    """A directory other uids can traverse, standing in for the socket volume."""
    parent = Path(tempfile.mkdtemp(prefix="kms-entrypoint-", dir="/tmp"))
    parent.chmod(0o755)
    yield parent / "run"
    shutil.rmtree(parent)


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping to another uid needs root")
def test_sidecar_app_reads_secret(tmp_path, shared_volume):
    """The app uid reads a secret through the shared socket; others cannot."""
    process = subprocess.Popen(
        ["sh", str(ENTRYPOINT)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env=environment(tmp_path, shared_volume, KMS_AGENT_APP_UIDS=str(APP_UID)))
    sock = shared_volume / "agent.sock"
    try:
        wait_for_socket(sock, process)
        with KmsClient(sock) as admin:
            admin.call("CreateSecret", SecretName="app/db-password",
                       SecretData="s3cret", VersionId="v1")
        health = subprocess.run([str(BIN / "kmsctl"), "--socket", str(sock), "health"],
                                capture_output=True, timeout=60)
        assert health.returncode == 0
        assert call_as(APP_UID, sock, "GetSecretValue",
                       SecretName="app/db-password") == "OK"
        assert call_as(APP_UID, sock, "CreateKey") == "Forbidden.NoPermission"
        assert call_as(OTHER_UID, sock, "GetSecretValue",
                       SecretName="app/db-password") == "Forbidden.UnknownCaller"
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0
