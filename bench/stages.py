"""Measure what the request stages and the HTTP gateway cost: ``python -m bench.stages``.

Part 1 runs Encrypt (32 bytes, AES-256 HSM key) on two agents side by
side: one with the audit trail and quotas on (rates far above the load),
one with both off. Access control cannot be switched off, so the
difference measures audit + quotas; the access stage's own cost is timed
in-process on a real SQLite store. Part 2 runs the same Encrypt over the
socket and through the OpenAPI gateway (ACS3-HMAC-SHA256, keep-alive
connections) of one agent. Every load alternates the systems, and the
table shows the median of the rounds. Processes and temporary
directories are removed on exit.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import http.client
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.gateway import signing  # noqa: E402
from bench import processes  # noqa: E402
from client import KmsClient  # noqa: E402

PLAINTEXT = b"0123456789abcdef0123456789abcdef"
CLIENTS = (1, 16)
KMSCTL = Path(sys.executable).with_name("kmsctl")
LOAD_TIMEOUT_S = 60.0

_ACCESS = """
[principals.bench]
agent_user = true
keystores = ["*"]

[principals.app]
client_key = true
keystores = ["*"]

[policies.bench-everything]
principals = ["bench", "app"]
permissions = ["administrator", "key-user", "secret-user"]
resources = ["key/*", "secret/*", "agent"]
"""
_QUOTAS = "enabled = true\n" + "\n".join(
    f"{bucket}_rate = {processes.QUOTA_RATE}\n{bucket}_burst = {processes.QUOTA_BURST}"
    for bucket in processes.QUOTA_BUCKETS)
_GATEWAY = """
[gateway]
enabled = true
listen = "127.0.0.1:0"
credentials_file = "gateway-credentials.toml"
"""


def write_config(directory: Path, audit: bool, quotas: bool, gateway: bool) -> Path:
    """Write a token and an agent configuration under ``directory``."""
    from agent.keystore import softhsm

    directory.mkdir(mode=0o700, parents=True)
    token = softhsm.init_token(directory / "token", processes.AGENT_TOKEN_LABEL)
    path = directory / "config.toml"
    path.write_text(f"""
[agent]
socket = "agent.sock"
data_dir = "data"
socket_mode = "0600"
{_ACCESS}
[audit]
enabled = {str(audit).lower()}

[quotas]
{_QUOTAS if quotas else "enabled = false"}
{_GATEWAY if gateway else ""}
[log]
level = "info"
format = "json"

