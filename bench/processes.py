"""The servers under test as child processes: the agent and the echo floor.

The agent runs on a configuration file with the settings of
``kms-agent --dev`` (its own SoftHSM2 token, log level info) except the
request quotas. Their default of 750 cryptographic requests per second
per caller would throttle the load, so every bucket gets the maximum
rate the configuration accepts. The quota stage still runs.

Each child runs in its own session, so a Ctrl-C at the terminal reaches
the benchmark only, which then stops its children itself. Linux also
sends each child SIGTERM if the benchmark dies without cleaning up.
``ServerProcess.stop`` sends SIGTERM, waits, then kills what is left.
A child's stdout and stderr go to a log file in its directory.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from agent.keystore import softhsm
from client import KmsClient
from client.errors import KmsError, ReadTimeoutError, ServerUnreachableError

# The agent logs in to its token and opens its store before it listens,
# which can take seconds on a busy machine.
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0

_REPO = Path(__file__).resolve().parents[1]
_PR_SET_PDEATHSIG = 1

AGENT_TOKEN_LABEL = "kms-bench-agent"
# The maximum rate and burst agent.config accepts for a quota bucket.
QUOTA_RATE = 10**6
QUOTA_BURST = 10**7
QUOTA_BUCKETS = ("create", "cryptographic", "cryptographic_asymmetric", "read",
                 "write")

_AGENT_CONFIG = """\
# Written by bench/processes.py: dev mode's settings without quota limits.
[agent]
socket = "agent.sock"
data_dir = "data"
socket_mode = "0600"
purge_interval = 5

[log]
level = "info"
format = "json"

[quotas]
{quotas}

[keystores.default]
type = "pkcs11"
module = "{module}"
token_label = "{label}"
pin_file = "{pin_file}"
softhsm2_conf = "{conf}"
"""


class ServerStartError(RuntimeError):
    """A server under test exited, or did not respond before the timeout."""


class ServerProcess:
    """A running child server: its process, socket and log file."""

    def __init__(self, name: str, process: subprocess.Popen, socket_path: Path,
                 log_path: Path):
        self.name = name
        self.process = process
        self.socket_path = socket_path
        self.log_path = log_path

    @property
    def pid(self) -> int:
        """The child's process id."""
        return self.process.pid

    def stop(self) -> None:
        """Terminate the child and wait for it, killing it after a timeout."""
        if self.process.poll() is None:
            self.process.terminate()
        try:
            self.process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def log_tail(self, size: int = 2000) -> str:
        """Return the end of the child's log, for error messages."""
        try:
            return self.log_path.read_text(errors="replace")[-size:]
        except OSError:
            return "(no log)"


def start_agent(directory: Path) -> ServerProcess:
    """Start an agent on DIRECTORY/agent/agent.sock and wait until it responds.

    Raises:
        TokenSetupError: the agent's SoftHSM2 token could not be created.
        ServerStartError: the agent exited or did not respond in time.
    """
    config = write_agent_config(directory / "agent")
    command = [sys.executable, "-m", "agent", "--config", str(config)]
    return _start("kms-agent", command, config.parent / "agent.sock",
                  directory / "agent.log")


def write_agent_config(directory: Path) -> Path:
    """Create a token and the agent's configuration in ``directory``; return it.

    Raises:
        TokenSetupError: the token could not be created.
    """
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    token = softhsm.init_token(directory / "token", AGENT_TOKEN_LABEL)
    quotas = "\n".join(f"{bucket}_rate = {QUOTA_RATE}\n{bucket}_burst = {QUOTA_BURST}"
                       for bucket in QUOTA_BUCKETS)
    path = directory / "config.toml"
    path.write_text(_AGENT_CONFIG.format(
        quotas=quotas, module=softhsm.find_softhsm_module(), label=token.label,
        pin_file=token.pin_file, conf=token.conf_path), encoding="utf-8")
    return path


def start_echo(directory: Path) -> ServerProcess:
    """Start the echo floor on DIRECTORY/echo.sock and wait until it responds.

    Raises:
        ServerStartError: the server exited or did not respond in time.
    """
    socket_path = directory / "echo.sock"
    command = [sys.executable, "-m", "bench.echo_server", str(socket_path)]
    return _start("echo server", command, socket_path, directory / "echo.log")


def _start(name: str, command: list[str], socket_path: Path,
           log_path: Path) -> ServerProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        filter(None, [str(_REPO), os.environ.get("PYTHONPATH")])))
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            env=env, cwd=_REPO, start_new_session=True, preexec_fn=_exit_with_parent)
    server = ServerProcess(name, process, socket_path, log_path)
    try:
        _wait_until_ready(server)
    except BaseException:
        server.stop()
        raise
    return server


def _exit_with_parent() -> None:
    # This runs in the child between fork and exec. The setting survives exec.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def _wait_until_ready(server: ServerProcess) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise ServerStartError(
                f"{server.name} exited with status {server.process.returncode} "
                f"before it responded. Its log ends with:\n{server.log_tail()}")
        if server.socket_path.exists() and _answers(server.socket_path):
            return
        time.sleep(0.1)
    raise ServerStartError(
        f"{server.name} did not respond on {server.socket_path} within "
        f"{START_TIMEOUT_S:.0f} s. Its log ends with:\n{server.log_tail()}")


def _answers(socket_path: Path) -> bool:
    # Any reply, a result or an error, shows the server reads requests.
    with KmsClient(socket_path, timeout=5.0, connect_timeout=1.0) as client:
        try:
            client.call("ListKeys")
        except (ServerUnreachableError, ReadTimeoutError):
            return False
        except KmsError:
            pass
    return True
