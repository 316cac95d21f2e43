"""Tests of the client key handshake in ``client.wire`` and ``client.client_key``.

Client and server ``Connection`` objects run back to back through hello,
challenge, proof and welcome, and every out-of-order frame is checked.
"""

from __future__ import annotations

import json
import os
import struct

import msgpack
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from client import errors
from client.client_key import ClientKey, resolve_client_key
from client.wire import (
    Challenge, Connection, Hello, LocalProtocolError, Proof, ProtocolError,
    Request, Role, Welcome, client_key_proof_message,
)

KEY_ID = "KAAP.0b6f2c1e-5d0c-4d55-9a43-1b8d1a4b2f10"
NONCE = bytes(range(32))


def message_frame(message) -> bytes:
    """Frame a message packed independently of ``client.wire``."""
    payload = msgpack.packb(message, use_bin_type=True)
    return struct.pack(">I", len(payload)) + payload


def challenged_pair() -> tuple[Connection, Connection]:
    """Return a client and server that exchanged a keyed hello and a challenge."""
    client = Connection(Role.CLIENT)
    server = Connection(Role.SERVER)
    server.receive_data(client.send(Hello(client_key_id=KEY_ID)))
    hello = server.next_event()
    assert hello.client_key_id == KEY_ID
    client.receive_data(server.send(Challenge(NONCE)))
    assert client.next_event() == Challenge(NONCE)
    return client, server


def test_keyed_handshake_completes():
    """Hello, challenge, proof and welcome leave both sides ready."""
    client, server = challenged_pair()
    server.receive_data(client.send(Proof(b"signature")))
    assert server.next_event() == Proof(b"signature")
    client.receive_data(server.send(Welcome()))
    assert isinstance(client.next_event(), Welcome)
    assert client.send(Request(1, "Encrypt", {}))


def test_hello_without_key_unchanged():
    """A hello that names no key carries no client_key_id field."""
    data = Connection(Role.CLIENT).send(Hello())
    assert "client_key_id" not in msgpack.unpackb(data[4:])


def test_request_before_proof_fatal():
    """A request sent after the challenge but before the proof ends the stream."""
    _, server = challenged_pair()
    server.receive_data(message_frame(
        {"type": "request", "id": 1, "op": "Encrypt", "params": {}}))
    event = server.next_event()
    assert isinstance(event, ProtocolError)
    assert event.fatal


def test_proof_without_challenge_fatal():
    """A proof the server did not ask for ends the stream."""
    client = Connection(Role.CLIENT)
    server = Connection(Role.SERVER)
    server.receive_data(client.send(Hello()))
    server.next_event()
    server.receive_data(message_frame({"type": "proof", "signature": b"x"}))
    event = server.next_event()
    assert isinstance(event, ProtocolError)
    assert event.fatal


def test_second_proof_fatal():
    """Only one proof is accepted per connection."""
    client, server = challenged_pair()
    server.receive_data(client.send(Proof(b"one")))
    server.next_event()
    server.receive_data(message_frame({"type": "proof", "signature": b"two"}))
    assert server.next_event().fatal


@pytest.mark.parametrize("signature", ["text", b"", b"x" * 1025, None])
def test_bad_proof_signature_fatal(signature):
    """A proof signature must be 1 to 1024 bytes of bin."""
    _, server = challenged_pair()
    server.receive_data(message_frame({"type": "proof", "signature": signature}))
    event = server.next_event()
    assert isinstance(event.error, errors.ParseRequestError)
    assert event.fatal


@pytest.mark.parametrize("key_id", ["", "x" * 129, "tab\there", 7, "ключ"])
def test_bad_hello_key_id_fatal(key_id):
    """client_key_id must be 1 to 128 printable ASCII characters."""
    server = Connection(Role.SERVER)
    server.receive_data(message_frame(
        {"type": "hello", "versions": [1], "client": "x", "client_key_id": key_id}))
    event = server.next_event()
    assert isinstance(event.error, errors.ParseRequestError)
    assert event.fatal


def test_welcome_waits_for_proof():
    """The server side cannot send the welcome before the proof arrived."""
    _, server = challenged_pair()
    with pytest.raises(LocalProtocolError):
        server.send(Welcome())


def test_challenge_needs_keyed_hello():
    """A server cannot challenge a hello that named no key."""
    server = Connection(Role.SERVER)
    server.receive_data(Connection(Role.CLIENT).send(Hello()))
    server.next_event()
    with pytest.raises(LocalProtocolError):
        server.send(Challenge(NONCE))


