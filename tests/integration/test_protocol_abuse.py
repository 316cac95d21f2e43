"""Bad bytes on the real socket: typed errors, and the agent keeps serving.

Each test speaks raw frames to the real daemon, then shows that the same
connection (where the protocol allows) and a fresh client still work.
"""

from __future__ import annotations

import socket
import struct
import threading

import msgpack
import pytest

from client import KmsClient, errors, wire

pytestmark = pytest.mark.hsm


class RawConnection:
    """A blocking socket that sends raw bytes and reads decoded frames."""

    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(20)
        self.sock.connect(str(path))
        self.buffer = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_message(self, message) -> None:
        payload = msgpack.packb(message, use_bin_type=True)
        self.send(struct.pack(">I", len(payload)) + payload)

    def hello(self) -> dict:
        self.send_message({"type": "hello", "versions": [1], "client": "test"})
        return self.receive()

    def receive(self) -> dict:
        while len(self.buffer) < 4 or len(self.buffer) < 4 + struct.unpack(
                ">I", self.buffer[:4])[0]:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("agent closed the connection")
            self.buffer += chunk
        length = struct.unpack(">I", self.buffer[:4])[0]
        frame, self.buffer = self.buffer[4:4 + length], self.buffer[4 + length:]
        return msgpack.unpackb(frame, raw=False)

    def request(self, request_id: int, op: str, **params) -> dict:
        self.send_message({"type": "request", "id": request_id, "op": op,
                           "params": params})
        return self.receive()

    def close(self) -> None:
        self.sock.close()


def assert_serving(agent) -> None:
    """A fresh client can still create a key and encrypt."""
    with KmsClient(agent.socket) as client:
        key_id = client.create_key()["KeyMetadata"]["KeyId"]
        blob = client.encrypt(key_id, b"still serving")["CiphertextBlob"]
        assert client.decrypt(blob)["Plaintext"] == b"still serving"


@pytest.fixture
def raw(shared_agent):
    connection = RawConnection(shared_agent.socket)
    yield connection
    connection.close()


def test_handshake_welcome(raw):
    """A hello gets a welcome naming protocol version 1."""
    welcome = raw.hello()
    assert welcome["type"] == "welcome"
    assert welcome["version"] == 1


def test_unknown_version_rejected(raw, shared_agent):
    """A hello with no supported version gets InvalidApiVersion, then EOF."""
    raw.send_message({"type": "hello", "versions": [99], "client": "test"})
    reply = raw.receive()
    assert reply["error"]["Code"] == "InvalidApiVersion"
    with pytest.raises(EOFError):
        raw.receive()
    assert_serving(shared_agent)


def test_request_before_hello_rejected(raw, shared_agent):
    """A request before the handshake is refused and the connection closed."""
    raw.send_message({"type": "request", "id": 1, "op": "ListKeys", "params": {}})
    reply = raw.receive()
    assert reply["error"]["HttpStatus"] == 400
    assert_serving(shared_agent)


def test_oversized_frame_skipped(raw, shared_agent):
    """A frame over the limit gets RequestEntityTooLarge; the connection goes on."""
    raw.hello()
    raw.send(struct.pack(">I", 10 * 2**20) + b"\0" * (10 * 2**20))
    reply = raw.receive()
    assert reply["error"]["Code"] == "RequestEntityTooLarge"
    assert reply["error"]["HttpStatus"] == 413
    assert "result" in raw.request(7, "ListKeys")
    assert_serving(shared_agent)


@pytest.mark.parametrize("payload", [
    b"\xc1\xc1\xc1",  # never-used msgpack byte
    msgpack.packb([1, 2, 3]),  # an array, not a map
    msgpack.packb("text"),
    msgpack.packb({"type": "request", "id": "one", "op": "ListKeys", "params": {}}),
    msgpack.packb({"type": "request", "id": 3, "op": 5, "params": {}}),
    msgpack.packb({"type": "request", "id": 3, "op": "ListKeys", "params": []}),
    msgpack.packb({"type": "nonsense"}),
])
def test_garbage_frame_rejected(raw, shared_agent, payload):
    """A well-framed but malformed message gets ParseRequestParameterException."""
    raw.hello()
    raw.send(struct.pack(">I", len(payload)) + payload)
    reply = raw.receive()
    assert reply["error"]["Code"] == "ParseRequestParameterException"
    assert "result" in raw.request(8, "ListKeys")


