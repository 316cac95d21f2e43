"""A Secrets Manager agent for unit tests, called like the wire would.

It runs the real dispatcher, operation table, services and SQLite store
with a FakeKeystore and a FakeClock. The caches' timer follows the fake
clock, so tests move cache time with ``clock.advance``.
"""

from __future__ import annotations

import dataclasses

import trio

from agent.cache.data_keys import DataKeyCache
from agent.config import DataKeyCacheConfig, SecretsConfig
from agent.context import FakeClock, Peer, RequestContext
from agent.daemon import Services, all_operations
from agent.keys.service import KeyService
from agent.keystore.base import KeystoreUnavailable
from agent.rpc.dispatch import Dispatcher
from agent.secrets.service import SecretService
from agent.store.sqlite import SqliteStore
from tests.fakes import FakeKeystore


class FlakyKeystore(FakeKeystore):
    """A FakeKeystore that yields to other tasks and can be made to fail."""

    failing = False
    # When set, decryption waits for this event.
    gate: trio.Event | None = None

    async def decrypt(self, material, iv, ciphertext_with_tag, aad):
        await trio.lowlevel.checkpoint()
        if self.gate is not None:
            await self.gate.wait()
        if self.failing:
            raise KeystoreUnavailable("token removed")
        return await super().decrypt(material, iv, ciphertext_with_tag, aad)

    async def encrypt(self, material, plaintext, aad):
        await trio.lowlevel.checkpoint()
        return await super().encrypt(material, plaintext, aad)


class SecretAgent:
    """Dispatcher, services and store over ``tmp_path``."""

    def __init__(self, tmp_path, secrets: SecretsConfig | None = None,
                 data_keys: DataKeyCacheConfig | None = None, store=None,
                 keystore: FlakyKeystore | None = None, clock: FakeClock | None = None):
        # A second agent on the same database shares the store, the
        # keystore (its domain key) and the clock of the first.
        self.clock = clock or FakeClock()
        self.store = store or SqliteStore(tmp_path / "data")
        self.keystore = keystore or FlakyKeystore()
        self.keys = KeyService(self.store, {"default": self.keystore}, "default",
                               self.clock, "local")
        self.secrets = SecretService(self.store, self.keys, self.clock,
                                     secrets or SecretsConfig(), timer=self.timer)
        limits = data_keys or DataKeyCacheConfig()
        self.data_keys = DataKeyCache(limits.max_age, limits.max_uses,
                                      limits.max_bytes, limits.max_entries,
                                      self.timer)
        self.dispatcher = Dispatcher(all_operations(), Services(
            keys=self.keys, secrets=self.secrets, data_keys=self.data_keys))

    def timer(self) -> float:
        return self.clock.now().timestamp()

    async def call(self, op, **params):
        ctx = RequestContext.new(op, Peer(1000, 1000, 42))
        return await self.dispatcher.handle(ctx, params)

    async def create(self, name="app/db", data="first", version="v1", **params):
        return await self.call("CreateSecret", SecretName=name, VersionId=version,
                               SecretData=data, **params)

    async def put(self, name, version, data, **params):
        return await self.call("PutSecretValue", SecretName=name, VersionId=version,
                               SecretData=data, **params)

    async def value(self, name="app/db", **params):
        return await self.call("GetSecretValue", SecretName=name, **params)

    async def stages(self, name="app/db") -> dict[str, list[str]]:
        reply = await self.call("ListSecretVersionIds", SecretName=name,
                                IncludeDeprecated=True, PageSize=100)
        return {entry["VersionId"]: entry["VersionStages"]["VersionStage"]
                for entry in reply["VersionIds"]["VersionId"]}


def config(**changes) -> SecretsConfig:
    """Return a SecretsConfig with ``changes`` applied."""
    return dataclasses.replace(SecretsConfig(), **changes)


def next_value(secret_name: str, current: bytes) -> str:
    """A rotation entry point for tests: append ``+1`` to the value."""
    return current.decode() + "+1"


def failing_rotator(secret_name: str, current: bytes) -> str:
    """A rotation entry point for tests that fails, quoting the value."""
    raise RuntimeError(f"cannot rotate {current.decode()}")
