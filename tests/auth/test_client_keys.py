"""Client keys: issue, verify, expire, revoke, and use on requests.

The service runs on the real SQLite store with a FakeClock; the request
path goes through the access stage of ``harness.AccessAgent``.
"""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.context import Peer
from client import errors
from client.client_key import ClientKey
from tests.auth.harness import ADMIN, ALICE, STRANGER, AccessAgent

NONCE = b"n" * 32


@pytest.fixture
async def agent(tmp_path):
    instance = AccessAgent(tmp_path)
    yield instance
    await instance.store.aclose()


async def issue(agent, principal="keyed", **params) -> tuple[dict, ClientKey]:
    """Create a client key through the API; return the reply and the key."""
    reply = await agent.call(ADMIN, "CreateClientKey", Principal=principal, **params)
    return reply, ClientKey.from_json(reply)


async def test_issued_key_verifies(agent):
    """A proof signed with the issued key names its principal."""
    reply, key = await issue(agent)
    principal = await agent.control.authenticate(
        Peer(STRANGER, STRANGER, 1), key.client_key_id, NONCE,
        key.sign_challenge(NONCE))
    assert principal.name == "keyed"
    assert reply["ClientKeyId"].startswith("KAAP.")
    assert reply["KeyAlgorithm"] == "Ed25519"


async def test_forged_proof_rejected(agent):
    """A signature by another private key is rejected."""
    _, key = await issue(agent)
    forger = ClientKey(key.client_key_id, Ed25519PrivateKey.generate())
    with pytest.raises(errors.ClientKeyInvalidError):
        await agent.control.authenticate(Peer(STRANGER, STRANGER, 1),
                                         key.client_key_id, NONCE,
                                         forger.sign_challenge(NONCE))


async def test_replayed_proof_rejected(agent):
    """A proof for one nonce does not verify for another."""
    _, key = await issue(agent)
    with pytest.raises(errors.ClientKeyInvalidError):
        await agent.control.authenticate(Peer(STRANGER, STRANGER, 1),
                                         key.client_key_id, b"m" * 32,
                                         key.sign_challenge(NONCE))


async def test_unknown_key_like_forged(agent):
    """An unknown key id fails exactly like a forged signature."""
    key = ClientKey("KAAP.unknown", Ed25519PrivateKey.generate())
    with pytest.raises(errors.ClientKeyInvalidError) as caught:
        await agent.control.authenticate(Peer(STRANGER, STRANGER, 1),
                                         key.client_key_id, NONCE,
                                         key.sign_challenge(NONCE))
    assert caught.value.message == errors.ClientKeyInvalidError.default_message


async def test_expired_key_rejected(agent):
    """A key past NotAfter is rejected with ClientKeyExpired."""
    _, key = await issue(agent, NotAfter="2026-01-02T00:00:00Z")
    agent.clock.advance(days=2)
    with pytest.raises(errors.ClientKeyExpiredError):
        await agent.control.authenticate(Peer(STRANGER, STRANGER, 1),
                                         key.client_key_id, NONCE,
                                         key.sign_challenge(NONCE))


async def test_future_key_rejected(agent):
    """A key before NotBefore is not valid yet."""
    _, key = await issue(agent, NotBefore="2026-06-01T00:00:00Z")
    with pytest.raises(errors.ClientKeyExpiredError):
        await agent.control.authenticate(Peer(STRANGER, STRANGER, 1),
                                         key.client_key_id, NONCE,
                                         key.sign_challenge(NONCE))


async def test_revoked_key_rejected(agent):
    """A revoked key fails its next handshake and its next request."""
    _, key = await issue(agent)
    assert await agent.encrypt(await agent.new_key(), STRANGER,
                               client_key_id=key.client_key_id)
    await agent.call(ADMIN, "RevokeClientKey", ClientKeyId=key.client_key_id)
    with pytest.raises(errors.ClientKeyRevokedError):
        await agent.call(STRANGER, "ListKeys", client_key_id=key.client_key_id)
    with pytest.raises(errors.ClientKeyRevokedError):
        await agent.control.authenticate(Peer(STRANGER, STRANGER, 1),
                                         key.client_key_id, NONCE,
                                         key.sign_challenge(NONCE))


