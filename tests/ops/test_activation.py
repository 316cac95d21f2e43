"""Socket activation: adopting a listening socket passed as a descriptor."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from agent.ops import activation
from agent.rpc.server import StartupError


def listening(path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.listen()
    return sock


def passed(monkeypatch, sock: socket.socket, count: int = 1) -> dict[str, str]:
    """Make ``sock`` look like the first descriptor systemd passed."""
    fd = os.dup(sock.fileno())
    monkeypatch.setattr(activation, "LISTEN_FDS_START", fd)
    return {"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": str(count)}


def test_no_variables_no_socket():
    """Without LISTEN_PID and LISTEN_FDS there is nothing to adopt."""
    assert activation.activated_listener(Path("/x"), {}) is None


def test_other_pid_ignored():
    """Variables meant for another process are ignored and removed."""
    environ = {"LISTEN_PID": "1", "LISTEN_FDS": "1", "LISTEN_FDNAMES": "x"}
    assert activation.listen_fds(environ) == []
    assert environ == {}


def test_adopts_matching_socket(tmp_path, monkeypatch):
    """A listening socket bound to the configured path is adopted."""
    path = tmp_path / "agent.sock"
    with listening(path) as original:
        environ = passed(monkeypatch, original)
        adopted = activation.activated_listener(path, environ)
        try:
            assert adopted.getsockname() == str(path)
            assert not adopted.get_inheritable()
            assert environ == {}
        finally:
            adopted.close()


def test_wrong_path_rejected(tmp_path, monkeypatch):
    """A socket bound elsewhere is rejected naming both paths."""
    with listening(tmp_path / "other.sock") as original:
        environ = passed(monkeypatch, original)
        with pytest.raises(StartupError, match="other.sock.*agent.sock"):
            activation.activated_listener(tmp_path / "agent.sock", environ)


def test_not_listening_rejected(tmp_path, monkeypatch):
    """A bound socket that does not listen is rejected."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as original:
        original.bind(str(tmp_path / "agent.sock"))
        environ = passed(monkeypatch, original)
        with pytest.raises(StartupError, match="not listening"):
            activation.activated_listener(tmp_path / "agent.sock", environ)


def test_datagram_socket_rejected(tmp_path, monkeypatch):
    """A datagram socket is not a Unix stream socket."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as original:
        original.bind(str(tmp_path / "agent.sock"))
        environ = passed(monkeypatch, original)
        with pytest.raises(StartupError, match="stream"):
            activation.activated_listener(tmp_path / "agent.sock", environ)


def test_two_sockets_rejected(tmp_path, monkeypatch):
    """More than one passed descriptor is a configuration error."""
    with listening(tmp_path / "agent.sock") as original:
        environ = passed(monkeypatch, original, count=2)
        with pytest.raises(StartupError, match="exactly one"):
            activation.activated_listener(tmp_path / "agent.sock", environ)
        os.close(activation.LISTEN_FDS_START)


def test_bad_count_rejected():
    """A LISTEN_FDS that is not a number is a startup error."""
    environ = {"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": "one"}
    with pytest.raises(StartupError, match="LISTEN_FDS"):
        activation.listen_fds(environ)
