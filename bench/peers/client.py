"""Closed-loop clients of one peer key server, run in that peer's virtualenv.

``python bench/peers/client.py SYSTEM SETTINGS_JSON`` creates its
fixtures on the server (keys, a ciphertext, a secret), prints one JSON
line, then serves commands, one JSON line in and one out:

- ``{"command": "prepare", "operation": OP, "clients": N}`` opens N
  clients, each with its own connection;
- ``{"command": "run", "window": [LOAD_NS, START_NS, END_NS]}`` runs the
  prepared clients, one thread each, from LOAD_NS until END_NS, and
  returns the latencies of requests completed between START_NS and END_NS
  (``time.monotonic_ns()``, one clock for every process of the machine);
- ``{"command": "exit"}`` ends the process.

Each thread sends one request, awaits the reply and sends the next. A
failed request ends that thread and is reported with the latencies.
This file imports only the standard library and the peer's own client
library, since the peer's virtualenv contains nothing else.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import sys
import threading
import time

PLAINTEXT = bytes(range(32))
DIGEST = hashlib.sha256(b"kms-agent benchmark").digest()
SECRET_VALUE = "s" * 32
# A request that hangs this long ends the load as a failure.
REQUEST_TIMEOUT_S = 30.0


class PeerError(Exception):
    """A peer server rejected a request."""


class OpenBao:
    """OpenBao's Transit engine and KV v2 over HTTP/1.1 with keep-alive."""

    operations = ("encrypt", "decrypt", "generate_data_key", "sign_rsa2048",
                  "sign_ecp256", "get_secret")

    def __init__(self, settings: dict):
        self.settings = settings
        connection = self.connect()
        connection.post("/v1/sys/mounts/transit", {"type": "transit"})
        for name, key_type in (("aes", "aes256-gcm96"), ("rsa", "rsa-2048"),
                               ("ec", "ecdsa-p256")):
            connection.post(f"/v1/transit/keys/bench-{name}", {"type": key_type})
        encrypted = connection.post("/v1/transit/encrypt/bench-aes",
                                    {"plaintext": _b64(PLAINTEXT)})
        self.ciphertext = encrypted["data"]["ciphertext"]
        connection.post("/v1/secret/data/bench-secret",
                        {"data": {"value": SECRET_VALUE}})
        connection.close()

    def connect(self) -> _HttpClient:
        """Return a new client on its own connection."""
        return _HttpClient(self.settings["port"], self.settings["token"])

    def request(self, operation: str):
        """Return a function that sends one ``operation`` on a client."""
        bodies = {
            "encrypt": ("/v1/transit/encrypt/bench-aes",
                        {"plaintext": _b64(PLAINTEXT)}),
            "decrypt": ("/v1/transit/decrypt/bench-aes",
                        {"ciphertext": self.ciphertext}),
            "generate_data_key": ("/v1/transit/datakey/plaintext/bench-aes",
                                  {"bits": 256}),
            "sign_rsa2048": ("/v1/transit/sign/bench-rsa/sha2-256",
                             {"input": _b64(DIGEST), "prehashed": True,
                              "signature_algorithm": "pkcs1v15"}),
            "sign_ecp256": ("/v1/transit/sign/bench-ec/sha2-256",
                            {"input": _b64(DIGEST), "prehashed": True}),
        }
        if operation == "get_secret":
            return lambda client: client.get("/v1/secret/data/bench-secret")
        path, body = bodies[operation]
        return lambda client: client.post(path, body)


class _HttpClient:
    """One keep-alive HTTP connection to 127.0.0.1 with a Vault-style token."""

    def __init__(self, port: int, token: str):
        self.connection = http.client.HTTPConnection(
            "127.0.0.1", port, timeout=REQUEST_TIMEOUT_S)
        self.headers = {"X-Vault-Token": token, "Content-Type": "application/json"}

    def post(self, path: str, body: dict) -> dict:
        """Send a POST with a JSON body; return the JSON reply."""
        return self._send("POST", path, json.dumps(body))

    def get(self, path: str) -> dict:
        """Send a GET; return the JSON reply."""
        return self._send("GET", path, None)

    def _send(self, method: str, path: str, body: str | None) -> dict:
        self.connection.request(method, path, body, self.headers)
        response = self.connection.getresponse()
        data = response.read()
        if response.status >= 300:
            raise PeerError(f"{method} {path}: HTTP {response.status} {data[:200]!r}")
        return json.loads(data) if data else {}

    def close(self) -> None:
        """Close the connection."""
        self.connection.close()


