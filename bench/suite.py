"""The servers, fixtures and measurements of one benchmark run.

``Suite`` starts, under one temporary directory:
- the echo floor and three agents: ``main`` (10 keys, secret cache on),
  ``nocache`` (secret cache off, for GetSecretValue misses) and
  ``store`` (filled with many keys and cached secrets);
- the peers that are installed or can be, each with its client program;
- a SoftHSM2 token of its own for the in-process HSM floors.
A peer that cannot be installed or started is recorded with the reason
and left out. ``Suite.run`` measures every figure once per round, each
agent figure next to the same figure of the floors and peers, and
reverses the order every other round. Closing the suite stops every
child and removes the directory.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import trio

from bench import catalog, files, floors, load, population, processes
from bench.catalog import Figure
from bench.peers import driver as peer_driver
from bench.peers import install, servers
from bench.stats import load_figure
from client import KmsClient

Measurement = Callable[[], dict[str, float]]
MAIN_STORE_KEYS = 10
SECRET_NAME = "bench-secret"
SECRET_DATA = "s" * 32
RSA_ALGORITHM = "RSA_PKCS1_SHA_256"
EC_ALGORITHM = "ECDSA_SHA_256"
# Longer than a run, so cached values stay fresh until the end.
CACHE_TTL_S = 3600.0


class Suite:
    """The servers, floors and measurements of one run; a context manager."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.peers: dict[str, peer_driver.PeerDriver] = {}
        self.unavailable: dict[str, str] = {}
        self.extra: dict[str, dict[str, float]] = {}
        self._cleanup = contextlib.ExitStack()
        self._started = time.monotonic()

    def progress(self, message: str) -> None:
        """Print ``message`` to stderr after the seconds since the suite began."""
        print(f"[{time.monotonic() - self._started:4.0f} s] {message}",
              file=sys.stderr, flush=True)

    def __enter__(self) -> Suite:
        try:
            self._start()
        except BaseException:
            self._cleanup.close()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._cleanup.close()

    def _child(self, server: processes.ServerProcess) -> processes.ServerProcess:
        self._cleanup.callback(server.stop)
        return server

    def _start(self) -> None:
        self.directory = Path(self._cleanup.enter_context(
            tempfile.TemporaryDirectory(prefix="kms-bench-")))
        # The children start before this process loads SoftHSM2, which
        # sets SOFTHSM2_CONF in the environment they would inherit.
        self.progress("starting the echo floor and three agents")
        self.echo = self._child(processes.start_echo(self.directory))
        self.main = self._child(processes.start_agent(
            self.directory / "main", processes.SecretCache(CACHE_TTL_S)))
        self.nocache = self._child(processes.start_agent(
            self.directory / "nocache", processes.SecretCache(ttl_s=0)))
        entries = self.args.store_keys + MAIN_STORE_KEYS
        self.store = self._child(processes.start_agent(
            self.directory / "store",
            processes.SecretCache(CACHE_TTL_S, entries)))
        self._create_fixtures()
        self.extra["rss_idle"] = {"rss_bytes": processes.rss_bytes(self.main.pid)}
        self._fill_store()
        for name in self.args.peers:
            self._start_peer(name)
        self.hsm = floors.HsmFloor(self.directory / "floor-token")
        self._cleanup.callback(self.hsm.close)
        self.source = files.make_sparse_file(self.directory / "plain.bin",
                                             self.args.file_mib * 2**20)

    def _create_fixtures(self) -> None:
        with KmsClient(self.main.socket_path) as client:
            self.key_id = _create(client, "Aliyun_AES_256")["KeyId"]
            self.blob = client.encrypt(self.key_id, floors.PLAINTEXT)["CiphertextBlob"]
            self.rsa = _create(client, "RSA_2048", "SIGN/VERIFY")
            self.ec = _create(client, "EC_P256", "SIGN/VERIFY")
            client.create_secret(SECRET_NAME, SECRET_DATA, "v1")
            count = client.list_keys(page_size=1)["TotalCount"]
            for _ in range(MAIN_STORE_KEYS - count):
                _create(client, "Aliyun_AES_256")
        with KmsClient(self.nocache.socket_path) as client:
            client.create_secret(SECRET_NAME, SECRET_DATA, "v1")

    def _fill_store(self) -> None:
        socket_path = str(self.store.socket_path)
        names = population.secret_names("bench-", self.args.store_keys)
        self.progress(f"filling the store agent: {len(names):,} secrets")
        trio.run(population.create_secrets, socket_path, names)
        missing = self.args.store_keys - trio.run(population.count_keys, socket_path)
        self.progress(f"filling the store agent: {missing:,} keys")
        self.store_key_ids = tuple(trio.run(population.create_aes_keys, socket_path,
                                            missing))
        self.progress("filling the store agent: reading every secret once")
        trio.run(population.read_secrets, socket_path, names)

    def _start_peer(self, name: str) -> None:
        self.progress(f"starting {name}")
        try:
            venv = install.environment(name)
            peer = servers.STARTERS[name](venv, self.directory / name)
            self._cleanup.callback(peer.server.stop)
            client = peer_driver.PeerDriver(peer, self.directory / name / "client.log")
        except (install.InstallError, processes.ServerStartError,
                peer_driver.PeerError, OSError) as error:
            self.unavailable[name] = str(error).splitlines()[0][:300]
            self.progress(f"{name} not measured: {self.unavailable[name]}")
            return
        self._cleanup.callback(client.close)
        self.peers[name] = client

    def schedule(self) -> list[list[tuple[Figure, Measurement]]]:
        """Return the groups of one round: figures to measure side by side."""
        groups = []
        for operation, label, peer_operation in catalog.AGENT_OPERATIONS:
            for clients in self.args.concurrency:
                group = self._floors_of(operation, clients)
                figure = catalog.agent_figure(operation, label, clients)
                group.append((figure, self._agent_load(operation, clients)))
                group += self._peers_of(peer_operation, clients)
                group += self._store_of(operation, clients)
                groups.append(group)
        command, raw, sealed = catalog.file_figures(self.args.file_mib * 2**20)
        groups.append([(command, self._encrypt_file),
                       (raw, lambda: floors.stream_for(self.args.seconds)),
                       (sealed, lambda: files.seal_file(self.source))])
        return groups

    def _floors_of(self, operation: str,
                   clients: int) -> list[tuple[Figure, Measurement]]:
        group: list[tuple[Figure, Measurement]] = []
        if operation == "encrypt":
            group.append((catalog.echo_figure(clients),
                          self._load(self.echo, "Encrypt", self._encrypt_params(),
                                     clients)))
        if clients == 1:
            calls = {
                "encrypt": [("raw_hsm_encrypt", self.hsm.encrypt),
                            ("raw_aesgcm_encrypt", floors.software_encrypt())],
                "sign_rsa2048": [("raw_hsm_sign_rsa2048", self.hsm.sign_rsa)],
                "sign_ecp256": [("raw_hsm_sign_ecp256", self.hsm.sign_ec)],
            }
            by_name = {figure.name: figure for figure in catalog.FLOORS}
            for name, call in calls.get(operation, []):
                group.append((by_name[name], self._rate(call)))
        return group

    def _rate(self, call: Callable[[], object]) -> Measurement:
        return lambda: floors.run_for(call, self.args.warmup, self.args.seconds)

    def _peers_of(self, operation: str | None,
                  clients: int) -> list[tuple[Figure, Measurement]]:
        group = []
        for name, client in self.peers.items():
            if operation in client.operations:
                group.append((catalog.peer_figure(name, operation, clients),
                              self._peer_load(client, operation, clients)))
        return group

    def _store_of(self, operation: str,
                  clients: int) -> list[tuple[Figure, Measurement]]:
        if operation != "encrypt" or clients not in (1, 16):
            return []
        figures = {figure.name: figure
                   for figure in catalog.store_figures(self.args.store_keys)}
        params = {"KeyId": self.store_key_ids[0], "Plaintext": floors.PLAINTEXT}
        group = [(figures[f"encrypt_store_c{clients}"],
                  self._load(self.store, "Encrypt", params, clients))]
        if clients == 16:
            group.append((figures["encrypt_store_spread_c16"],
                          self._load(self.store, "Encrypt", params, clients,
                                     self.store_key_ids)))
        return group

    def _encrypt_params(self) -> dict[str, Any]:
        return {"KeyId": self.key_id, "Plaintext": floors.PLAINTEXT}

    def _agent_load(self, operation: str, clients: int) -> Measurement:
        sign = {"Digest": floors.DIGEST}
        requests = {
            "encrypt": (self.main, "Encrypt", self._encrypt_params()),
            "decrypt": (self.main, "Decrypt", {"CiphertextBlob": self.blob}),
            "generate_data_key": (self.main, "GenerateDataKey",
                                  {"KeyId": self.key_id}),
            "sign_rsa2048": (self.main, "AsymmetricSign",
                             dict(sign, **self.rsa, Algorithm=RSA_ALGORITHM)),
            "sign_ecp256": (self.main, "AsymmetricSign",
                            dict(sign, **self.ec, Algorithm=EC_ALGORITHM)),
            "get_secret_hit": (self.main, "GetSecretValue",
                               {"SecretName": SECRET_NAME}),
            "get_secret_miss": (self.nocache, "GetSecretValue",
                                {"SecretName": SECRET_NAME}),
        }
        server, name, params = requests[operation]
        return self._load(server, name, params, clients)

    def _load(self, server: processes.ServerProcess, operation: str,
              params: dict[str, Any], clients: int,
              key_ids: tuple[str, ...] = ()) -> Measurement:
        work = load.Load(str(server.socket_path), operation, params, clients, key_ids)

        def measure() -> dict[str, float]:
            sample = load.measure(work, self.args.warmup, self.args.seconds,
                                  server.pid, self.args.client_processes)
            return load_figure(sample)

        return measure

    def _peer_load(self, client: peer_driver.PeerDriver, operation: str,
                   clients: int) -> Measurement:
        def measure() -> dict[str, float]:
            sample = peer_driver.measure(client, operation, clients,
                                         self.args.warmup, self.args.seconds)
            return load_figure(sample)

        return measure

    def _encrypt_file(self) -> dict[str, float]:
        return files.encrypt_file(self.main.socket_path, self.key_id, self.source)

    def run(self) -> dict[str, list[dict[str, Any]]]:
        """Measure every figure once per round; return the rounds by name.

        A figure whose measurement fails gets ``{"error": message}`` for
        that round, and the run goes on.
        """
        groups = self.schedule()
        self.order = [figure for group in groups for figure, _ in group]
        rounds: dict[str, list[dict[str, Any]]] = {f.name: [] for f in self.order}
        for number in range(self.args.rounds):
            flat = [entry for group in groups for entry in group]
            for figure, measure in flat if number % 2 == 0 else reversed(flat):
                rounds[figure.name].append(_measure_one(figure, measure))
                self.progress(f"round {number + 1}/{self.args.rounds}  "
                          f"{_describe(figure, rounds[figure.name][-1])}")
        return rounds

    def finish(self) -> dict[str, Any]:
        """Measure memory and read the cache counters after the rounds.

        Returns the memory figures and the agents' cache statistics.
        """
        self.extra["rss_store"] = {"rss_bytes": processes.rss_bytes(self.store.pid)}
        self.extra["rss_after_load"] = {
            "rss_bytes": processes.rss_bytes(self.main.pid)}
        caches = {}
        for name, agent in (("main", self.main), ("nocache", self.nocache),
                            ("store", self.store)):
            with KmsClient(agent.socket_path) as client:
                caches[name] = client.describe_agent_cache()["SecretValueCache"]
        return {"figures": self.extra, "secret_caches": caches}


def _create(client: KmsClient, key_spec: str, usage: str | None = None) -> dict:
    # Return the KeyId and KeyVersionId of a new HSM key.
    created = client.create_key(key_spec=key_spec, key_usage=usage,
                                protection_level="HSM")["KeyMetadata"]
    return {"KeyId": created["KeyId"], "KeyVersionId": created["PrimaryKeyVersion"]}


def _measure_one(figure: Figure, measure: Measurement) -> dict[str, Any]:
    try:
        return measure()
    except Exception as error:  # noqa: BLE001 - recorded, and the run goes on
        return {"error": f"{type(error).__name__}: {error}".splitlines()[0][:300]}


def _describe(figure: Figure, values: dict[str, Any]) -> str:
    if "error" in values:
        return f"{figure.name:<34} failed: {values['error']}"
    if "bytes_per_s" in values:
        return f"{figure.name:<34}{values['bytes_per_s'] / 1e6:>12,.0f} MB/s"
    return f"{figure.name:<34}{values['ops_per_s']:>12,.0f} ops/s"

