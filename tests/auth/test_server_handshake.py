"""The handshake on a real socket: callers admitted, refused, or keyed.

A ``Server`` with the access stage serves ``harness.AccessAgent`` on a
Unix socket under tmp_path, and the real clients connect from this
process, so the kernel reports this process's uid to the server.
"""

from __future__ import annotations

import contextlib
import os

import pytest
import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.rpc.server import Server, bind_socket
from client import errors
from client.aio import AsyncKmsClient
from client.client_key import ClientKey
from client.sync import KmsClient
from tests.auth.harness import AccessAgent

ME = os.getuid()


@contextlib.asynccontextmanager
async def serving(tmp_path, principals):
    """Serve an AccessAgent whose principals are ``principals``."""
    agent = AccessAgent(tmp_path, principals=principals, policies={})
    path = tmp_path / "agent.sock"
    server = Server(bind_socket(path, 0o600, None), agent.dispatcher, 262144,
                    agent.control)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(server.serve)
            yield agent, str(path)
            nursery.cancel_scope.cancel()
    finally:
        await agent.store.aclose()


def me_admitted() -> dict:
    return {"me": {"uids": [ME], "keystores": ["*"]},
            "keyed": {"client_key": True, "keystores": ["tenant-a"]}}


def me_unknown() -> dict:
    return {"other": {"uids": [ME + 1], "keystores": ["*"]},
            "keyed": {"client_key": True, "keystores": ["tenant-a"]}}


async def issue_key(agent, **window) -> ClientKey:
    record, pem = await agent.control.client_keys.create(
        agent.control.config.principals["keyed"], window.get("not_before"),
        window.get("not_after"))
    return ClientKey.from_json({"ClientKeyId": record.client_key_id,
                                "PrivateKeyData": pem})


async def test_known_caller_welcomed(tmp_path):
    """A caller whose uid names a principal is welcomed."""
    async with serving(tmp_path, me_admitted()) as (_, path):
        async with AsyncKmsClient(path) as client:
            identity = await client.call("GetCallerIdentity")
    assert identity["Principal"] == "me"
    assert identity["Uid"] == ME


async def test_unknown_caller_refused(tmp_path):
    """A caller that matches no principal is refused before the welcome."""
    async with serving(tmp_path, me_unknown()) as (_, path):
        with pytest.raises(errors.UnknownCallerError) as caught:
            async with AsyncKmsClient(path):
                pass
    assert caught.value.http_status == 403


async def test_unknown_caller_refused_sync(tmp_path):
    """The blocking client gets the same typed refusal."""
    async with serving(tmp_path, me_unknown()) as (_, path):
        with pytest.raises(errors.UnknownCallerError):
            await trio.to_thread.run_sync(
                lambda: KmsClient(path).call("ListKeys"))


async def test_client_key_admits_caller(tmp_path):
    """A valid client key admits a caller its uid alone would not."""
    async with serving(tmp_path, me_unknown()) as (agent, path):
        key = await issue_key(agent)
        async with AsyncKmsClient(path, client_key=key) as client:
            identity = await client.call("GetCallerIdentity")
    assert identity["Principal"] == "keyed"
    assert identity["ClientKeyId"] == key.client_key_id


async def test_client_key_sync_client(tmp_path):
    """The blocking client proves its key too."""
    async with serving(tmp_path, me_unknown()) as (agent, path):
        key = await issue_key(agent)
        identity = await trio.to_thread.run_sync(
            lambda: KmsClient(path, client_key=key).call("GetCallerIdentity"))
    assert identity["Principal"] == "keyed"


async def test_forged_key_refused(tmp_path):
    """A key id with the wrong private key is refused at handshake."""
    async with serving(tmp_path, me_admitted()) as (agent, path):
        issued = await issue_key(agent)
        forged = ClientKey(issued.client_key_id, Ed25519PrivateKey.generate())
        with pytest.raises(errors.ClientKeyInvalidError):
            async with AsyncKmsClient(path, client_key=forged):
                pass


async def test_revoked_key_refused(tmp_path):
    """A revoked key is refused at handshake."""
    async with serving(tmp_path, me_unknown()) as (agent, path):
        key = await issue_key(agent)
        await agent.control.client_keys.revoke(key.client_key_id)
        with pytest.raises(errors.ClientKeyRevokedError):
            async with AsyncKmsClient(path, client_key=key):
                pass


async def test_expired_key_refused(tmp_path):
    """A key past NotAfter is refused at handshake."""
    async with serving(tmp_path, me_unknown()) as (agent, path):
        key = await issue_key(agent, not_after="2026-01-01T12:00:00Z")
        agent.clock.advance(days=1)
        with pytest.raises(errors.ClientKeyExpiredError):
            async with AsyncKmsClient(path, client_key=key):
                pass


async def test_revocation_hits_open_connection(tmp_path):
    """Requests on a connection fail once its key is revoked."""
    async with serving(tmp_path, me_unknown()) as (agent, path):
        key = await issue_key(agent)
        async with AsyncKmsClient(path, client_key=key) as client:
            await client.call("GetCallerIdentity")
            await agent.control.client_keys.revoke(key.client_key_id)
            with pytest.raises(errors.ClientKeyRevokedError):
                await client.call("GetCallerIdentity")