def test_unknown_operation(raw):
    """An unknown operation name gets InvalidApiName with the request id."""
    raw.hello()
    reply = raw.request(9, "DropAllKeys")
    assert reply["id"] == 9
    assert reply["error"]["Code"] == "InvalidApiName"
    assert reply["error"]["RequestId"]


def test_truncated_frame_then_close(shared_agent):
    """A client that sends half a frame and leaves does not hurt the agent."""
    connection = RawConnection(shared_agent.socket)
    connection.hello()
    connection.send(struct.pack(">I", 100) + b"\x81")
    connection.close()
    assert_serving(shared_agent)


def test_disconnect_mid_request(shared_agent):
    """A client that leaves while its request runs does not hurt the agent."""
    for _ in range(20):
        connection = RawConnection(shared_agent.socket)
        connection.hello()
        connection.send_message({"type": "request", "id": 1, "op": "CreateKey",
                                 "params": {}})
        connection.close()
    assert_serving(shared_agent)


def test_many_in_flight_on_one_connection(raw):
    """Pipelined requests on one connection all get replies, matched by id."""
    raw.hello()
    count = 50
    for request_id in range(1, count + 1):
        raw.send_message({"type": "request", "id": request_id, "op": "ListKeys",
                          "params": {"PageSize": 1}})
    ids = {raw.receive()["id"] for _ in range(count)}
    assert ids == set(range(1, count + 1))


@pytest.mark.parametrize("op, params, code", [
    ("Encrypt", {"KeyId": "alias/x"}, "MissingParameter"),
    ("Encrypt", {"KeyId": "alias/x", "Plaintext": b"x", "Bogus": 1},
     "InvalidParameter"),
    ("Encrypt", {"KeyId": 1, "Plaintext": b"x"}, "InvalidParameter"),
    ("Encrypt", {"KeyId": "k", "Plaintext": b"x" * 6145}, "InvalidParameter"),
    ("GenerateDataKey", {"KeyId": "k", "NumberOfBytes": 0}, "InvalidParameter"),
    ("GenerateDataKey", {"KeyId": "k", "NumberOfBytes": 1025}, "InvalidParameter"),
    ("CreateAlias", {"AliasName": "app", "KeyId": "k"}, "InvalidParameter"),
    ("CreateAlias", {"AliasName": "alias/acs/app", "KeyId": "k"},
     "Unsupported.Alias"),
    ("Decrypt", {"CiphertextBlob": b"short"}, "InvalidCiphertext"),
])
def test_bad_parameters_over_socket(raw, op, params, code):
    """Bad parameters get their codes and the connection keeps working."""
    raw.hello()
    reply = raw.request(11, op, **params)
    assert reply["error"]["Code"] == code
    assert "result" in raw.request(12, "ListKeys")


def test_parallel_abuse_and_work(shared_agent):
    """Garbage on some connections never breaks work on others."""
    failures = []

    def abuse():
        for _ in range(30):
            try:
                connection = RawConnection(shared_agent.socket)
                connection.send(b"GET / HTTP/1.1\r\n\r\n")
                connection.close()
            except OSError as exc:
                failures.append(exc)

    threads = [threading.Thread(target=abuse) for _ in range(3)]
    for thread in threads:
        thread.start()
    with KmsClient(shared_agent.socket) as client:
        key_id = client.create_key()["KeyMetadata"]["KeyId"]
        for number in range(100):
            blob = client.encrypt(key_id, str(number))["CiphertextBlob"]
            assert client.decrypt(blob)["Plaintext"] == str(number).encode()
    for thread in threads:
        thread.join()
    assert failures == []


def test_wire_constants():
    """The agent and client agree on the protocol version."""
    assert wire.PROTOCOL_VERSION == 1
    assert errors.RequestTooLargeError.http_status == 413
