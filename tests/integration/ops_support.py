"""Helpers for the operations tests: a fake systemd and unwaited starts.

``FakeSystemd`` is the datagram socket that ``$NOTIFY_SOCKET`` names, so
tests read what the agent sends to systemd. ``spawn_agent`` starts the real
daemon without waiting for it, with an optional listening socket passed
as descriptor 3 the way systemd's socket activation does.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

from agent.keystore import softhsm
from tests.integration.conftest import REPO, AgentProcess, require_softhsm, write_config

WAIT_SECONDS = 60.0


class FakeSystemd:
    """Receive sd_notify datagrams on a socket in ``directory``."""

    def __init__(self, directory: Path):
        self.path = directory / "notify.sock"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.path))
        self.messages: list[dict[str, str]] = []

    def next(self, timeout: float = WAIT_SECONDS) -> dict[str, str]:
        """Return the next notification, parsed into its assignments."""
        self.sock.settimeout(timeout)
        data = self.sock.recv(65536).decode()
        message = dict(line.split("=", 1) for line in data.split("\n") if line)
        self.messages.append(message)
        return message

    def wait_for(self, key: str, timeout: float = WAIT_SECONDS) -> dict[str, str]:
        """Return the first notification from now on that sets ``key``."""
        deadline = time.monotonic() + timeout
        while True:
            message = self.next(max(deadline - time.monotonic(), 0.001))
            if key in message:
                return message

    def close(self) -> None:
        self.sock.close()


def prepare(directory: Path, extra_agent: str = "", extra_keystore: str = "",
            extra: str = "") -> Path:
    """Create a token and a config under ``directory``; return the config."""
    module = require_softhsm()
    directory.mkdir(parents=True, exist_ok=True)
    token = softhsm.init_token(directory / "token", "op-" + directory.name[:20])
    config = write_config(directory, module, token, extra_agent, extra_keystore)
    if extra:
        with open(config, "a") as stream:
            stream.write("\n" + extra + "\n")
    return config


def spawn_agent(config: Path, env: dict[str, str] | None = None,
                passed: socket.socket | None = None) -> AgentProcess:
    """Start the agent on ``config`` and return at once.

    With ``passed``, that listening socket becomes descriptor 3 of the
    agent, with LISTEN_FDS=1 and LISTEN_PID set to the agent's own pid
    (a shell sets it to its pid, then execs the agent).
    """
    directory = config.parent
    command = [sys.executable, "-m", "agent", "--config", str(config)]
    environ = {**os.environ, **(env or {})}
    options = {}
    if passed is not None:
        command = ["/bin/sh", "-c", 'export LISTEN_PID=$$; exec "$@"', "sh", *command]
        environ["LISTEN_FDS"] = "1"
        source = passed.fileno()
        options = {"pass_fds": (3,), "preexec_fn": lambda: os.dup2(source, 3)}
    with open(directory / "agent.log", "ab") as log_stream:
        process = subprocess.Popen(command, stdout=log_stream, stderr=subprocess.STDOUT,
                                   cwd=REPO, env=environ, **options)
    return AgentProcess(process, directory / "agent.sock", config,
                        directory / "agent.log", directory / "token" / "pin")


def wait_for_log(agent: AgentProcess, pattern: str,
                 timeout: float = WAIT_SECONDS) -> re.Match:
    """Return the first match of ``pattern`` in the agent's log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        match = re.search(pattern, agent.log_text())
        if match:
            return match
        if agent.process.poll() is not None:
            raise AssertionError(f"agent exited:\n{agent.log_text()}")
        time.sleep(0.05)
    raise AssertionError(f"{pattern!r} not logged in time:\n{agent.log_text()}")