[keystores.default]
type = "pkcs11"
module = "{softhsm.find_softhsm_module()}"
token_label = "{token.label}"
pin_file = "{token.pin_file}"
softhsm2_conf = "{token.conf_path}"
""", encoding="utf-8")
    return path


def start(directory: Path, **settings: bool) -> processes.ServerProcess:
    """Start an agent with the given settings and wait until it answers."""
    config = write_config(directory, **settings)
    command = [sys.executable, "-m", "agent", "--config", str(config)]
    return processes.start_unix_server("kms-agent", command,
                                       directory / "agent.sock",
                                       directory / "agent.log")


def create_key(agent: processes.ServerProcess) -> str:
    """Create an AES-256 HSM key on ``agent`` and return its id."""
    with KmsClient(str(agent.socket_path)) as client:
        return client.create_key(key_spec="Aliyun_AES_256",
                                 protection_level="HSM")["KeyMetadata"]["KeyId"]


# --- closed-loop load -------------------------------------------------------


def closed_loop(connect: Callable[[], Callable[[], Any]], clients: int,
                seconds: float, warmup: float) -> list[int]:
    """Run ``clients`` threads that each call in a loop; return window latencies."""
    calls = [connect() for _ in range(clients)]
    start = time.monotonic_ns() + int(warmup * 1e9)
    end = start + int(seconds * 1e9)
    latencies: list[int] = []
    errors: list[BaseException] = []

    def loop(call: Callable[[], Any]) -> None:
        try:
            while (began := time.monotonic_ns()) < end:
                call()
                done = time.monotonic_ns()
                if start <= done <= end:
                    latencies.append(done - began)
        except BaseException as error:  # noqa: BLE001 - re-raised below
            errors.append(error)

    threads = [threading.Thread(target=loop, args=(call,)) for call in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(LOAD_TIMEOUT_S + warmup + seconds)
    if errors:
        raise errors[0]
    return latencies


def summary(latencies: list[int], seconds: float) -> dict[str, float]:
    """Return ops/s and the median latency in microseconds."""
    return {"ops_per_s": len(latencies) / seconds,
            "p50_us": statistics.median(latencies) / 1e3}


def socket_caller(socket_path: str, key_id: str,
                  stack: contextlib.ExitStack) -> Callable[[], Callable[[], Any]]:
    """Return a factory of Encrypt calls, each on its own socket connection."""
    def connect() -> Callable[[], Any]:
        client = stack.enter_context(KmsClient(socket_path))
        return lambda: client.call("Encrypt", KeyId=key_id, Plaintext=PLAINTEXT)
    return connect


# --- gateway ----------------------------------------------------------------


class GatewayClient:
    """Sign and send OpenAPI Encrypt requests on one keep-alive connection."""

    def __init__(self, endpoint: str, key_id: str, secret: str):
        host, port = endpoint.rsplit(":", 1)
        self.endpoint = endpoint
        self.key_id = key_id
        self.secret = secret
        self.connection = http.client.HTTPConnection(host, int(port), timeout=30)

    def call(self, action: str, params: dict[str, str]) -> dict[str, Any]:
        """Send one signed request and return the JSON reply."""
        body = "&".join(f"{signing.percent_encode(name)}="
                        f"{signing.percent_encode(value)}"
                        for name, value in params.items()).encode("ascii")
        headers = self._headers(action, body)
        self.connection.request("POST", "/", body=body, headers=headers)
        response = self.connection.getresponse()
        reply = json.loads(response.read())
        if response.status != 200:
            raise RuntimeError(f"gateway replied {response.status}: {reply}")
        return reply

    def _headers(self, action: str, body: bytes) -> dict[str, str]:
        headers = {
            "host": self.endpoint, "x-acs-action": action,
            "x-acs-version": "2016-01-20",
            "x-acs-date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "x-acs-signature-nonce": uuid.uuid4().hex,
            "x-acs-content-sha256": hashlib.sha256(body).hexdigest(),
            "content-type": "application/x-www-form-urlencoded",
        }
        signed = sorted(headers)
        canonical = signing.acs3_canonical_request(
            "POST", "/", [], {name: [value] for name, value in headers.items()},
            signed, headers["x-acs-content-sha256"])
        headers["authorization"] = (
            f"{signing.ACS3_HMAC_SHA256} Credential={self.key_id},"
            f"SignedHeaders={';'.join(signed)},"
            f"Signature={signing.acs3_signature(self.secret, canonical)}")
        return headers

    def close(self) -> None:
        """Close the connection."""
        self.connection.close()


def gateway_endpoint(agent: processes.ServerProcess) -> str:
    """Return ``host:port`` of the agent's gateway, from its log."""
    deadline = time.monotonic() + processes.START_TIMEOUT_S
    while time.monotonic() < deadline:
        for line in agent.log_path.read_text(errors="replace").splitlines():
            if '"gateway listening"' in line:
                return json.loads(line)["socket"].split(",")[0].split("://", 1)[1]
        time.sleep(0.05)
    raise processes.ServerStartError("the gateway did not report its address")


def create_access_key(directory: Path) -> dict[str, str]:
    """Create an AccessKey for principal ``app`` with kmsctl; return its pair."""
    done = subprocess.run(
        [str(KMSCTL), "gateway", "create-access-key", "--principal", "app",
         "--credentials-file", str(directory / "gateway-credentials.toml")],
        capture_output=True, text=True, timeout=60, check=True)
    return json.loads(done.stdout)


def gateway_caller(endpoint: str, pair: dict[str, str], key_id: str,
                   stack: contextlib.ExitStack) -> Callable[[], Callable[[], Any]]:
    """Return a factory of gateway Encrypt calls, one connection each."""
    params = {"KeyId": key_id, "Plaintext": PLAINTEXT.decode("ascii")}

    def connect() -> Callable[[], Any]:
        client = GatewayClient(endpoint, pair["AccessKeyId"], pair["AccessKeySecret"])
        stack.callback(client.close)
        client.call("Encrypt", params)  # connect and check the credentials
        return lambda: client.call("Encrypt", params)
    return connect


# --- access stage in-process ------------------------------------------------


def access_stage_us(directory: Path, calls: int) -> float:
    """Return the mean microseconds of ``AccessStage.before`` for Encrypt.

    It uses the unit-test agent of ``tests.auth.harness``: the real stage,
    services and SQLite store over an in-memory keystore.
    """
    import trio

    from agent.context import Peer, RequestContext
    from tests.auth.harness import ADMIN, AccessAgent

    async def run() -> float:
        agent = AccessAgent(directory)
        key_id = await agent.new_key()
        operation = agent.dispatcher.operations["Encrypt"]
        peer = Peer(ADMIN, ADMIN, 4000)
        began = time.perf_counter_ns()
        for _ in range(calls):
            ctx = RequestContext.new("Encrypt", peer)
            values = {"KeyId": key_id, "Plaintext": PLAINTEXT}
            await agent.stage.before(ctx, operation, values)
        return (time.perf_counter_ns() - began) / calls / 1e3

    return trio.run(run)


