"""The sd_notify client against a datagram socket standing in for systemd."""

from __future__ import annotations

import os
import socket

import pytest

from agent.ops.notify import Notifier


@pytest.fixture
def systemd(tmp_path):
    """A datagram socket in tmp_path where notifications arrive."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    sock.settimeout(5)
    yield sock
    sock.close()


def receive(sock: socket.socket) -> dict[str, str]:
    lines = sock.recv(4096).decode().split("\n")
    return dict(line.split("=", 1) for line in lines)


def test_ready_sends_status(systemd, tmp_path):
    """ready() sends READY=1 with the status line in one datagram."""
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": str(tmp_path / "notify")})
    assert notifier.ready("serving")
    message = receive(systemd)
    assert message["READY"] == "1"
    assert message["STATUS"] == "serving"


def test_status_newline_cannot_forge(systemd, tmp_path):
    """A newline in a status cannot add a second assignment."""
    notifier = Notifier(str(tmp_path / "notify"))
    notifier.status("ok\nREADY=1")
    message = receive(systemd)
    assert "READY" not in message
    assert message["STATUS"] == "ok READY=1"


def test_stopping_and_watchdog(systemd, tmp_path):
    """stopping() and watchdog() send their assignments."""
    notifier = Notifier(str(tmp_path / "notify"))
    notifier.stopping("draining")
    notifier.watchdog()
    assert receive(systemd)["STOPPING"] == "1"
    assert receive(systemd) == {"WATCHDOG": "1"}


def test_reloading_carries_monotonic_time(systemd, tmp_path):
    """reloading() sends RELOADING=1 and MONOTONIC_USEC as an integer."""
    Notifier(str(tmp_path / "notify")).reloading()
    message = receive(systemd)
    assert message["RELOADING"] == "1"
    assert int(message["MONOTONIC_USEC"]) > 0


def test_abstract_socket_address(tmp_path):
    """An @name address reaches a socket in the abstract namespace."""
    name = f"kms-agent-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(b"\0" + name.encode())
        sock.settimeout(5)
        assert Notifier("@" + name).status("hello")
        assert receive(sock) == {"STATUS": "hello"}


def test_without_socket_does_nothing():
    """Without NOTIFY_SOCKET nothing is sent and nothing fails."""
    notifier = Notifier.from_environ({})
    assert not notifier.enabled
    assert not notifier.ready("serving")
    assert notifier.watchdog_interval is None


def test_gone_socket_counts_failure(tmp_path):
    """A notification socket that vanished is counted, never raised."""
    notifier = Notifier(str(tmp_path / "missing"))
    assert not notifier.ready("serving")
    assert notifier.failures == 1


def test_environment_variables_removed(tmp_path):
    """from_environ removes the variables so children cannot notify."""
    environ = {"NOTIFY_SOCKET": str(tmp_path / "n"), "WATCHDOG_USEC": "1000000",
               "WATCHDOG_PID": str(os.getpid()), "PATH": "/bin"}
    Notifier.from_environ(environ)
    assert environ == {"PATH": "/bin"}


def test_watchdog_interval_half_timeout(tmp_path):
    """Pings go out at half the watchdog timeout."""
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": str(tmp_path / "n"),
                                      "WATCHDOG_USEC": "4000000"})
    assert notifier.watchdog_interval == 2.0


def test_watchdog_for_other_pid_ignored(tmp_path):
    """WATCHDOG_PID naming another process disables the pings."""
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": str(tmp_path / "n"),
                                      "WATCHDOG_USEC": "4000000", "WATCHDOG_PID": "1"})
    assert notifier.watchdog_interval is None


@pytest.mark.parametrize("environ", [
    {"NOTIFY_SOCKET": "relative/path"},
    {"NOTIFY_SOCKET": "/run/n", "WATCHDOG_USEC": "soon"},
    {"NOTIFY_SOCKET": "/run/n", "WATCHDOG_USEC": "0"},
])
def test_malformed_variables_rejected(environ):
    """A malformed NOTIFY_SOCKET or WATCHDOG_USEC raises ValueError."""
    with pytest.raises(ValueError):
        Notifier.from_environ(environ)
