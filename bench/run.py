"""Run the kms-agent benchmark suite: ``python bench/run.py [--quick] [--json PATH]``.

One run starts the echo floor and an agent as child processes, makes
a SoftHSM2 token for the raw HSM floor, then measures every figure in
``report.FIGURES`` for several rounds. Each round interleaves the floors
and the agent, and every other round runs them in reverse order, so
drift on a noisy machine spreads over all of them. The table shows the
median of each metric. Everything runs under one temporary directory,
which is removed, with the child processes stopped, on every exit,
including Ctrl-C and SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

if __package__ in (None, ""):
    # Run as a script: make the repository importable as for ``-m bench.run``.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import floors, load, processes, report  # noqa: E402
from bench.stats import load_figure, median_figure  # noqa: E402
from client import KmsClient  # noqa: E402

DEFAULTS = {"seconds": 3.0, "warmup": 0.5, "rounds": 3}
QUICK = {"seconds": 0.2, "warmup": 0.05, "rounds": 2}

Measurement = Callable[[], dict[str, float]]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python bench/run.py",
        description="Measure kms-agent against its floors (raw HSM, raw AES-GCM, "
                    "bare protocol echo) and check the target ratios.")
    parser.add_argument("--seconds", type=float,
                        help="measured seconds per figure and round (default 3, "
                             "or 0.2 with --quick)")
    parser.add_argument("--warmup", type=float,
                        help="unmeasured seconds before each figure (default 0.5, "
                             "or 0.05 with --quick)")
    parser.add_argument("--rounds", type=int,
                        help="rounds of every figure, of which the table shows "
                             "medians (default 3, or 2 with --quick)")
    parser.add_argument("--quick", action="store_true",
                        help="the short smoke configuration, which checks that "
                             "the suite works and gives rough figures")
    parser.add_argument("--client-processes", type=int, default=0, metavar="N",
                        help="spread each load's clients over N worker "
                             "processes (default 0: trio tasks in this process)")
    parser.add_argument("--json", type=Path, metavar="PATH",
                        help="also write every figure to PATH as JSON")
    return parser


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse the command line and fill in the defaults of the chosen mode."""
    parser = build_parser()
    args = parser.parse_args(argv)
    for name, default in (QUICK if args.quick else DEFAULTS).items():
        if getattr(args, name) is None:
            setattr(args, name, default)

    if args.seconds <= 0 or args.warmup < 0 or args.rounds < 1:
        parser.error("--seconds must be positive, --warmup not negative and "
                     "--rounds at least 1")
    if args.client_processes < 0:
        parser.error("--client-processes must not be negative")
    return args


class Suite:
    """The servers, floors and measurements of one run; a context manager."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self._cleanup = contextlib.ExitStack()

    def __enter__(self) -> Suite:
        try:
            self._start()
        except BaseException:
            self._cleanup.close()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._cleanup.close()

    def _start(self) -> None:
        directory = Path(self._cleanup.enter_context(
            tempfile.TemporaryDirectory(prefix="kms-bench-")))
        # The children start before this process loads SoftHSM2, which
        # sets SOFTHSM2_CONF in the environment they would inherit.
        self.echo = processes.start_echo(directory)
        self._cleanup.callback(self.echo.stop)
        self.agent = processes.start_agent(directory)
        self._cleanup.callback(self.agent.stop)
        self.hsm = floors.HsmFloor(directory / "floor-token")
        self._cleanup.callback(self.hsm.close)
        with KmsClient(self.agent.socket_path) as client:
            created = client.create_key(key_spec="Aliyun_AES_256",
                                        protection_level="HSM")
            self.key_id = created["KeyMetadata"]["KeyId"]
            encrypted = client.encrypt(self.key_id, floors.PLAINTEXT)
            self.blob = encrypted["CiphertextBlob"]

    def measurements(self) -> dict[str, Measurement]:
        """Return every figure's measurement, in the order of a round."""
        args = self.args
        software = floors.software_encrypt()
        table: dict[str, Measurement] = {
            "raw_hsm_encrypt": lambda: floors.run_for(
                self.hsm.encrypt, args.warmup, args.seconds),
            "raw_aesgcm_encrypt": lambda: floors.run_for(
                software, args.warmup, args.seconds),
        }
        encrypt = {"KeyId": self.key_id, "Plaintext": floors.PLAINTEXT}
        for clients in report.CONCURRENCY:
            suffix = f"_c{clients}"
            table["echo" + suffix] = self._load(self.echo, "Encrypt", encrypt, clients)
            table["encrypt" + suffix] = self._load(self.agent, "Encrypt", encrypt,
                                                   clients)
            table["decrypt" + suffix] = self._load(
                self.agent, "Decrypt", {"CiphertextBlob": self.blob}, clients)
            table["generate_data_key" + suffix] = self._load(
                self.agent, "GenerateDataKey", {"KeyId": self.key_id}, clients)
        return table

    def _load(self, server: processes.ServerProcess, operation: str,
              params: dict[str, Any], clients: int) -> Measurement:
        work = load.Load(str(server.socket_path), operation, params, clients)

        def measure() -> dict[str, float]:
            sample = load.measure(work, self.args.warmup, self.args.seconds,
                                  server.pid, self.args.client_processes)
            return load_figure(sample)

        return measure

    def run(self) -> dict[str, list[dict[str, float]]]:
        """Measure every figure once per round; return the figures by name."""
        table = self.measurements()
        rounds: dict[str, list[dict[str, float]]] = {name: [] for name in table}
        for number in range(self.args.rounds):
            order = list(table) if number % 2 == 0 else list(reversed(table))
            for name in order:
                figure = table[name]()
                rounds[name].append(figure)
                _progress(f"round {number + 1}/{self.args.rounds}  {name:<22}"
                          f"{figure['ops_per_s']:>12,.0f} ops/s")
        return rounds


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    if args.client_processes:
        mode = f"trio tasks in {args.client_processes} worker processes"
    else:
        mode = "trio tasks in the benchmark process"
    return {
        "seconds": args.seconds, "warmup_seconds": args.warmup,
        "rounds": args.rounds, "quick": args.quick,
        "client_processes": args.client_processes, "client_mode": mode,
        "plaintext_bytes": len(floors.PLAINTEXT),
        "concurrency": list(report.CONCURRENCY),
    }


def _is_interrupt(error: BaseException) -> bool:
    # trio can deliver Ctrl-C wrapped in an exception group.
    if isinstance(error, BaseExceptionGroup):
        return error.split(KeyboardInterrupt)[0] is not None
    return isinstance(error, KeyboardInterrupt)


def _stop_on_signals() -> None:
    # SIGTERM takes the path of Ctrl-C, on which trio and the cleanup code
    # already act. SIGINT gets Python's default handler even when the
    # shell started this process with SIGINT ignored (as it does for
    # "cmd &"), because otherwise SIGTERM would be ignored too.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda signum, frame: os.kill(os.getpid(),
                                                                signal.SIGINT))


def main(argv: list[str] | None = None) -> int:
    """Run the suite, print the table, write the JSON; return the exit status."""
    args = parse_args(argv)
    _stop_on_signals()
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    load_average = os.getloadavg()
    try:
        with Suite(args) as suite:
            rounds = suite.run()
    except BaseException as error:
        if not _is_interrupt(error):
            raise
        print("interrupted: servers stopped, temporary files removed",
              file=sys.stderr)
        return 130
    figures = {name: median_figure(values) for name, values in rounds.items()}
    results = report.build_results(figures, rounds, _settings(args), date,
                                   load_average)
    print(report.format_table(results))
    if args.json is not None:
        report.write_json(results, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
