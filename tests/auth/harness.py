"""An agent with access control for unit tests, called like the wire would.

It runs the real dispatcher, operation table, access stage, services and
SQLite store over two FakeKeystores (``tenant-a``, the default, and
``tenant-b``) and a FakeClock. Callers are named by uid; the principals
below match them by uid, so no Unix account is needed.
"""

from __future__ import annotations

import copy

from agent.auth.client_keys import ClientKeyService
from agent.auth.control import AccessControl
from agent.auth.policy import parse_access
from agent.auth.stage import AccessStage
from agent.config import SecretsConfig
from agent.context import FakeClock, Peer, RequestContext
from agent.daemon import Services, all_operations
from agent.keys.service import KeyService
from agent.rpc.dispatch import Dispatcher, Operation
from agent.secrets.service import SecretService
from agent.store.sqlite import SqliteStore
from tests.fakes import FakeKeystore

ADMIN = 0
ALICE = 1001
BOB = 1002
NOBODY_GRANTED = 1003
CAROL = 1004
STRANGER = 4242

PRINCIPALS = {
    "admin": {"uids": [ADMIN], "keystores": ["*"]},
    "alice": {"uids": [ALICE], "keystores": ["tenant-a"]},
    "bob": {"uids": [BOB], "keystores": ["tenant-b"]},
    "idle": {"uids": [NOBODY_GRANTED], "keystores": ["*"]},
    "carol": {"uids": [CAROL], "keystores": ["tenant-a"]},
    "keyed": {"client_key": True, "keystores": ["tenant-a"]},
}

POLICIES = {
    "admin-everything": {"principals": ["admin"],
                         "permissions": ["administrator", "key-user", "secret-user"],
                         "resources": ["key/*", "secret/*", "agent"]},
    "alice-tenant": {"principals": ["alice"],
                     "permissions": ["administrator", "key-user", "secret-user"],
                     "resources": ["key/*", "secret/*"]},
    "bob-tenant": {"principals": ["bob"],
                   "permissions": ["administrator", "key-user", "secret-user"],
                   "resources": ["key/*", "secret/*"]},
    "keyed-use": {"principals": ["keyed"], "permissions": ["key-user"],
                  "resources": ["key/*"]},
}


async def _frobnicate(services, ctx, values):
    return {"Done": True}


# An operation with no entry in the rules table.
UNMAPPED_OPERATION = Operation("Frobnicate", _frobnicate)


class AccessAgent:
    """Dispatcher with the access stage, services and store over tmp_path."""

    def __init__(self, tmp_path, principals=None, policies=None):
        self.clock = FakeClock()
        self.store = SqliteStore(tmp_path / "data")
        self.keystores = {"tenant-a": FakeKeystore("tenant-a"),
                          "tenant-b": FakeKeystore("tenant-b")}
        self.keys = KeyService(self.store, self.keystores, "tenant-a", self.clock,
                               "local")
        self.secrets = SecretService(self.store, self.keys, self.clock,
                                     SecretsConfig(),
                                     timer=lambda: self.clock.now().timestamp())
        self.principals = copy.deepcopy(PRINCIPALS if principals is None
                                        else principals)
        self.policies = copy.deepcopy(POLICIES if policies is None else policies)
        self.control = AccessControl(self.load(), ClientKeyService(self.store,
                                                                   self.clock),
                                     self.load)
        self.services = Services(keys=self.keys, secrets=self.secrets,
                                 auth=self.control)
        self.stage = AccessStage(self.control, self.services)
        self.dispatcher = Dispatcher([*all_operations(), UNMAPPED_OPERATION],
                                     self.services, stages=[self.stage])

    def load(self):
        """Parse the current principals and policies, as a reload would."""
        return parse_access(self.principals, self.policies, set(self.keystores))

    async def call(self, uid, op, client_key_id=None, **params):
        """Call ``op`` as a process of ``uid``."""
        ctx = RequestContext.new(op, Peer(uid, uid, 4000 + uid),
                                 client_key_id=client_key_id)
        return await self.dispatcher.handle(ctx, params)

    async def new_key(self, uid=ADMIN, keystore="tenant-a", **params):
        """Create a key in ``keystore`` and return its id."""
        reply = await self.call(uid, "CreateKey", DKMSInstanceId=keystore, **params)
        return reply["KeyMetadata"]["KeyId"]

    async def encrypt(self, key_id, uid=ADMIN, plaintext=b"data", **params):
        """Encrypt under ``key_id`` and return the blob."""
        reply = await self.call(uid, "Encrypt", KeyId=key_id, Plaintext=plaintext,
                                **params)
        return reply["CiphertextBlob"]
