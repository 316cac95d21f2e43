"""The real daemon under a fake systemd: notify, watchdog, activation, reload."""

from __future__ import annotations

import os
import signal
import socket
import threading

import pytest

from client import KmsClient
from tests.integration.ops_support import (
    FakeSystemd, prepare, spawn_agent, wait_for_log,
)

pytestmark = pytest.mark.hsm


@pytest.fixture
def systemd(tmp_path):
    fake = FakeSystemd(tmp_path)
    yield fake
    fake.close()


def notified_agent(tmp_path, systemd, env=None, passed=None, extra=""):
    config = prepare(tmp_path / "agent", extra=extra)
    return spawn_agent(config, {"NOTIFY_SOCKET": str(systemd.path), **(env or {})},
                       passed)


def test_ready_only_after_serving(tmp_path, systemd):
    """READY=1 comes after the keystores open, and the socket serves at once."""
    agent = notified_agent(tmp_path, systemd)
    try:
        first = systemd.next()
        ready = systemd.wait_for("READY")
        with KmsClient(agent.socket) as client:
            assert client.call("ListKeys")["TotalCount"] == 0
        assert first["STATUS"] == "opening keystores"
        assert "serving on" in ready["STATUS"]
        assert "default" in ready["STATUS"]
    finally:
        assert agent.stop() == 0


def test_stopping_sent_on_sigterm(tmp_path, systemd):
    """SIGTERM sends STOPPING=1 before the agent drains and exits 0."""
    agent = notified_agent(tmp_path, systemd)
    systemd.wait_for("READY")
    agent.process.send_signal(signal.SIGTERM)
    message = systemd.wait_for("STOPPING")
    assert message["STOPPING"] == "1"
    assert agent.process.wait(60) == 0


def test_watchdog_pings_sent(tmp_path, systemd):
    """With WATCHDOG_USEC set, the agent keeps sending WATCHDOG=1."""
    agent = notified_agent(tmp_path, systemd, env={"WATCHDOG_USEC": "200000"})
    try:
        systemd.wait_for("WATCHDOG")
        assert systemd.wait_for("WATCHDOG") == {"WATCHDOG": "1"}
    finally:
        agent.stop()


def test_sighup_reload_notifies(tmp_path, systemd):
    """SIGHUP sends RELOADING=1, then READY=1 once the hooks ran."""
    agent = notified_agent(tmp_path, systemd)
    try:
        systemd.wait_for("READY")
        agent.process.send_signal(signal.SIGHUP)
        reloading = systemd.wait_for("RELOADING")
        ready = systemd.wait_for("READY")
        assert int(reloading["MONOTONIC_USEC"]) > 0
        assert "serving on" in ready["STATUS"]
    finally:
        agent.stop()


def listening_socket(path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    os.chmod(path, 0o600)
    sock.listen(16)
    return sock


def test_activation_serves_passed_socket(tmp_path, systemd):
    """A socket passed as descriptor 3 is served and left in place at stop."""
    (tmp_path / "agent").mkdir()
    with listening_socket(tmp_path / "agent" / "agent.sock") as passed:
        agent = notified_agent(tmp_path, systemd, passed=passed)
        systemd.wait_for("READY")
        with KmsClient(agent.socket) as client:
            health = client.call("DescribeAgentHealth")
        assert health["SocketActivated"] is True
        assert agent.stop() == 0
        assert agent.socket.is_socket()
        assert "using the socket passed by systemd" in agent.log_text()


def test_activation_keeps_queued_clients(tmp_path, systemd):
    """A client that connects while the agent is down is served by the next one."""
    (tmp_path / "agent").mkdir()
    with listening_socket(tmp_path / "agent" / "agent.sock") as passed:
        first = notified_agent(tmp_path, systemd, passed=passed)
        systemd.wait_for("READY")
        assert first.stop() == 0
        results = []

        def call_while_down():
            with KmsClient(tmp_path / "agent" / "agent.sock", timeout=60) as client:
                results.append(client.call("ListKeys")["TotalCount"])

        waiting = threading.Thread(target=call_while_down)
        waiting.start()
        second = spawn_agent(first.config, {"NOTIFY_SOCKET": str(systemd.path)},
                             passed)
        try:
            waiting.join(90)
            assert results == [0]
        finally:
            second.stop()


def test_activation_wrong_path_refused(tmp_path, systemd):
    """A passed socket bound to another path stops the agent with a message."""
    (tmp_path / "agent").mkdir()
    with listening_socket(tmp_path / "other.sock") as passed:
        agent = notified_agent(tmp_path, systemd, passed=passed)
        assert agent.process.wait(60) == 2
    text = agent.log_text()
    assert "other.sock" in text
    assert "ListenStream" in text


def test_sighup_log_level_reloaded(tmp_path, systemd):
    """A new log level is put in force by SIGHUP."""
    agent = notified_agent(tmp_path, systemd)
    try:
        systemd.wait_for("READY")
        text = agent.config.read_text().replace('level = "debug"', 'level = "warning"')
        agent.config.write_text(text)
        agent.process.send_signal(signal.SIGHUP)
        systemd.wait_for("READY")
        with KmsClient(agent.socket) as client:
            client.call("ListKeys")
        assert agent.stop() == 0
        # Info lines such as the request line stop once warning is in force.
        assert '"op": "ListKeys"' not in agent.log_text()
    finally:
        agent.stop()


def test_sighup_broken_config_kept(tmp_path, systemd):
    """A file that fails to load changes nothing; the audit file is reopened."""
    agent = notified_agent(tmp_path, systemd)
    try:
        systemd.wait_for("READY")
        opened = agent.log_text().count("audit file opened")
        agent.config.write_text(agent.config.read_text() + "\n[agent\n")
        agent.process.send_signal(signal.SIGHUP)
        systemd.wait_for("READY")
        with KmsClient(agent.socket) as client:
            assert client.call("ListKeys")["TotalCount"] == 0
        log = agent.log_text()
        assert "configuration reload failed" in log
        assert "invalid TOML" in log
        assert log.count("audit file opened") == opened + 1
    finally:
        agent.stop()


def test_sighup_restart_setting_named(tmp_path, systemd):
    """Changing the socket path is reported as needing a restart."""
    agent = notified_agent(tmp_path, systemd)
    try:
        systemd.wait_for("READY")
        text = agent.config.read_text().replace('"agent.sock"', '"moved.sock"')
        agent.config.write_text(text)
        agent.process.send_signal(signal.SIGHUP)
        systemd.wait_for("READY")
        wait_for_log(agent, "take effect only after a restart")
        with KmsClient(agent.socket) as client:
            assert client.call("ListKeys")["TotalCount"] == 0
    finally:
        agent.stop()
