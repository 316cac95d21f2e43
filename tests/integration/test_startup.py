"""Secrets at program startup against the real daemon on a SoftHSM2 token.

kmsctl get-secret, exec and render run as real processes. SecretsClient
reads, watches and falls back to its cache when the agent goes away.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from client import KmsClient
from client.secrets import SecretsClient
from tests.integration.conftest import REPO, launch, start_agent

pytestmark = pytest.mark.hsm
KMSCTL = [str(Path(sys.executable).with_name("kmsctl"))]
PASSWORD = "integration-Pa55word"
WAIT_LIMIT = 30.0
CHILD = """\
import hashlib, json, os
with open("/proc/self/cmdline", "rb") as f:
    cmdline = [part.decode() for part in f.read().split(b"\\0") if part]
print(json.dumps({
    "password_sha256": hashlib.sha256(os.environ["DB_PASSWORD"].encode()).hexdigest(),
    "user": os.environ["DB_USER"],
    "cmdline": cmdline,
}))
"""


def kmsctl(socket_path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*KMSCTL, "--socket", str(socket_path), *args],
                          capture_output=True, cwd=REPO, timeout=120)


def create_secret(socket_path, name: str, data: str | bytes,
                  data_type: str = "text") -> None:
    with KmsClient(socket_path) as client:
        client.call("CreateSecret", SecretName=name, VersionId="v1", SecretData=data,
                    SecretDataType=data_type)


@pytest.fixture(scope="module")
def agent_with_secrets(shared_agent):
    """The module's agent with a password, a JSON and a binary secret."""
    create_secret(shared_agent.socket, "it/db-password", PASSWORD)
    create_secret(shared_agent.socket, "it/db",
                  json.dumps({"user": "app", "password": PASSWORD}))
    create_secret(shared_agent.socket, "it/tls-key", b"\x00\x01key\xff", "binary")
    return shared_agent


def test_get_secret_prints_value(agent_with_secrets):
    """get-secret prints a text value exactly."""
    done = kmsctl(agent_with_secrets.socket, "get-secret", "it/db-password")
    assert done.returncode == 0
    assert done.stdout == PASSWORD.encode()


def test_get_secret_binary_output(agent_with_secrets, tmp_path):
    """get-secret --output writes the raw binary value with mode 0600."""
    output = tmp_path / "key.bin"
    done = kmsctl(agent_with_secrets.socket, "get-secret", "it/tls-key",
                  "--output", str(output))
    assert done.returncode == 0
    assert output.read_bytes() == b"\x00\x01key\xff"
    assert stat.S_IMODE(output.stat().st_mode) == 0o600


def test_get_secret_previous_stage(shared_agent):
    """--stage ACSPrevious returns the value before the last put."""
    create_secret(shared_agent.socket, "it/rotated", "old")
    with KmsClient(shared_agent.socket) as client:
        client.call("PutSecretValue", SecretName="it/rotated", VersionId="v2",
                    SecretData="new")
    current = kmsctl(shared_agent.socket, "get-secret", "it/rotated")
    previous = kmsctl(shared_agent.socket, "get-secret", "it/rotated", "--stage",
                      "ACSPrevious")
    assert current.stdout == b"new"
    assert previous.stdout == b"old"


def test_get_secret_missing_code(agent_with_secrets):
    """A missing secret exits 1 with Forbidden.ResourceNotFound."""
    done = kmsctl(agent_with_secrets.socket, "get-secret", "it/absent")
    assert done.returncode == 1
    assert json.loads(done.stderr)["Code"] == "Forbidden.ResourceNotFound"


def test_exec_child_environment(agent_with_secrets, tmp_path):
    """exec gives the child its secrets in the environment, not on argv."""
    child = tmp_path / "child.py"
    child.write_text(CHILD)
    done = kmsctl(agent_with_secrets.socket, "exec",
                  "--env", "DB_PASSWORD=it/db-password", "--env", "DB_USER=it/db#user",
                  "--", sys.executable, str(child))
    report = json.loads(done.stdout)
    assert done.returncode == 0
    assert report["password_sha256"] == hashlib.sha256(PASSWORD.encode()).hexdigest()
    assert report["user"] == "app"
    assert report["cmdline"] == [sys.executable, str(child)]
    assert PASSWORD.encode() not in done.stderr


