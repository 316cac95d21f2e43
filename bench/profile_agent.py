"""Profile the agent under load: ``python bench/profile_agent.py``.

It starts the agent as the benchmark suite does (or, with ``--target
echo``, the echo floor) in a temporary directory and drives one operation from
closed-loop clients. Meanwhile py-spy (``pip install py-spy``, which
needs ptrace rights on the server) samples the server, by default only
while its thread holds the GIL. Each sample is put in one category by
the rules in ``categorize``, and
the table shows each category's share of the samples and the CPU time it
costs per request: that share of the server's CPU seconds in the
measured window, divided by the requests completed in it.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):
    # Run as a script: make the repository importable as for ``-m``.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import floors, load, processes  # noqa: E402
from client import KmsClient  # noqa: E402

# py-spy needs a moment to attach. The load's warm-up covers it, so that
# every sample falls inside the steady load.
WARMUP_S = 1.0
ATTACH_SLACK_S = 1.0

_FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^()]*?)(?::\d+)?\)$")
_SOCKET_FILES = ("trio/_socket.py", "trio/_highlevel_socket.py")
_THREAD_FILES = ("trio/_threads.py", "trio/_core/_thread_cache.py")
_AGENT_RULES = (
    # (file prefix, function prefix, category). The first match wins.
    ("agent/logs.py", "", "logging"),
    ("agent/rpc/dispatch.py", "Dispatcher._log_request", "logging"),
    ("agent/rpc/dispatch.py", "", "dispatch and parameter checks"),
    ("agent/rpc/params.py", "", "dispatch and parameter checks"),
    ("agent/rpc/server.py", "", "per-request task and send lock"),
    ("agent/context.py", "", "request context (uuid4 request id)"),
    ("agent/store/", "", "SQLite lookups"),
    ("agent/keys/", "", "key service"),
    ("agent/audit/", "", "audit trail"),
    ("client/audit.py", "", "audit trail"),
    ("agent/auth/", "", "access control"),
    ("agent/quotas.py", "", "quotas"),
    ("client/wire.py", "", "framing and msgpack"),
    # agent.main calls trio.run, so it is the innermost agent frame only
    # for code of trio's run loop itself.
    ("agent/main.py", "", "trio scheduling"),
)


def parse_frame(frame: str) -> tuple[str, str]:
    """Return the function and file of a py-spy frame ``function (file:line)``."""
    match = _FRAME.match(frame)
    if match is None:
        return frame, ""
    return match["function"], match["file"]


def categorize(frames: list[tuple[str, str]]) -> str:
    """Return the category of one sampled stack, outermost frame first.

    A sample whose innermost frame is in trio counts as a thread hand-off
    when trio's thread code is on the stack, as socket I/O when a trio
    socket call is, else as trio scheduling. Otherwise the innermost frame
    of the agent or client package decides by ``_AGENT_RULES``, and a
    python-pkcs11 frame below the keystore makes it an HSM call. Agent
    files that no rule names get a category of their own.
    """
    files = [file for _, file in frames]
    innermost = files[-1] if files else ""
    if innermost.startswith(("trio/", "outcome/", "<attrs", "selectors")):
        if any(file in _THREAD_FILES for file in files):
            return "thread hand-off (trio.to_thread)"
        if any(file in _SOCKET_FILES for file in files):
            return "socket I/O"
        return "trio scheduling"
    if innermost.startswith("logging/"):
        return "logging"
    for function, file in reversed(frames):
        category = _agent_category(function, file, files)
        if category is not None:
            return category
    if any(file in _THREAD_FILES for file in files):
        return "thread hand-off (trio.to_thread)"
    return "trio scheduling"


def _agent_category(function: str, file: str, files: list[str]) -> str | None:
    if file.startswith("agent/keystore/"):
        if any(name.startswith("pkcs11/") for name in files):
            return "HSM call (python-pkcs11 and SoftHSM2)"
        return "keystore (Python)"
    for prefix, function_prefix, category in _AGENT_RULES:
        if file.startswith(prefix) and function.startswith(function_prefix):
            return category
    if file.startswith(("agent/", "client/")):
        return f"other: {file}"
    return None


def summarize(raw_path: Path) -> tuple[collections.Counter, int]:
    """Count the samples of a py-spy raw (collapsed) file by category."""
    counts: collections.Counter = collections.Counter()
    for line in raw_path.read_text(encoding="utf-8").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        frames = [parse_frame(frame) for frame in stack.split(";")]
        counts[categorize(frames)] += int(count)
    return counts, sum(counts.values())


def find_py_spy() -> str:
    """Return the py-spy executable, or exit with how to install it."""
    beside_python = Path(sys.executable).with_name("py-spy")
    found = shutil.which("py-spy") or (
        str(beside_python) if beside_python.exists() else None)
    if found is None:
        sys.exit("py-spy is not installed: pip install py-spy")
    return found


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python bench/profile_agent.py",
        description="Sample the agent (or the echo floor) with py-spy under "
                    "a closed-loop load and show where its CPU time goes.")
    parser.add_argument("--target", default="agent", choices=("agent", "echo"),
                        help="the server to sample: the agent (default) or "
                             "the echo floor, which answers every operation")
    parser.add_argument("--operation", default="Encrypt",
                        choices=("Encrypt", "Decrypt", "GenerateDataKey",
                                 "AsymmetricSign", "GetSecretValue"),
                        help="the operation to load (default Encrypt); "
                             "AsymmetricSign signs with an EC_P256 key and "
                             "GetSecretValue reads one cached secret")
    parser.add_argument("--clients", type=int, default=16,
                        help="concurrent clients, one connection each (default 16)")
    parser.add_argument("--seconds", type=float, default=10.0,
                        help="seconds of sampling (default 10)")
    parser.add_argument("--rate", type=int, default=250,
                        help="samples per second (default 250)")
    parser.add_argument("--all-samples", action="store_true",
                        help="also count samples taken while the thread does "
                             "not hold the GIL (syscalls, and waits for a CPU)")
    parser.add_argument("--py-spy-option", action="append", default=[],
                        metavar="OPTION",
                        help="pass OPTION to py-spy record, e.g. --native; repeatable")
    parser.add_argument("--raw", type=Path, metavar="PATH",
                        help="keep py-spy's collapsed stacks in PATH")
    return parser.parse_args(argv)


def _params(operation: str, client: KmsClient) -> dict:
    if operation == "AsymmetricSign":
        created = client.create_key(key_spec="EC_P256", key_usage="SIGN/VERIFY",
                                    protection_level="HSM")["KeyMetadata"]
        return {"KeyId": created["KeyId"],
                "KeyVersionId": created["PrimaryKeyVersion"],
                "Algorithm": "ECDSA_SHA_256", "Digest": floors.DIGEST}
    if operation == "GetSecretValue":
        client.create_secret("profile-secret", "s" * 32, "v1")
        return {"SecretName": "profile-secret"}
    created = client.create_key(key_spec="Aliyun_AES_256", protection_level="HSM")
    key_id = created["KeyMetadata"]["KeyId"]
    if operation == "Decrypt":
        blob = client.encrypt(key_id, floors.PLAINTEXT)["CiphertextBlob"]
        return {"CiphertextBlob": blob}
    if operation == "GenerateDataKey":
        return {"KeyId": key_id}
    return {"KeyId": key_id, "Plaintext": floors.PLAINTEXT}


def _sampler_command(py_spy: str, args: argparse.Namespace, pid: int,
                     raw_path: Path) -> list[str]:
    options = list(args.py_spy_option)
    # Native stacks need py-spy to pause the server for each sample.
    if "--native" not in options:
        options.append("--nonblocking")
    # Without --gil, py-spy also counts a thread that is runnable but
    # waiting for a CPU, which on a busy machine inflates the category
    # that was running when the server was preempted.
    if not args.all_samples:
        options.append("--gil")
    return [py_spy, "record", "--pid", str(pid),
            "--duration", str(max(1, round(args.seconds))),
            "--rate", str(args.rate), "--format", "raw",
            "--output", str(raw_path), *options]


def profile(args: argparse.Namespace, directory: Path,
            cleanup: contextlib.ExitStack) -> None:
    py_spy = find_py_spy()
    agent = processes.start_agent(directory / "agent")
    cleanup.callback(agent.stop)
    with KmsClient(agent.socket_path) as client:
        params = _params(args.operation, client)
    server = agent
    if args.target == "echo":
        server = processes.start_echo(directory)
        cleanup.callback(server.stop)
    work = load.Load(str(server.socket_path), args.operation, params, args.clients)
    raw_path = args.raw or directory / "profile.txt"
    sampler = subprocess.Popen(
        _sampler_command(py_spy, args, server.pid, raw_path),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    cleanup.callback(sampler.kill)
    sample = load.measure(work, WARMUP_S, args.seconds + ATTACH_SLACK_S, server.pid)
    _, errors = sampler.communicate(timeout=60)
    if sampler.returncode != 0:
        sys.exit(f"py-spy failed: {errors.decode(errors='replace')[-1000:]}")
    _print_table(args, sample, *summarize(raw_path))


def _print_table(args: argparse.Namespace, sample, counts, total: int) -> None:
    requests = len(sample.latencies_ns)
    cpu_us = 1e6 * sample.cpu_s["server"] / requests
    print(f"{args.target} {args.operation} c={args.clients}: "
          f"{requests / sample.window_s:,.0f} ops/s, server CPU {cpu_us:,.0f} us "
          f"per request, {total} samples")
    print(f"{'category':<40}{'share':>8}{'us/request':>12}")
    for category, count in counts.most_common():
        share = count / total
        print(f"{category:<40}{share:>8.1%}{share * cpu_us:>12.1f}")


def main(argv: list[str] | None = None) -> int:
    """Profile the server under load, print the table; return the exit status."""
    args = parse_args(argv)
    with contextlib.ExitStack() as cleanup:
        directory = Path(cleanup.enter_context(
            tempfile.TemporaryDirectory(prefix="kms-bench-profile-")))
        try:
            profile(args, directory, cleanup)
        except KeyboardInterrupt:
            print("interrupted: agent stopped, temporary files removed",
                  file=sys.stderr)
            return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