class Moto:
    """The moto server's KMS endpoint through boto3, one client per thread."""

    operations = ("encrypt", "decrypt", "generate_data_key", "sign_rsa2048")

    def __init__(self, settings: dict):
        import boto3
        from botocore.config import Config

        self.settings = settings
        # Dummy credentials and region, so boto3 looks for none elsewhere.
        self.session = boto3.session.Session(
            aws_access_key_id="bench", aws_secret_access_key="bench",
            region_name="us-east-1")
        self.config = Config(retries={"max_attempts": 1},
                             read_timeout=REQUEST_TIMEOUT_S)
        self.pool: list = []
        kms = self.connect()
        created = kms.create_key(KeySpec="SYMMETRIC_DEFAULT")
        self.key_id = created["KeyMetadata"]["KeyId"]
        created = kms.create_key(KeySpec="RSA_2048", KeyUsage="SIGN_VERIFY")
        self.rsa_key_id = created["KeyMetadata"]["KeyId"]
        encrypted = kms.encrypt(KeyId=self.key_id, Plaintext=PLAINTEXT)
        self.blob = encrypted["CiphertextBlob"]
        self.pool.append(kms)

    def connect(self):
        """Return a boto3 KMS client, reusing one a finished load left."""
        if self.pool:
            return self.pool.pop()
        return self.session.client("kms", endpoint_url=self.settings["endpoint"],
                                   config=self.config)

    def release(self, client) -> None:
        """Keep ``client`` for the next load, since creating one takes long."""
        self.pool.append(client)

    def request(self, operation: str):
        """Return a function that sends one ``operation`` on a client."""
        if operation == "encrypt":
            return lambda kms: kms.encrypt(KeyId=self.key_id, Plaintext=PLAINTEXT)
        if operation == "decrypt":
            return lambda kms: kms.decrypt(CiphertextBlob=self.blob)
        if operation == "generate_data_key":
            return lambda kms: kms.generate_data_key(KeyId=self.key_id,
                                                     NumberOfBytes=32)
        return lambda kms: kms.sign(
            KeyId=self.rsa_key_id, Message=DIGEST, MessageType="DIGEST",
            SigningAlgorithm="RSASSA_PKCS1_V1_5_SHA_256")


class PyKmip:
    """The PyKMIP server over mutual TLS; AES-CBC, since it cannot do GCM."""

    operations = ("encrypt", "decrypt", "sign_rsa2048")

    def __init__(self, settings: dict):
        from kmip import enums

        self.settings = settings
        self.cbc = {
            "cryptographic_algorithm": enums.CryptographicAlgorithm.AES,
            "block_cipher_mode": enums.BlockCipherMode.CBC,
            "padding_method": enums.PaddingMethod.PKCS5,
        }
        self.rsa = {
            "cryptographic_algorithm": enums.CryptographicAlgorithm.RSA,
            "hashing_algorithm": enums.HashingAlgorithm.SHA_256,
            "padding_method": enums.PaddingMethod.PKCS1v15,
        }
        client = self.connect()
        usage = enums.CryptographicUsageMask
        self.key_id = client.create(enums.CryptographicAlgorithm.AES, 256,
                                    cryptographic_usage_mask=[usage.ENCRYPT,
                                                              usage.DECRYPT])
        client.activate(self.key_id)
        _, self.rsa_key_id = client.create_key_pair(
            enums.CryptographicAlgorithm.RSA, 2048,
            public_usage_mask=[usage.VERIFY], private_usage_mask=[usage.SIGN])
        client.activate(self.rsa_key_id)
        self.ciphertext, self.iv = self._encrypt(client)
        client.close()

    def connect(self):
        """Return a new, open PyKMIP client with its own TLS connection."""
        from kmip.pie.client import ProxyKmipClient

        settings = self.settings
        client = ProxyKmipClient(
            hostname="127.0.0.1", port=settings["port"], cert=settings["cert"],
            key=settings["key"], ca=settings["ca"], ssl_version="PROTOCOL_TLSv1_2",
            config_file=settings["config_file"])
        client.open()
        return client

    def _encrypt(self, client):
        return client.encrypt(PLAINTEXT, uid=self.key_id,
                              cryptographic_parameters=dict(self.cbc, random_iv=True))

    def request(self, operation: str):
        """Return a function that sends one ``operation`` on a client."""
        if operation == "encrypt":
            return self._encrypt
        if operation == "decrypt":
            return lambda client: client.decrypt(
                self.ciphertext, uid=self.key_id,
                cryptographic_parameters=self.cbc, iv_counter_nonce=self.iv)
        return lambda client: client.sign(PLAINTEXT, uid=self.rsa_key_id,
                                          cryptographic_parameters=self.rsa)