def test_exec_missing_secret_stops(agent_with_secrets, tmp_path):
    """A missing secret stops exec before the program runs."""
    marker = tmp_path / "ran"
    done = kmsctl(agent_with_secrets.socket, "exec", "--env", "X=it/absent", "--",
                  "touch", str(marker))
    assert done.returncode == 1
    assert json.loads(done.stderr)["Code"] == "Forbidden.ResourceNotFound"
    assert not marker.exists()


def test_render_writes_private_file(agent_with_secrets, tmp_path):
    """render fills the template into a 0600 file."""
    template = tmp_path / "app.conf.tmpl"
    template.write_text('user={{ secret "it/db" "user" }}\n'
                        'password={{ secret "it/db-password" }}\n')
    output = tmp_path / "app.conf"
    done = kmsctl(agent_with_secrets.socket, "render", str(template), str(output))
    assert done.returncode == 0
    assert output.read_text() == f"user=app\npassword={PASSWORD}\n"
    assert stat.S_IMODE(output.stat().st_mode) == 0o600


def test_render_unknown_secret_untouched(agent_with_secrets, tmp_path):
    """An unknown secret fails and leaves the old OUTPUT in place."""
    template = tmp_path / "app.conf.tmpl"
    template.write_text('a={{ secret "it/db-password" }} b={{ secret "it/absent" }}')
    output = tmp_path / "app.conf"
    output.write_text("old")
    done = kmsctl(agent_with_secrets.socket, "render", str(template), str(output))
    assert done.returncode == 1
    assert output.read_text() == "old"
    assert sorted(os.listdir(tmp_path)) == ["app.conf", "app.conf.tmpl"]


def test_exec_waits_for_late_agent(tmp_path):
    """exec started while the agent is down runs once the agent is back."""
    agent = start_agent(tmp_path / "agent")
    create_secret(agent.socket, "it/db-password", PASSWORD)
    create_secret(agent.socket, "it/db", json.dumps({"user": "app"}))
    agent.stop()
    child = tmp_path / "child.py"
    child.write_text(CHILD)
    waiting = subprocess.Popen(
        [*KMSCTL, "--socket", str(agent.socket), "--wait", "120", "exec",
         "--env", "DB_PASSWORD=it/db-password", "--env", "DB_USER=it/db#user",
         "--", sys.executable, str(child)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)
    again = launch(agent.config, agent.config.parent)
    try:
        out, _ = waiting.communicate(timeout=120)
    finally:
        again.stop()
    assert waiting.returncode == 0
    assert json.loads(out)["user"] == "app"


def test_client_watch_sees_put(agent_with_secrets):
    """A watch on ACSCurrent calls back after PutSecretValue."""
    create_secret(agent_with_secrets.socket, "it/watched", "one")
    changes = []
    arrived = threading.Event()

    def on_change(value):
        changes.append(value)
        arrived.set()
    with SecretsClient(socket_path=str(agent_with_secrets.socket)) as secrets:
        watch = secrets.watch("it/watched", on_change, wait_seconds=20)
        secrets.client.call("PutSecretValue", SecretName="it/watched",
                            VersionId="v2", SecretData="two")
        assert arrived.wait(WAIT_LIMIT)
        watch.stop(0)
        cached = secrets.get("it/watched")
    assert watch.mode == "long-poll"
    assert changes[0].data == "two"
    assert changes[0].version_id == "v2"
    assert cached.data == "two"


def test_client_falls_back_when_stopped(running_agent):
    """With the agent stopped, an expired value is served stale."""
    create_secret(running_agent.socket, "it/db-password", PASSWORD)
    now = [0.0]
    with SecretsClient(socket_path=str(running_agent.socket), ttl=60,
                       clock=lambda: now[0], sleep=lambda seconds: None) as secrets:
        first = secrets.get("it/db-password")
        running_agent.stop(signal.SIGTERM)
        now[0] += 61
        second = secrets.get("it/db-password")
    assert first.stale is False
    assert second.data == PASSWORD
    assert second.stale is True
