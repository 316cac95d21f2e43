"""Start the real agent as a subprocess on a real socket and SoftHSM2 token.

Each ``running_agent`` gets its own token directory (SoftHSM2 reads its
configuration once per process, and every agent is its own process), its
own store and socket under tmp_path, and JSON logs captured to a file
that tests can search.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.keystore import softhsm

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT = 60.0


@dataclasses.dataclass
class AgentProcess:
    """A running agent: its process, socket, config, log and token."""

    process: subprocess.Popen
    socket: Path
    config: Path
    log: Path
    pin_file: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(timeout)


def require_softhsm() -> Path:
    """Return the SoftHSM2 module, skipping (or failing under CI) without it."""
    module = softhsm.find_softhsm_module()
    if module is None or not _has_util():
        message = "SoftHSM2 is not installed (apt-get install softhsm2)"
        if os.environ.get("CI") == "true":
            pytest.fail(message + "; HSM tests must run in CI")
        pytest.skip(message)
    return Path(module)


def _has_util() -> bool:
    from shutil import which
    return which("softhsm2-util") is not None


def write_config(directory: Path, module: Path, token: "softhsm.TokenInfo",
                 extra_agent: str = "", extra_keystore: str = "") -> Path:
    config = directory / "config.toml"
    config.write_text(f"""
[agent]
socket = "agent.sock"
data_dir = "data"
socket_mode = "0600"
purge_interval = 0.2
drain_timeout = 10
{extra_agent}

[log]
level = "debug"
format = "json"
requests = "all"

[keystores.default]
type = "pkcs11"
module = "{module}"
token_label = "{token.label}"
pin_file = "{token.pin_file}"
softhsm2_conf = "{token.conf_path}"
{extra_keystore}
""")
    return config


def start_agent(directory: Path, extra_agent: str = "", extra_keystore: str = "",
                env: dict[str, str] | None = None) -> AgentProcess:
    """Create a token and config under ``directory`` and start an agent."""
    module = require_softhsm()
    directory.mkdir(parents=True, exist_ok=True)
    token = softhsm.init_token(directory / "token", "it-" + directory.name[:20])
    config = write_config(directory, module, token, extra_agent, extra_keystore)
    return launch(config, directory, env)


def launch(config: Path, directory: Path,
           env: dict[str, str] | None = None) -> AgentProcess:
    """Start ``kms-agent --config`` and wait until its socket accepts."""
    log = directory / "agent.log"
    sock = directory / "agent.sock"
    with open(log, "ab") as log_stream:
        process = subprocess.Popen(
            [sys.executable, "-m", "agent", "--config", str(config)],
            stdout=log_stream, stderr=subprocess.STDOUT, cwd=REPO,
            env={**os.environ, **(env or {})})
    agent = AgentProcess(process, sock, config, log, directory / "token" / "pin")
    wait_until_serving(agent)
    return agent


def wait_until_serving(agent: AgentProcess) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if agent.process.poll() is not None:
            raise AssertionError(f"agent exited at start:\n{agent.log_text()}")
        if '"ready"' in agent.log_text():
            probe = socket.socket(socket.AF_UNIX)
            try:
                probe.connect(str(agent.socket))
                return
            except OSError:
                pass
            finally:
                probe.close()
        time.sleep(0.05)
    agent.stop(signal.SIGKILL)
    raise AssertionError(f"agent did not start in time:\n{agent.log_text()}")


@pytest.fixture
def running_agent(tmp_path):
    """A fresh agent serving on tmp_path/agent.sock."""
    agent = start_agent(tmp_path / "agent")
    yield agent
    agent.stop()


@pytest.fixture(scope="module")
def shared_agent(tmp_path_factory):
    """One agent shared by the tests of a module, for cheap round trips."""
    agent = start_agent(tmp_path_factory.mktemp("shared") / "agent")
    yield agent
    agent.stop()