def test_unasked_challenge_fatal_for_client():
    """A client that named no key rejects a challenge."""
    client = Connection(Role.CLIENT)
    client.send(Hello())
    client.receive_data(message_frame({"type": "challenge", "nonce": NONCE}))
    event = client.next_event()
    assert isinstance(event.error, errors.InternalFailureError)
    assert event.fatal


@pytest.mark.parametrize("nonce", [b"short", b"x" * 257, "text"])
def test_bad_challenge_nonce_fatal(nonce):
    """A nonce must be 16 to 256 bytes of bin."""
    client = Connection(Role.CLIENT)
    client.send(Hello(client_key_id=KEY_ID))
    client.receive_data(message_frame({"type": "challenge", "nonce": nonce}))
    assert client.next_event().fatal


def test_proof_before_challenge_raises():
    """A client cannot send a proof it was not asked for."""
    client = Connection(Role.CLIENT)
    client.send(Hello(client_key_id=KEY_ID))
    with pytest.raises(LocalProtocolError):
        client.send(Proof(b"sig"))


def test_refused_proof_is_typed():
    """An error reply to the proof reaches the client as its typed error."""
    client, _ = challenged_pair()
    client.send(Proof(b"sig"))
    refusal = errors.ClientKeyRevokedError().to_wire()
    client.receive_data(message_frame({"type": "response", "id": 0,
                                       "error": refusal}))
    event = client.next_event()
    assert isinstance(event.error, errors.ClientKeyRevokedError)
    assert event.fatal


def test_challenge_repr_hides_nonce():
    """Challenge and Proof reprs show lengths, not bytes."""
    assert repr(Challenge(NONCE)) == "Challenge(nonce=<32 bytes>)"
    assert repr(Proof(b"SECRET-SIG")) == "Proof(signature=<10 bytes>)"


# --- client key files ----------------------------------------------------------


def key_document() -> tuple[dict, Ed25519PrivateKey]:
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    return {"ClientKeyId": KEY_ID, "PrivateKeyData": pem}, private


def test_client_key_signs_proof_message():
    """The signature verifies over the key id and nonce message."""
    document, private = key_document()
    signature = ClientKey.from_json(document).sign_challenge(NONCE)
    private.public_key().verify(signature, client_key_proof_message(KEY_ID, NONCE))


def test_client_key_file_loads(tmp_path):
    """A 0600 file with KeyId (the Alibaba field name) loads."""
    document, _ = key_document()
    path = tmp_path / "key.json"
    path.write_text(json.dumps({"KeyId": KEY_ID,
                                "PrivateKeyData": document["PrivateKeyData"]}))
    path.chmod(0o600)
    assert ClientKey.from_file(path).client_key_id == KEY_ID


def test_client_key_file_mode_checked(tmp_path):
    """A client key file readable by group or others is refused."""
    document, _ = key_document()
    path = tmp_path / "key.json"
    path.write_text(json.dumps(document))
    path.chmod(0o640)
    with pytest.raises(errors.InvalidParameterError) as caught:
        ClientKey.from_file(path)
    assert "chmod 600" in caught.value.message


def test_client_key_rejects_other_algorithms():
    """Only Ed25519 private keys are client keys."""
    from cryptography.hazmat.primitives.asymmetric import ec

    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()).decode()
    with pytest.raises(errors.InvalidParameterError):
        ClientKey.from_json({"ClientKeyId": KEY_ID, "PrivateKeyData": pem})


def test_client_key_repr_hides_key():
    """The repr names the key id only."""
    document, _ = key_document()
    assert "PRIVATE" not in repr(ClientKey.from_json(document))


def test_client_key_from_environment(tmp_path, monkeypatch):
    """Without an explicit key, $KMS_AGENT_CLIENT_KEY names the file."""
    document, _ = key_document()
    path = tmp_path / "key.json"
    path.write_text(json.dumps(document))
    os.chmod(path, 0o600)
    monkeypatch.setenv("KMS_AGENT_CLIENT_KEY", str(path))
    assert resolve_client_key(None).client_key_id == KEY_ID


def test_no_client_key_by_default(monkeypatch):
    """Without a key or the variable, no key is used."""
    monkeypatch.delenv("KMS_AGENT_CLIENT_KEY", raising=False)
    assert resolve_client_key(None) is None
