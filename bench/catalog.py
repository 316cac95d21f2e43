"""The figures of a run: their names, labels and kinds.

A figure's name is its key in the JSON. Socket loads are named
``OPERATION_cN`` for the agent, ``echo_cN`` for the echo floor and
``PEER_OPERATION_cN`` for a peer, where N is the number of concurrent
clients. Each peer runs the operations its ``bench/peers/client.py``
class lists; ``PEER_OPERATIONS`` maps them to the agent's.
"""

from __future__ import annotations

import dataclasses

CONCURRENCY = (1, 4, 16, 64)
PEERS = ("pykmip", "moto", "openbao")

# Kinds: "rate" (in-process loop, ops_per_s), "load" (closed-loop socket
# load), "stream" (bytes_per_s) and "memory" (rss_bytes).
RATE, LOAD, STREAM, MEMORY = "rate", "load", "stream", "memory"


@dataclasses.dataclass(frozen=True)
class Figure:
    """One figure: JSON name, table label, kind, system and table section."""

    name: str
    label: str
    kind: str
    system: str = "kms-agent"
    operation: str = ""
    clients: int = 0
    section: str = "loads"


# The agent's operations: (name, label, the peers' matching operation).
AGENT_OPERATIONS = (
    ("encrypt", "Encrypt", "encrypt"),
    ("decrypt", "Decrypt", "decrypt"),
    ("generate_data_key", "GenerateDataKey", "generate_data_key"),
    ("sign_rsa2048", "AsymmetricSign RSA_2048", "sign_rsa2048"),
    ("sign_ecp256", "AsymmetricSign EC_P256", "sign_ecp256"),
    ("get_secret_hit", "GetSecretValue cache hit", "get_secret"),
    ("get_secret_miss", "GetSecretValue cache miss", None),
)

PEER_LABELS = {
    "pykmip": {"encrypt": "PyKMIP Encrypt AES-CBC",
               "decrypt": "PyKMIP Decrypt AES-CBC",
               "sign_rsa2048": "PyKMIP Sign RSA-2048"},
    "moto": {"encrypt": "moto Encrypt", "decrypt": "moto Decrypt",
             "generate_data_key": "moto GenerateDataKey",
             "sign_rsa2048": "moto Sign RSA_2048"},
    "openbao": {"encrypt": "OpenBao Transit encrypt",
                "decrypt": "OpenBao Transit decrypt",
                "generate_data_key": "OpenBao Transit datakey",
                "sign_rsa2048": "OpenBao Transit sign RSA-2048",
                "sign_ecp256": "OpenBao Transit sign P-256",
                "get_secret": "OpenBao KV v2 read"},
}

FLOORS = (
    Figure("raw_hsm_encrypt", "raw HSM AES-GCM encrypt", RATE, "floor",
           section="floors"),
    Figure("raw_hsm_sign_rsa2048", "raw HSM RSA_2048 sign", RATE, "floor",
           section="floors"),
    Figure("raw_hsm_sign_ecp256", "raw HSM EC_P256 sign", RATE, "floor",
           section="floors"),
    Figure("raw_aesgcm_encrypt", "raw AESGCM encrypt", RATE, "floor",
           section="floors"),
)
# The order of the table's sections.
SECTIONS = ("floors", "loads", "store", "other")


def load_name(system: str, operation: str, clients: int) -> str:
    """Return the JSON name of a socket load figure."""
    if system == "kms-agent":
        return f"{operation}_c{clients}"
    if system == "echo":
        return f"echo_c{clients}"
    return f"{system}_{operation}_c{clients}"


def echo_figure(clients: int) -> Figure:
    """Return the echo floor's figure at ``clients``."""
    return Figure(load_name("echo", "", clients), f"echo c={clients}", LOAD, "echo",
                  "echo", clients)


def agent_figure(operation: str, label: str, clients: int) -> Figure:
    """Return the agent's figure of ``operation`` at ``clients``."""
    return Figure(load_name("kms-agent", operation, clients),
                  f"{label} c={clients}", LOAD, "kms-agent", operation, clients)


def peer_figure(peer: str, operation: str, clients: int) -> Figure:
    """Return a peer's figure of ``operation`` at ``clients``."""
    return Figure(load_name(peer, operation, clients),
                  f"{PEER_LABELS[peer][operation]} c={clients}", LOAD, peer,
                  operation, clients)


def store_figures(store_keys: int) -> tuple[Figure, ...]:
    """Return the figures of the agent whose store contains ``store_keys`` keys."""
    count = f"{store_keys:,} keys"
    return (
        Figure("encrypt_store_c1", f"Encrypt c=1, {count}", LOAD,
               operation="encrypt", clients=1, section="store"),
        Figure("encrypt_store_c16", f"Encrypt c=16, {count}", LOAD,
               operation="encrypt", clients=16, section="store"),
        Figure("encrypt_store_spread_c16", f"Encrypt c=16, {count}, key per request",
               LOAD, operation="encrypt", clients=16, section="store"),
    )


def file_figures(file_bytes: int) -> tuple[Figure, ...]:
    """Return encrypt-file's figure and its two floors, for a file of ``file_bytes``."""
    size = f"{file_bytes / 2**20:,.0f} MiB"
    return (
        Figure("encrypt_file", f"encrypt-file {size}", STREAM, section="other"),
        Figure("raw_aesgcm_stream", "raw AESGCM 64 KiB chunks", STREAM, "floor",
               section="other"),
        Figure("raw_aesgcm_file", f"raw AESGCM {size} file, fsync", STREAM, "floor",
               section="other"),
    )


def memory_figures(store_keys: int) -> tuple[Figure, ...]:
    """Return the agents' resident memory figures."""
    return (
        Figure("rss_idle", "RSS idle, 10 keys", MEMORY, section="other"),
        Figure("rss_store", f"RSS, {store_keys:,} keys and cached secrets",
               MEMORY, section="other"),
        Figure("rss_after_load", "RSS after the loads, 10 keys", MEMORY,
               section="other"),
    )
