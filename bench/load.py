"""Closed-loop load: clients that each send one request and await its reply.

Each client is an ``AsyncKmsClient`` on its own connection, driven by a
trio task. All clients connect and finish the handshake before the load
starts. A warm-up runs before the measured window, only requests that
complete inside the window count, and every client stops sending once
the window has ended, so a load always ends by itself.

The clients run as tasks in the calling process, or spread over worker
processes (``python -m bench.load``, which writes its latencies to a JSON file)
when one client process cannot keep up with the server.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import itertools
import json
import os
import sys
import tempfile
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any, Iterator

import msgpack
import trio

from bench.stats import LoadSample
from client.aio import AsyncKmsClient

# Worker processes get this long to start Python and connect before the
# load starts. A slower start still works, but shortens the warm-up.
WORKER_START_S = 2.0

# Slack on top of the load's own length before a hung server fails the run.
HANG_MARGIN_S = 60.0

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_REPO = Path(__file__).resolve().parents[1]


@dataclasses.dataclass(frozen=True)
class Window:
    """When a load starts, and when its measured part starts and ends.

    All three are ``time.monotonic_ns()`` values, which Linux keeps on one
    clock for every process of the machine.
    """

    load_ns: int
    start_ns: int
    end_ns: int

    @classmethod
    def after(cls, delay_s: float, warmup_s: float, seconds: float) -> Window:
        """Return the window that starts ``delay_s`` from now."""
        load_ns = time.monotonic_ns() + int(delay_s * 1e9)
        start_ns = load_ns + int(warmup_s * 1e9)
        return cls(load_ns, start_ns, start_ns + int(seconds * 1e9))

    @property
    def seconds(self) -> float:
        """The length of the measured part, in seconds."""
        return (self.end_ns - self.start_ns) / 1e9


@dataclasses.dataclass(frozen=True)
class Load:
    """A request to repeat: one operation with fixed parameters, from ``clients``.

    With ``key_ids`` set, each request names the next of those keys as
    its ``KeyId``, and client ``i`` of ``n`` starts at ``i / n`` of the
    list, so the clients spread over every key.
    """

    socket_path: str
    operation: str
    params: dict[str, Any]
    clients: int
    key_ids: tuple[str, ...] = ()


def measure(load: Load, warmup_s: float, seconds: float, server_pid: int,
            client_processes: int = 0) -> LoadSample:
    """Run ``load`` and return the latencies and CPU use of its window.

    With ``client_processes`` 0 the clients run as tasks in this process;
    otherwise they are spread as evenly as possible over that many worker
    processes.
    """
    if client_processes == 0:
        return trio.run(_measure_in_process, load, warmup_s, seconds, server_pid)
    return trio.run(_measure_with_workers, load, warmup_s, seconds, server_pid,
                    client_processes)


async def _measure_in_process(load: Load, warmup_s: float, seconds: float,
                              server_pid: int) -> LoadSample:
    window = Window.after(0.0, warmup_s, seconds)
    pids = {"client": [os.getpid()], "server": [server_pid]}
    with trio.fail_after(warmup_s + seconds + HANG_MARGIN_S):
        async with trio.open_nursery() as nursery:
            cpu = start_cpu_watch(nursery, pids, window)
            latencies = await run_clients(load, window)
    return LoadSample(window.seconds, latencies, cpu)


async def _measure_with_workers(load: Load, warmup_s: float, seconds: float,
                                server_pid: int, processes: int) -> LoadSample:
    window = Window.after(WORKER_START_S, warmup_s, seconds)
    shares = [len(range(index, load.clients, processes)) for index in range(processes)]
    pids: dict[str, list[int]] = {"client": [], "server": [server_pid]}
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        filter(None, [str(_REPO), os.environ.get("PYTHONPATH")])))
    with tempfile.TemporaryDirectory(prefix="kms-bench-load-") as directory:
        outputs = [Path(directory, f"worker-{index}.json")
                   for index, share in enumerate(shares) if share]
        with trio.fail_after(WORKER_START_S + warmup_s + seconds + HANG_MARGIN_S):
            async with trio.open_nursery() as nursery:
                for output, share in zip(outputs, filter(None, shares)):
                    command = _worker_command(
                        dataclasses.replace(load, clients=share), window, output)
                    process = await nursery.start(functools.partial(
                        trio.run_process, command, env=env, check=True))
                    pids["client"].append(process.pid)
                cpu = start_cpu_watch(nursery, pids, window)
        latencies = [value for output in outputs
                     for value in json.loads(output.read_text())["latencies_ns"]]
    return LoadSample(window.seconds, latencies, cpu)


def _worker_command(load: Load, window: Window, output: Path) -> list[str]:
    # The parameters go through a file, since a list of 10,000 key ids
    # exceeds the length Linux allows for one argument.
    params_path = output.with_suffix(".params")
    params_path.write_bytes(msgpack.packb(
        {"params": load.params, "key_ids": list(load.key_ids)}, use_bin_type=True))
    return [
        sys.executable, "-m", "bench.load",
        "--socket", load.socket_path, "--operation", load.operation,
        "--params", str(params_path), "--clients", str(load.clients),
        "--window", f"{window.load_ns},{window.start_ns},{window.end_ns}",
        "--output", str(output),
    ]


async def run_clients(load: Load, window: Window) -> list[int]:
    """Connect ``load.clients`` clients, run the load and return its latencies.

    Raises:
        KmsError: a request failed; the load is meant to run error-free.
    """
    latencies: list[int] = []
    async with AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(AsyncKmsClient(load.socket_path))
                   for _ in range(load.clients)]
        await trio.sleep(max(0.0, (window.load_ns - time.monotonic_ns()) / 1e9))
        async with trio.open_nursery() as nursery:
            for index, client in enumerate(clients):
                nursery.start_soon(_client_loop, client, _requests(load, index),
                                   load.operation, window, latencies)
    return latencies


def _requests(load: Load, index: int) -> Iterator[dict[str, Any]]:
    # Yield the parameters of client ``index``'s requests, one per request.
    if not load.key_ids:
        return itertools.repeat(load.params)
    start = index * len(load.key_ids) // load.clients
    ordered = load.key_ids[start:] + load.key_ids[:start]
    return (dict(load.params, KeyId=key_id) for key_id in itertools.cycle(ordered))


async def _client_loop(client: AsyncKmsClient, requests: Iterator[dict[str, Any]],
                       operation: str, window: Window, latencies: list[int]) -> None:
    while True:
        params = next(requests)
        started = time.monotonic_ns()
        if started >= window.end_ns:
            return
        await client.call(operation, **params)
        finished = time.monotonic_ns()
        if window.start_ns <= finished <= window.end_ns:
            latencies.append(finished - started)


def start_cpu_watch(nursery: trio.Nursery, pids: dict[str, list[int]],
                    window: Window) -> dict[str, float]:
    """Measure the CPU seconds of each group of ``pids`` during ``window``.

    The returned map, from role to CPU seconds, is filled in when the
    window ends.
    """
    cpu: dict[str, float] = {}
    nursery.start_soon(_watch_cpu, pids, window, cpu)
    return cpu


async def _watch_cpu(pids: dict[str, list[int]], window: Window,
                     cpu: dict[str, float]) -> None:
    await trio.sleep(max(0.0, (window.start_ns - time.monotonic_ns()) / 1e9))
    before = {role: _cpu_seconds(group) for role, group in pids.items()}
    await trio.sleep(max(0.0, (window.end_ns - time.monotonic_ns()) / 1e9))
    for role, group in pids.items():
        cpu[role] = _cpu_seconds(group) - before[role]


def _cpu_seconds(pids: list[int]) -> float:
    # utime and stime, fields 14 and 15 of /proc/PID/stat, cover every
    # thread of the process. The command name in field 2 may hold spaces,
    # so the fields are counted from its closing parenthesis.
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as file:
            fields = file.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / _CLOCK_TICKS


def _parse_worker_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.load",
        description="Run a share of a benchmark load and write its latencies "
                    "to a JSON file.")
    parser.add_argument("--socket", required=True, help="the server's Unix socket")
    parser.add_argument("--operation", required=True, help="the operation name")
    parser.add_argument("--params", type=Path, required=True,
                        help="a msgpack file with the request parameters and "
                             "the key ids to spread the requests over")
    parser.add_argument("--clients", type=int, required=True,
                        help="number of connections, one task each")
    parser.add_argument("--window", required=True,
                        help="load start, window start and window end as "
                             "comma-separated time.monotonic_ns() values")
    parser.add_argument("--output", type=Path, required=True,
                        help="file to write the latencies to, as JSON")
    return parser.parse_args(argv)


def worker_main(argv: list[str] | None = None) -> int:
    """Run one worker's share of a load; return the exit status."""
    args = _parse_worker_args(argv)
    stored = msgpack.unpackb(args.params.read_bytes(), raw=False)
    load = Load(args.socket, args.operation, stored["params"], args.clients,
                tuple(stored["key_ids"]))
    window = Window(*(int(value) for value in args.window.split(",")))
    latencies = trio.run(run_clients, load, window)
    args.output.write_text(json.dumps({"latencies_ns": latencies}))
    return 0


if __name__ == "__main__":
    sys.exit(worker_main())
