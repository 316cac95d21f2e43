"""DescribeAgentHealth: is the agent live, and ready to serve?

An agent-specific operation with no cloud counterpart, for probes and
``kmsctl health``. A reply means the agent is live. It is ready when a
read from the store succeeds and every keystore is ready, which means
its backend reports ready and returns 16 random bytes when asked. Each keystore and the
store are listed with their own state, so a probe can tell a degraded
agent (one keystore down, the others serving) from a dead one. Reasons
a keystore failed stay in the operator's log, never in the reply.
"""

from __future__ import annotations

import importlib.metadata
import time
from typing import Any, Callable

from agent.context import RequestContext
from agent.keystore.base import Keystore
from agent.rpc.dispatch import READ, Operation
from agent.store.base import Store, StoreError

PROBE_BYTES = 16
READY = "ready"
DEGRADED = "degraded"


def agent_version() -> str:
    """Return the installed version of kms-agent, or "unknown"."""
    try:
        return importlib.metadata.version("kms-agent")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


class HealthService:
    """Probe the keystores and the store of one agent.

    Args:
        keystores: the daemon's keystores by name, the same dict the key
            service uses, so a keystore reopened on SIGHUP is seen.
        store: the metadata store.
        connections: returns the number of open client connections.
    """

    def __init__(self, keystores: dict[str, Keystore], store: Store,
                 connections: Callable[[], int] = lambda: 0,
                 timer: Callable[[], float] = time.monotonic):
        self.keystores = keystores
        self.store = store
        self.connections = connections
        self._timer = timer
        self._started = timer()
        self.socket_activated = False

    async def describe(self) -> dict[str, Any]:
        """Return the health reply, with Alibaba-style field names."""
        keystores = [await self._keystore_health(name, keystore)
                     for name, keystore in sorted(self.keystores.items())]
        store_ready = await self._store_ready()
        ready = store_ready and all(entry["Ready"] for entry in keystores)
        return {
            "Status": READY if ready else DEGRADED,
            "Live": True,
            "Ready": ready,
            "Version": agent_version(),
            "UptimeSeconds": round(self._timer() - self._started, 3),
            "Connections": self.connections(),
            "SocketActivated": self.socket_activated,
            "Store": {"Ready": store_ready},
            "Keystores": {"Keystore": keystores},
        }

    async def _keystore_health(self, name: str, keystore: Keystore) -> dict[str, Any]:
        status = keystore.status()
        ready = bool(status.get("ready", False))
        if ready:
            ready = await _answers_probe(keystore)
        return {"Name": name, "Type": str(status.get("type", "unknown")),
                "Ready": ready}

    async def _store_ready(self) -> bool:
        # Any read through the interface proves the store works, and a key
        # id that cannot exist keeps it to one indexed lookup.
        try:
            await self.store.get_key("health-probe")
        except StoreError:
            return False
        return True


async def _answers_probe(keystore: Keystore) -> bool:
    try:
        random = await keystore.random_bytes(PROBE_BYTES)
    except Exception:  # any failure of the backend means not ready
        return False
    return len(random) == PROBE_BYTES


async def describe_agent_health(services: Any, ctx: RequestContext,
                                values: dict) -> dict:
    return await services.ops.health.describe()


OPERATIONS = [
    Operation("DescribeAgentHealth", describe_agent_health, (),
              permission="kms:DescribeAgentHealth", group=READ),
]
