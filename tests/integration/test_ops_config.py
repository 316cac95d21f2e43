"""Bad input at start: each gets a clear message naming the problem."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from tests.integration.conftest import REPO
from tests.integration.ops_support import prepare

pytestmark = pytest.mark.hsm


def start(config) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agent", "--config", str(config)],
                          cwd=REPO, capture_output=True, text=True, timeout=60)


@pytest.fixture
def config(tmp_path):
    return prepare(tmp_path / "agent")


def test_unknown_key_named(config):
    """An unknown key is named with the keys that are known."""
    config.write_text(config.read_text().replace("[agent]", "[agent]\nsockt = 1"))
    result = start(config)
    assert result.returncode == 2
    assert "agent.sockt: unknown key" in result.stderr


def test_wrong_type_named(config):
    """A value of the wrong type is named with the type expected."""
    text = config.read_text().replace("drain_timeout = 10", 'drain_timeout = "10s"')
    config.write_text(text)
    result = start(config)
    assert result.returncode == 2
    assert "agent.drain_timeout: expected int or float, got str" in result.stderr


def test_loose_pin_file_named(config, tmp_path):
    """A PIN file readable by others stops the start, naming mode and fix."""
    pin = tmp_path / "agent" / "token" / "pin"
    os.chmod(pin, 0o644)
    result = start(config)
    assert result.returncode == 2
    assert f"PIN file {pin} has mode 0644" in result.stderr
    assert f"chmod 600 {pin}" in result.stderr


def test_public_metrics_address_refused(config):
    """A metrics listener on a non-loopback address is refused."""
    config.write_text(config.read_text() + '\n[metrics]\nlisten = "0.0.0.0:9464"\n')
    result = start(config)
    assert result.returncode == 2
    assert "not a loopback address" in result.stderr


def test_busy_metrics_port_named(config):
    """A metrics port in use stops the start, naming the address."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config.write_text(config.read_text()
                          + f'\n[metrics]\nlisten = "127.0.0.1:{port}"\n')
        result = start(config)
    assert result.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert not (config.parent / "agent.sock").exists()
