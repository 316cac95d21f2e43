"""Drive a peer's clients from the benchmark and measure each load.

``PeerDriver`` starts ``bench/peers/client.py`` with the peer's own
interpreter and exchanges JSON lines with it. ``measure`` prepares the
clients, then runs them in a window while this process reads the CPU
time of the client program and of the server's processes, as
``bench.load`` does for the agent.
"""

from __future__ import annotations

import json
import queue
import subprocess
import threading
from pathlib import Path

import trio

from bench import load, processes
from bench.peers.servers import PeerServer
from bench.stats import LoadSample

CLIENT_SCRIPT = Path(__file__).resolve().with_name("client.py")
# Creating the fixtures includes an RSA key pair, which PyKMIP and moto
# generate in Python.
SETUP_TIMEOUT_S = 60.0
# Opening 64 PyKMIP clients means 64 TLS handshakes.
PREPARE_TIMEOUT_S = 60.0
# The clients start this long after the window is sent.
RUN_DELAY_S = 0.05


class PeerError(RuntimeError):
    """A peer's client program failed, or a request of a load failed."""


class PeerDriver:
    """The client program of one peer, started with its fixtures created.

    Raises (from the constructor):
        PeerError: the program could not create its fixtures in time.
    """

    def __init__(self, peer: PeerServer, log_path: Path):
        self.peer = peer
        self._log = open(log_path, "wb")
        self.process = subprocess.Popen(
            [str(peer.python), str(CLIENT_SCRIPT), peer.name,
             json.dumps(peer.settings)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log,
            env=peer.env, cwd=CLIENT_SCRIPT.parent, text=True,
            start_new_session=True, preexec_fn=processes.exit_with_parent)
        self._replies: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        try:
            self.operations = self._receive(SETUP_TIMEOUT_S)["operations"]
        except BaseException:
            self.close()
            raise

    @property
    def pid(self) -> int:
        """The client program's process id."""
        return self.process.pid

    def request(self, message: dict, timeout: float) -> dict:
        """Send one command and return its reply.

        Raises:
            PeerError: the program reported an error, exited, or did not
                reply within ``timeout`` seconds.
        """
        try:
            self.process.stdin.write(json.dumps(message) + "\n")
            self.process.stdin.flush()
        except (BrokenPipeError, OSError) as error:
            raise PeerError(f"{self.peer.name} client program is gone: {error}") \
                from None
        return self._receive(timeout)

    def _receive(self, timeout: float) -> dict:
        try:
            line = self._replies.get(timeout=timeout)
        except queue.Empty:
            raise PeerError(f"{self.peer.name} client program did not reply "
                            f"within {timeout:.0f} s") from None
        if not line:
            raise PeerError(f"{self.peer.name} client program exited with status "
                            f"{self.process.wait()}")
        reply = json.loads(line)
        if "error" in reply:
            raise PeerError(f"{self.peer.name}: {reply['error']}")
        return reply

    def _read(self) -> None:
        # Runs in a thread; an empty string marks the end of the output.
        for line in self.process.stdout:
            self._replies.put(line)
        self._replies.put("")

    def close(self) -> None:
        """Ask the program to exit; kill it if it does not."""
        try:
            self.process.stdin.write(json.dumps({"command": "exit"}) + "\n")
            self.process.stdin.close()
        except OSError:
            pass
        try:
            self.process.wait(5.0)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._log.close()


def measure(driver: PeerDriver, operation: str, clients: int, warmup_s: float,
            seconds: float) -> LoadSample:
    """Run one closed-loop load on the peer; return its sample.

    Raises:
        PeerError: a client could not connect or a request failed.
    """
    driver.request({"command": "prepare", "operation": operation,
                    "clients": clients}, PREPARE_TIMEOUT_S)
    window = load.Window.after(RUN_DELAY_S, warmup_s, seconds)
    pids = {"client": [driver.pid], "server": driver.peer.server.pids()}
    timeout = RUN_DELAY_S + warmup_s + seconds + load.HANG_MARGIN_S
    reply, cpu = trio.run(_run, driver, window, pids, timeout)
    if reply["errors"]:
        raise PeerError(f"{driver.peer.name} {operation}: {reply['errors']} of "
                        f"{clients} clients failed, first with "
                        f"{reply['first_error']}")
    return LoadSample(window.seconds, reply["latencies_ns"], cpu)


async def _run(driver: PeerDriver, window: load.Window, pids: dict[str, list[int]],
               timeout: float) -> tuple[dict, dict[str, float]]:
    message = {"command": "run",
               "window": [window.load_ns, window.start_ns, window.end_ns]}
    async with trio.open_nursery() as nursery:
        cpu = load.start_cpu_watch(nursery, pids, window)
        reply = await trio.to_thread.run_sync(driver.request, message, timeout)
    return reply, cpu
