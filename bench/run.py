"""Run the kms-agent benchmark suite: ``python bench/run.py [--quick] [--json PATH]``.

One run starts the echo floor, three agents and the peer key servers as
child processes (``bench.suite``), measures every figure for several
rounds, then prints the table of medians and targets, and writes the
JSON and a plot if asked. Everything runs under one temporary directory,
which is removed, with the child processes stopped, on every exit,
including Ctrl-C and SIGTERM. Only the peers' virtualenvs stay, in
``bench/.peers``.
"""

from __future__ import annotations

import argparse
import datetime
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    # Run as a script: make the repository importable as for ``-m bench.run``.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import catalog, ratios, report  # noqa: E402
from bench.peers import install  # noqa: E402
from bench.stats import median_figure  # noqa: E402
from bench.suite import Suite  # noqa: E402

DEFAULTS = {"seconds": 1.0, "warmup": 0.25, "rounds": 3, "store_keys": 10_000,
            "file_mib": 1024}
QUICK = {"seconds": 0.2, "warmup": 0.05, "rounds": 2, "store_keys": 100,
         "file_mib": 16}
PLOT_TIMEOUT_S = 120
_REPO = Path(__file__).resolve().parents[1]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python bench/run.py",
        description="Measure kms-agent against its floors (raw HSM, raw AES-GCM, "
                    "bare protocol echo) and peer key servers, and check the "
                    "targets.")

    parser.add_argument("--seconds", type=float,
                        help="measured seconds per figure and round (default 1, "
                             "or 0.2 with --quick)")
    parser.add_argument("--warmup", type=float,
                        help="unmeasured seconds before each figure (default "
                             "0.25, or 0.05 with --quick)")
    parser.add_argument("--rounds", type=int,
                        help="rounds of every figure, of which the table shows "
                             "medians (default 3, or 2 with --quick)")

    parser.add_argument("--store-keys", type=int, metavar="N",
                        help="keys and cached secrets in the large store "
                             "(default 10000, or 100 with --quick)")
    parser.add_argument("--file-mib", type=int, metavar="MIB",
                        help="size of the encrypt-file input in MiB (default "
                             "1024, or 16 with --quick)")
    parser.add_argument("--concurrency", default="1,4,16,64", metavar="LIST",
                        help="comma-separated client counts (default 1,4,16,64; "
                             "1 and 16 are needed for the targets)")
    parser.add_argument("--quick", action="store_true",
                        help="the short smoke configuration, which checks that "
                             "the suite works and gives rough figures")

    parser.add_argument("--no-peers", action="store_true",
                        help="measure no peer key server (installs nothing)")
    parser.add_argument("--peers", default=",".join(catalog.PEERS), metavar="LIST",
                        help="comma-separated peers to measure (default "
                             "pykmip,moto,openbao)")
    parser.add_argument("--client-processes", type=int, default=0, metavar="N",
                        help="spread each agent load's clients over N worker "
                             "processes (default 0: trio tasks in this process)")

    parser.add_argument("--json", type=Path, metavar="PATH",
                        help="also write every figure to PATH as JSON")
    parser.add_argument("--plot", type=Path, metavar="PATH",
                        help="also draw the figures into a PNG image at PATH "
                             "(installs matplotlib into bench/.peers/plot)")
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
    # The large store needs one AES key besides the secrets' default key.
    if args.client_processes < 0 or args.store_keys < 2 or args.file_mib < 1:
        parser.error("--client-processes must not be negative, --store-keys at "
                     "least 2 and --file-mib at least 1")
    args.concurrency = _int_list(parser, args.concurrency)
    args.peers = [] if args.no_peers else _peer_list(parser, args.peers)
    return args


def _int_list(parser: argparse.ArgumentParser, text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",")]
    except ValueError:
        parser.error(f"--concurrency must be integers separated by commas: {text!r}")
    if any(value < 1 for value in values):
        parser.error("--concurrency values must be at least 1")
    return values


