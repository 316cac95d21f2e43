"""The servers under test as child processes: agents, the echo floor, peers.

An agent runs on a configuration file with the settings of
``kms-agent --dev`` (its own SoftHSM2 token, log level info) except the
request lines, the request quotas and, where a figure needs it, the
secret value cache. Dev mode logs every request; the agent's default,
used here as in production, logs only failed ones.
The quotas' default of 750 cryptographic requests per second per caller
would throttle the load, so every bucket gets the maximum rate the
configuration accepts. The quota stage still runs.

Each child runs in its own session, so a Ctrl-C at the terminal reaches
the benchmark only, which then stops its children itself. Linux also
sends each child SIGTERM if the benchmark dies without cleaning up.
``ServerProcess.stop`` sends SIGTERM, waits, then kills what is left of
the child's process group. A child's stdout and stderr go to a log file.
"""

from __future__ import annotations

import ctypes
import dataclasses
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

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

[secrets]
{secrets}

[keystores.default]
type = "pkcs11"
module = "{module}"
token_label = "{label}"
pin_file = "{pin_file}"
softhsm2_conf = "{conf}"
"""


@dataclasses.dataclass(frozen=True)
class SecretCache:
    """The ``[secrets]`` cache settings of a benchmarked agent.

    ``ttl_s`` 0 turns the cache off, so every GetSecretValue reads the
    store and decrypts. ``max_entries`` must cover every secret that a
    figure expects to stay cached.
    """

    ttl_s: float = 300.0
    max_entries: int = 1000

    def toml(self) -> str:
        """Return the settings as lines of the ``[secrets]`` table."""
        return f"cache_ttl = {self.ttl_s}\ncache_max_entries = {self.max_entries}"


class ServerStartError(RuntimeError):
    """A server under test exited, or did not respond before the timeout."""


class ServerProcess:
    """A running child server: its process, address and log file.

    ``socket_path`` is set for servers on a Unix socket, ``port`` for
    servers on 127.0.0.1.
    """

    def __init__(self, name: str, process: subprocess.Popen, log_path: Path, *,
                 socket_path: Path | None = None, port: int | None = None):
        self.name = name
        self.process = process
        self.log_path = log_path
        self.socket_path = socket_path
        self.port = port

    @property
    def pid(self) -> int:
        """The child's process id."""
        return self.process.pid

    def pids(self) -> list[int]:
        """Return the child's process id and those of its descendants."""
        return process_tree(self.process.pid)

    def stop(self) -> None:
        """Terminate the child, then kill what is left of its process group.

        The child leads its own process group, so this reaches helper
        processes it started (the PyKMIP server starts two) and no other.
        """
        if self.process.poll() is None:
            self.process.terminate()
        try:
            self.process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def log_tail(self, size: int = 2000) -> str:
        """Return the end of the child's log, for error messages."""
        try:
            return self.log_path.read_text(errors="replace")[-size:]
        except OSError:
            return "(no log)"


def start_agent(directory: Path, cache: SecretCache = SecretCache()) -> ServerProcess:
    """Start an agent on DIRECTORY/agent.sock and wait until it responds.

    The agent's token, configuration, store and log all live in
    ``directory``.

    Raises:
        TokenSetupError: the agent's SoftHSM2 token could not be created.
        ServerStartError: the agent exited or did not respond in time.
    """
    config = write_agent_config(directory, cache)
    command = [sys.executable, "-m", "agent", "--config", str(config)]
    return start_unix_server("kms-agent", command, directory / "agent.sock",
                             directory / "agent.log")


def write_agent_config(directory: Path, cache: SecretCache = SecretCache()) -> Path:
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
        quotas=quotas, secrets=cache.toml(), module=softhsm.find_softhsm_module(),
        label=token.label, pin_file=token.pin_file, conf=token.conf_path),
        encoding="utf-8")
    return path


def start_echo(directory: Path) -> ServerProcess:
    """Start the echo floor on DIRECTORY/echo.sock and wait until it responds.

    Raises:
        ServerStartError: the server exited or did not respond in time.
    """
    socket_path = directory / "echo.sock"
    command = [sys.executable, "-m", "bench.echo_server", str(socket_path)]
    return start_unix_server("echo server", command, socket_path, directory / "echo.log")


def start_unix_server(name: str, command: list[str], socket_path: Path,
                      log_path: Path) -> ServerProcess:
    """Start a server of this repository that speaks ``client.wire`` on a socket.

    It is ready once ``socket_path`` replies to a hello.

    Raises:
        ServerStartError: the server exited or did not respond in time.
    """
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        filter(None, [str(_REPO), os.environ.get("PYTHONPATH")])))
    return start_process(
        name, command, log_path, env,
        lambda: socket_path.exists() and _answers(socket_path),
        socket_path=socket_path)


def start_process(name: str, command: list[str], log_path: Path,
                  env: dict[str, str], is_ready: Callable[[], bool], *,
                  socket_path: Path | None = None, port: int | None = None,
                  cwd: Path = _REPO) -> ServerProcess:
    """Start a child server and poll ``is_ready`` until it returns True.

    Raises:
        ServerStartError: the child exited or was not ready in time.
        OSError: the command could not be run.
    """
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            env=env, cwd=cwd, start_new_session=True, preexec_fn=exit_with_parent)
    server = ServerProcess(name, process, log_path, socket_path=socket_path,
                           port=port)
    try:
        _wait_until_ready(server, is_ready)
    except BaseException:
        server.stop()
        raise
    return server


def exit_with_parent() -> None:
    """Make the calling child receive SIGTERM when its parent dies.

    It is meant for ``preexec_fn``: it runs in the child between fork and
    exec, and the setting survives exec.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def _wait_until_ready(server: ServerProcess, is_ready: Callable[[], bool]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise ServerStartError(
                f"{server.name} exited with status {server.process.returncode} "
                f"before it responded. Its log ends with:\n{server.log_tail()}")
        if is_ready():
            return
        time.sleep(0.1)
    raise ServerStartError(
        f"{server.name} did not respond within {START_TIMEOUT_S:.0f} s. "
        f"Its log ends with:\n{server.log_tail()}")


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


def accepts_tcp(port: int) -> bool:
    """Return whether a TCP connection to 127.0.0.1:``port`` succeeds."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return True
    except OSError:
        return False


def free_port(span: int = 1) -> int:
    """Return a port P on 127.0.0.1 where P to P + span - 1 are free now.

    Another process may take the ports before the caller binds them, and
    the server then fails to start with an error in its log.
    """
    while True:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        if port + span <= 65536 and all(_port_free(port + offset)
                                        for offset in range(1, span)):
            return port


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def process_tree(pid: int) -> list[int]:
    """Return ``pid`` and the ids of its living descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            parent = _parent_pid(int(entry))
            if parent is not None:
                children.setdefault(parent, []).append(int(entry))
    tree, pending = [], [pid]
    while pending:
        current = pending.pop()
        tree.append(current)
        pending.extend(children.get(current, []))
    return tree


def _parent_pid(pid: int) -> int | None:
    # Field 4 of /proc/PID/stat, counted after the command name, which
    # may contain spaces and parentheses.
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as file:
            return int(file.read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def rss_bytes(pid: int) -> int:
    """Return the resident set size of process ``pid`` (VmRSS), in bytes."""
    with open(f"/proc/{pid}/status", encoding="ascii") as file:
        for line in file:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise ValueError(f"/proc/{pid}/status has no VmRSS line")