# --- the run ----------------------------------------------------------------


def rounds_of(systems: dict[str, Callable[[int], list[int]]], clients: int,
              args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """Alternate ``systems`` for ``args.rounds`` rounds; return median figures."""
    samples: dict[str, list[dict[str, float]]] = {name: [] for name in systems}
    for _ in range(args.rounds):
        for name, run in systems.items():
            samples[name].append(summary(run(clients), args.seconds))
    return {name: {field: statistics.median(s[field] for s in values)
                   for field in ("ops_per_s", "p50_us")}
            for name, values in samples.items()}


def measure(args: argparse.Namespace, root: Path,
            stack: contextlib.ExitStack) -> dict[str, Any]:
    """Start the agents, run every load and return the figures."""
    full = start(root / "full", audit=True, quotas=True, gateway=True)
    stack.callback(full.stop)
    bare = start(root / "bare", audit=False, quotas=False, gateway=False)
    stack.callback(bare.stop)
    pair = create_access_key(root / "full")
    endpoint = gateway_endpoint(full)
    keys = {"full": create_key(full), "bare": create_key(bare)}

    def load(connect_for: Callable[[contextlib.ExitStack], Any]) -> Any:
        def run(clients: int) -> list[int]:
            with contextlib.ExitStack() as connections:
                return closed_loop(connect_for(connections), clients,
                                   args.seconds, args.warmup)
        return run

    pipeline = {
        "full": load(lambda s: socket_caller(str(full.socket_path), keys["full"], s)),
        "bare": load(lambda s: socket_caller(str(bare.socket_path), keys["bare"], s)),
    }
    gateway = {
        "socket": pipeline["full"],
        "gateway": load(lambda s: gateway_caller(endpoint, pair, keys["full"], s)),
    }
    figures = {"pipeline": {}, "gateway": {}}
    for clients in CLIENTS:
        figures["pipeline"][clients] = rounds_of(pipeline, clients, args)
        figures["gateway"][clients] = rounds_of(gateway, clients, args)
    figures["access_stage_us"] = access_stage_us(root / "stage", args.stage_calls)
    return figures


def format_table(figures: dict[str, Any]) -> str:
    """Return the figures as a Markdown table."""
    lines = ["| figure | c | ops/s | p50 µs | cost µs/request |",
             "|---|---|---|---|---|"]
    for part, base, other, label in (
            ("pipeline", "bare", "full", "audit + quotas"),
            ("gateway", "socket", "gateway", "gateway over socket")):
        for clients, systems in figures[part].items():
            for name in (base, other):
                lines.append(f"| encrypt {part} {name} | {clients} | "
                             f"{systems[name]['ops_per_s']:,.0f} | "
                             f"{systems[name]['p50_us']:,.0f} | |")
            extra = cost_us(systems[base], systems[other])
            lines.append(f"| {label} | {clients} | | | {extra:,.1f} |")
    lines.append(f"| access stage, in-process | 1 | | | "
                 f"{figures['access_stage_us']:,.1f} |")
    return "\n".join(lines)


def cost_us(base: dict[str, float], other: dict[str, float]) -> float:
    """Return the extra microseconds per request, from the throughput."""
    return 1e6 / other["ops_per_s"] - 1e6 / base["ops_per_s"]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.stages",
        description="Measure the cost of audit + quotas, of the access stage "
                    "and of the HTTP gateway on Encrypt.")
    parser.add_argument("--seconds", type=float, default=1.0,
                        help="measured seconds per load and round (default 1)")
    parser.add_argument("--warmup", type=float, default=0.2,
                        help="unmeasured seconds before each load (default 0.2)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds, of which the table shows medians (default 3)")
    parser.add_argument("--stage-calls", type=int, default=2000,
                        help="in-process calls of the access stage (default 2000)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.warmup < 0 or args.rounds < 1 or args.stage_calls < 1:
        parser.error("--seconds must be positive, --warmup not negative, and "
                     "--rounds and --stage-calls at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the measurement, print the table; return the exit status."""
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="kms-bench-stages-") as directory:
        with contextlib.ExitStack() as stack:
            figures = measure(args, Path(directory), stack)
    print(format_table(figures))
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