def _peer_list(parser: argparse.ArgumentParser, text: str) -> list[str]:
    names = [name for name in text.split(",") if name]
    unknown = sorted(set(names) - set(catalog.PEERS))
    if unknown:
        parser.error(f"unknown peers {', '.join(unknown)}; choose from "
                     f"{', '.join(catalog.PEERS)}")
    return names


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    if args.client_processes:
        mode = f"trio tasks in {args.client_processes} worker processes"
    else:
        mode = "trio tasks in the benchmark process"
    return {
        "seconds": args.seconds, "warmup_seconds": args.warmup,
        "rounds": args.rounds, "quick": args.quick,
        "client_processes": args.client_processes, "client_mode": mode,
        "plaintext_bytes": 32, "concurrency": args.concurrency,
        "store_keys": args.store_keys, "file_bytes": args.file_mib * 2**20,
        "peers": args.peers, "peer_requirements": {
            name: list(install.REQUIREMENTS[name]) for name in args.peers},
    }


def agent_commit() -> str:
    """Return the repository's commit, marked if agent/ or client/ differ from it."""
    def git(*arguments: str) -> str:
        return subprocess.run(["git", *arguments], cwd=_REPO, capture_output=True,
                              text=True, timeout=30).stdout.strip()

    try:
        commit = git("rev-parse", "--short", "HEAD") or "unknown"
        changed = git("status", "--porcelain", "--", "agent", "client")
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return commit + (" with uncommitted changes to agent/ or client/"
                     if changed else "")


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


def measure(args: argparse.Namespace, context: dict[str, Any]) -> dict[str, Any]:
    """Run the suite and return the results document."""
    with Suite(args) as suite:
        rounds = suite.run()
        finished = suite.finish()
        context.update(unavailable=suite.unavailable,
                       secret_caches=finished["secret_caches"])
        order = suite.order + list(catalog.memory_figures(args.store_keys))
    figures = {name: median_figure(values) for name, values in rounds.items()}
    figures.update(finished["figures"])
    targets = ratios.evaluate(figures, args.store_keys)
    return report.build_results(figures, order, rounds, targets, context)


def draw_plot(json_path: Path, image_path: Path) -> None:
    """Draw the figures of ``json_path`` into ``image_path`` with matplotlib.

    It runs ``bench/plot.py`` in its own virtualenv, installed on first use.

    Raises:
        InstallError: matplotlib could not be installed.
        subprocess.CalledProcessError: the plot script failed.
    """
    python = install.environment("plot") / "bin" / "python"
    subprocess.run([str(python), str(_REPO / "bench" / "plot.py"), str(json_path),
                    str(image_path)], check=True, timeout=PLOT_TIMEOUT_S,
                   stdin=subprocess.DEVNULL)


def main(argv: list[str] | None = None) -> int:
    """Run the suite, print the table, write the JSON and plot; return the status."""
    args = parse_args(argv)
    _stop_on_signals()
    context = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime(
            "%Y-%m-%d %H:%M UTC"),
        "load_average": os.getloadavg(), "commit": agent_commit(),
        "settings": _settings(args),
    }
    try:
        results = measure(args, context)
    except BaseException as error:
        if not _is_interrupt(error):
            raise
        print("interrupted: servers stopped, temporary files removed",
              file=sys.stderr)
        return 130
    print(report.format_table(results))
    if args.json is not None:
        report.write_json(results, args.json)
    if args.plot is not None:
        _plot(results, args)
    return 0


def _plot(results: dict[str, Any], args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="kms-bench-plot-") as directory:
        json_path = args.json or Path(directory) / "results.json"
        if args.json is None:
            report.write_json(results, json_path)
        try:
            draw_plot(json_path, args.plot)
        except (install.InstallError, subprocess.SubprocessError) as error:
            print(f"plot not drawn: {error}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