async def test_expiry_applies_to_open_connection(agent):
    """A request after NotAfter fails on a connection verified before."""
    _, key = await issue(agent, NotAfter="2026-01-01T01:00:00Z")
    key_id = await agent.new_key()
    assert await agent.encrypt(key_id, STRANGER, client_key_id=key.client_key_id)
    agent.clock.advance(hours=2)
    with pytest.raises(errors.ClientKeyExpiredError):
        await agent.encrypt(key_id, STRANGER, client_key_id=key.client_key_id)


async def test_key_principal_unix_match(agent):
    """A keyed principal that names uids admits only those uids."""
    agent.principals["keyed"]["uids"] = [ALICE + 100]
    agent.control.reload()
    _, key = await issue(agent)
    with pytest.raises(errors.UnknownCallerError):
        await agent.control.authenticate(Peer(STRANGER, STRANGER, 1),
                                         key.client_key_id, NONCE,
                                         key.sign_challenge(NONCE))
    principal = await agent.control.authenticate(
        Peer(ALICE + 100, 0, 1), key.client_key_id, NONCE, key.sign_challenge(NONCE))
    assert principal.name == "keyed"


async def test_keyless_principal_rejects_keys(agent):
    """Client keys are issued only to principals with client_key = true."""
    with pytest.raises(errors.InvalidParameterError):
        await issue(agent, "alice")
    with pytest.raises(errors.InvalidParameterError):
        await issue(agent, "ghost")


async def test_removed_principal_key_refused(agent):
    """A key whose principal left the configuration is refused."""
    _, key = await issue(agent)
    del agent.principals["keyed"]
    agent.policies.pop("keyed-use")
    agent.control.reload()
    with pytest.raises(errors.UnknownCallerError):
        await agent.call(STRANGER, "ListKeys", client_key_id=key.client_key_id)


@pytest.mark.parametrize("window", [
    {"NotAfter": "2025-12-31T00:00:00Z"},
    {"NotBefore": "2026-02-01T00:00:00Z", "NotAfter": "2026-01-15T00:00:00Z"},
    {"NotAfter": "2040-01-01T00:00:00Z"},
    {"NotBefore": "tomorrow"},
])
async def test_bad_window_rejected(agent, window):
    """Empty, past, over-long or malformed windows are invalid."""
    with pytest.raises(errors.InvalidParameterError):
        await issue(agent, **window)


async def test_list_hides_private_key(agent):
    """ListClientKeys shows state and window, never key material."""
    reply, key = await issue(agent)
    await agent.call(ADMIN, "RevokeClientKey", ClientKeyId=key.client_key_id)
    listed = (await agent.call(ADMIN, "ListClientKeys",
                               Principal="keyed"))["ClientKeys"]["ClientKey"]
    assert [k["ClientKeyId"] for k in listed] == [key.client_key_id]
    assert listed[0]["State"] == "Revoked"
    assert "PrivateKeyData" not in listed[0]
    assert reply["PrivateKeyData"].startswith("-----BEGIN PRIVATE KEY-----")


async def test_revoke_unknown_not_found(agent):
    """Revoking an unknown key id is ResourceNotFound."""
    with pytest.raises(errors.ResourceNotFoundError):
        await agent.call(ADMIN, "RevokeClientKey", ClientKeyId="KAAP.none")


async def test_keyed_caller_scoped(agent):
    """A keyed principal gets only its own grants and keystores."""
    _, key = await issue(agent)
    theirs = await agent.new_key(ADMIN, "tenant-b")
    with pytest.raises(errors.NoPermissionError):
        await agent.encrypt(theirs, STRANGER, client_key_id=key.client_key_id)
    identity = await agent.call(STRANGER, "GetCallerIdentity",
                                client_key_id=key.client_key_id)
    assert identity["Principal"] == "keyed"
    assert identity["ClientKeyId"] == key.client_key_id