SYSTEMS = {"openbao": OpenBao, "moto": Moto, "pykmip": PyKmip}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


class Runner:
    """The prepared clients of the next load and the loop that drives them."""

    def __init__(self, system):
        self.system = system
        self.clients: list = []
        self.operation = ""

    def prepare(self, operation: str, clients: int) -> dict:
        """Open ``clients`` clients for ``operation``."""
        if operation not in self.system.operations:
            raise PeerError(f"operation {operation!r} is not benchmarked here")
        self.operation = operation
        self.clients = [self.system.connect() for _ in range(clients)]
        return {"prepared": clients}

    def run(self, window: list[int]) -> dict:
        """Run the prepared clients in ``window``; close them; return the results."""
        call = self.system.request(self.operation)
        latencies: list[int] = []
        errors: list[str] = []
        threads = [threading.Thread(target=_client_loop,
                                    args=(call, client, window, latencies, errors))
                   for client in self.clients]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for client in self.clients:
            self._finish(client)
        self.clients = []
        return {"latencies_ns": latencies, "errors": len(errors),
                "first_error": errors[0] if errors else None}

    def _finish(self, client) -> None:
        release = getattr(self.system, "release", None)
        if release is not None:
            release(client)
            return
        try:
            client.close()
        except Exception:  # noqa: BLE001 - closing a broken client may fail too
            pass


def _client_loop(call, client, window: list[int], latencies: list[int],
                 errors: list[str]) -> None:
    load_ns, start_ns, end_ns = window
    while time.monotonic_ns() < load_ns:
        time.sleep(max(0.0, min(0.01, (load_ns - time.monotonic_ns()) / 1e9)))
    while True:
        started = time.monotonic_ns()
        if started >= end_ns:
            return
        try:
            call(client)
        except Exception as error:  # noqa: BLE001 - any failure ends the client
            errors.append(f"{type(error).__name__}: {error}"[:300])
            return
        finished = time.monotonic_ns()
        if start_ns <= finished <= end_ns:
            latencies.append(finished - started)


def _reply(message: dict) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def serve(runner: Runner) -> None:
    """Run commands from stdin, one reply each, until ``exit`` or end of input."""
    for line in sys.stdin:
        command = json.loads(line)
        name = command.get("command")
        try:
            if name == "prepare":
                _reply(runner.prepare(command["operation"], command["clients"]))
            elif name == "run":
                _reply(runner.run(command["window"]))
            elif name == "exit":
                return
            else:
                _reply({"error": f"unknown command {name!r}"})
        except Exception as error:  # noqa: BLE001 - reported to the benchmark
            _reply({"error": f"{type(error).__name__}: {error}"[:500]})


def main(argv: list[str]) -> int:
    """Create the fixtures of the system in ``argv``, then serve commands."""
    system_name, settings = argv[1], json.loads(argv[2])
    try:
        system = SYSTEMS[system_name](settings)
    except Exception as error:  # noqa: BLE001 - reported to the benchmark
        _reply({"error": f"setup failed: {type(error).__name__}: {error}"[:500]})
        return 1
    _reply({"ready": True, "operations": list(system.operations)})
    serve(Runner(system))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
