"""Tests of the sans-IO protocol: bytes in, events out, for both roles.

Client and server ``Connection`` objects run back to back, fed one byte
at a time or in large chunks. Golden frames live in
``tests/vectors/frames.json``.
"""

from __future__ import annotations

import json
import random
import struct
from pathlib import Path

import msgpack
import pytest

from client import errors
from client.wire import (
    CLOSED,
    MAX_REQUEST_ID,
    NEED_DATA,
    Connection,
    Hello,
    LocalProtocolError,
    ProtocolError,
    Request,
    Response,
    Role,
    Welcome,
    error_response,
    negotiate_version,
)

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "frames.json"
SECRET = b"TOP-SECRET-PLAINTEXT"


def frame(payload: bytes) -> bytes:
    """Prefix ``payload`` with its 4-byte big-endian length."""
    return struct.pack(">I", len(payload)) + payload


def message_frame(message) -> bytes:
    """Frame a message packed independently of ``client.wire``."""
    return frame(msgpack.packb(message, use_bin_type=True))


def drain(connection: Connection) -> list:
    """Return every event up to NEED_DATA or CLOSED."""
    events = []
    while True:
        event = connection.next_event()
        if event is NEED_DATA or event is CLOSED:
            return events
        events.append(event)


def handshaken_pair(max_frame: int = 262144) -> tuple[Connection, Connection]:
    """Return a client and a server that have exchanged hello and welcome."""
    client = Connection(Role.CLIENT)
    server = Connection(Role.SERVER, max_frame_size=max_frame)
    server.receive_data(client.send(Hello()))
    assert isinstance(server.next_event(), Hello)
    client.receive_data(server.send(Welcome(max_frame=max_frame)))
    assert isinstance(client.next_event(), Welcome)
    return client, server


def ready_server() -> Connection:
    """Return a server connection that has received a hello."""
    return handshaken_pair()[1]


def valid_request(request_id: int = 99) -> bytes:
    return message_frame({"type": "request", "id": request_id, "op": "ListKeys",
                          "params": {}})


def assert_still_serving(server: Connection) -> None:
    """The server connection still turns a valid frame into a Request."""
    server.receive_data(valid_request())
    event = server.next_event()
    assert event == Request(99, "ListKeys", {})


# --- golden frames ------------------------------------------------------------


def from_json(value):
    if isinstance(value, dict) and set(value) == {"$bin"}:
        return bytes.fromhex(value["$bin"])
    if isinstance(value, dict):
        return {key: from_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [from_json(item) for item in value]
    return value


def vector_event(spec: dict):
    fields = from_json({k: v for k, v in spec.items() if k != "kind"})
    if spec["kind"] == "Hello":
        fields["versions"] = tuple(fields["versions"])
    kinds = {"Hello": Hello, "Welcome": Welcome, "Request": Request,
             "Response": Response}
    return kinds[spec["kind"]](**fields)


def golden_vectors() -> list[dict]:
    return json.loads(VECTORS.read_text())["frames"]


def vector_pair(vector: dict) -> tuple[Connection, Connection]:
    """Return (sender, receiver) in the state where the vector's frame fits."""
    client = Connection(Role.CLIENT)
    server = Connection(Role.SERVER)
    kind = vector["event"]["kind"]
    if kind == "Hello":
        return client, server
    server.receive_data(client.send(Hello()))
    server.next_event()
    if kind == "Welcome":
        return server, client
    client.receive_data(server.send(Welcome()))
    client.next_event()
    if kind == "Response" and vector["event"]["id"]:
        client.send(Request(vector["event"]["id"], "Any", {}))
    return (client, server) if kind == "Request" else (server, client)


@pytest.mark.parametrize("vector", golden_vectors(), ids=lambda v: v["name"])
def test_golden_frame_encoding(vector):
    """The sender encodes the event to the exact golden bytes."""
    sender, _ = vector_pair(vector)
    assert sender.send(vector_event(vector["event"])).hex() == vector["hex"]


@pytest.mark.parametrize("vector", golden_vectors(), ids=lambda v: v["name"])
def test_golden_frame_decoding(vector):
    """The receiver decodes the golden bytes, fed one at a time, to the event."""
    _, receiver = vector_pair(vector)
    for byte in bytes.fromhex(vector["hex"]):
        assert receiver.next_event() is NEED_DATA
        receiver.receive_data(bytes([byte]))
    assert receiver.next_event() == vector_event(vector["event"])


def test_golden_vectors_cover_messages():
    """The golden file contains every message type and an error reply."""
    names = {vector["name"] for vector in golden_vectors()}
    assert {"hello", "welcome", "request", "response", "error_response"} <= names


# --- back to back -------------------------------------------------------------


def test_handshake_sets_versions():
    """After hello and welcome both sides know the version and limits."""
    client, server = handshaken_pair(max_frame=4096)
    assert client.version == 1
    assert server.version == 1
    assert client.peer_max_frame_size == 4096


def test_request_one_byte_at_a_time():
    """A request fed byte by byte decodes to the sent event."""
    client, server = handshaken_pair()
    request = Request(5, "Encrypt", {"KeyId": "k", "Plaintext": SECRET},
                      timeout_ms=1500)
    events = []
    for byte in client.send(request):
        server.receive_data(bytes([byte]))
        events.extend(drain(server))
    assert events == [request]


def test_many_frames_one_chunk():
    """A thousand requests in one chunk decode in order."""
    client, server = handshaken_pair()
    requests = [Request(i, "Decrypt", {"CiphertextBlob": bytes([i % 256]) * i})
                for i in range(1, 1001)]
    server.receive_data(b"".join(client.send(request) for request in requests))
    assert drain(server) == requests


def test_random_chunk_boundaries():
    """Frames split at random points decode the same."""
    client, server = handshaken_pair()
    requests = [Request(i, "Encrypt", {"Plaintext": bytes(i * 37 % 5000)})
                for i in range(1, 200)]
    data = b"".join(client.send(request) for request in requests)
    chunker = random.Random(7)
    events, position = [], 0
    while position < len(data):
        size = chunker.randint(1, 9000)
        server.receive_data(data[position:position + size])
        position += size
        events.extend(drain(server))
    assert events == requests


def test_responses_back_to_back():
    """Results and errors reach the client matched by id."""
    client, server = handshaken_pair()
    client.send(Request(1, "Encrypt", {}))
    client.send(Request(2, "Decrypt", {}))
    replies = [error_response(errors.KeyNotFoundError(request_id="r-2"), 2),
               Response(1, result={"CiphertextBlob": b"\x00\x01", "KeyId": "k"})]
    client.receive_data(b"".join(server.send(reply) for reply in replies))
    assert drain(client) == replies
    assert client.pending_requests == frozenset()


def test_eof_after_frames_delivers_them():
    """Frames before a clean EOF are delivered, then CLOSED."""
    server = ready_server()
    server.receive_data(valid_request())
    server.receive_data(b"")
    assert isinstance(server.next_event(), Request)
    assert server.next_event() is CLOSED
    assert server.next_event() is CLOSED


def test_request_repr_hides_values():
    """A request's repr names its params but shows no value."""
    text = repr(Request(1, "Encrypt", {"KeyId": "k", "Plaintext": SECRET}))
    assert "Plaintext" in text
    assert "TOP-SECRET" not in text


def test_response_repr_hides_values():
    """A result's repr names its fields but shows no value."""
    text = repr(Response(1, result={"Plaintext": SECRET}))
    assert "Plaintext" in text
    assert "TOP-SECRET" not in text


def test_negotiate_picks_common_version():
    """Negotiation picks a version both sides support."""
    assert negotiate_version([7, 1, 3]) == 1


def test_negotiate_names_supported_versions():
    """With no common version the error names the supported ones."""
    with pytest.raises(errors.InvalidApiVersionError, match="Supported versions: 1"):
        negotiate_version([2, 3])


def test_error_response_helper():
    """error_response carries the error's wire map and the request id."""
    error = errors.KeyDisabledError(request_id="r-9")
    assert error_response(error, 9) == Response(9, error={
        "Code": "Rejected.Disabled",
        "Message": "The key is disabled.",
        "HttpStatus": 409,
        "RequestId": "r-9",
    })


# --- bad input on the server side ---------------------------------------------


def test_oversize_reported_at_header():
    """An oversize length is reported as soon as the header arrives."""
    server = ready_server()
    server.receive_data(struct.pack(">I", 262145))
    event = server.next_event()
    assert isinstance(event.error, errors.RequestTooLargeError)
    assert event.request_id == 0
    assert event.fatal is False


def test_oversize_payload_never_buffered():
    """Ten megabytes of an oversize frame are dropped as they arrive."""
    server = ready_server()
    total = 10 * 2**20
    server.receive_data(struct.pack(">I", total))
    assert isinstance(server.next_event(), ProtocolError)
    chunk = SECRET * 3277
    largest, fed = 0, 0
    while fed < total:
        piece = chunk[:total - fed]
        server.receive_data(piece)
        fed += len(piece)
        assert server.next_event() is NEED_DATA
        # The private buffer is what would hold the payload if it were kept.
        largest = max(largest, len(server._buffer))
    assert largest == 0
    assert_still_serving(server)


def test_oversize_frame_in_one_chunk():
    """An oversize frame and a valid one in one chunk: error, then request."""
    server = ready_server()
    oversize = frame(b"\x00" * 300_000)
    server.receive_data(oversize + valid_request())
    events = drain(server)
    assert isinstance(events[0].error, errors.RequestTooLargeError)
    assert events[1] == Request(99, "ListKeys", {})


def test_oversize_message_names_sizes():
    """The too-large error names the frame size and the limit."""
    server = ready_server()
    server.receive_data(struct.pack(">I", 300_000))
    message = server.next_event().error.message
    assert "300000" in message
    assert "262144" in message


BAD_PAYLOADS = {
    "never_used_byte": b"\xc1",
    "truncated_msgpack": b"\x82\xa4type",
    "array": msgpack.packb([1, 2, 3]),
    "string": msgpack.packb("text"),
    "integer_key": msgpack.packb({1: "x"}),
    "invalid_utf8": b"\x81\xa4type\xa3\xff\xfe\xfd",
    "ext_type": msgpack.packb({"type": msgpack.ExtType(5, b"xy")}),
    "timestamp": msgpack.packb({"t": msgpack.Timestamp(1, 0)}),
    "extra_bytes": msgpack.packb({"type": "request"}) + b"\x00",
    "too_deep": b"\x91" * 2000 + b"\x00",
    "empty": b"",
}


@pytest.mark.parametrize("payload", BAD_PAYLOADS.values(), ids=BAD_PAYLOADS.keys())
def test_malformed_payload_not_fatal(payload):
    """A frame that is not a msgpack map is rejected and skipped."""
    server = ready_server()
    server.receive_data(frame(payload))
    event = server.next_event()
    assert isinstance(event.error, errors.ParseRequestError)
    assert event.request_id == 0
    assert event.fatal is False
    assert_still_serving(server)


def request_with(**fields) -> dict:
    message = {"type": "request", "id": 4, "op": "Encrypt",
               "params": {"Plaintext": SECRET}}
    message.update(fields)
    return {key: value for key, value in message.items() if value is not ...}


BAD_REQUESTS = [
    ("id_missing", request_with(id=...), 0, "'id' is missing"),
    ("id_string", request_with(id="4"), 0, "'id' must be"),
    ("id_zero", request_with(id=0), 0, "to 2**63-1, not 0."),
    ("id_negative", request_with(id=-4), 0, "'id' must be"),
    ("id_too_large", request_with(id=2**63), 0, "'id' must be"),
    ("id_boolean", request_with(id=True), 0, "'id' must be"),
    ("op_missing", request_with(op=...), 4, "'op' is missing"),
    ("op_integer", request_with(op=5), 4, "'op' must be a string of 1 to 128"),
    ("op_empty", request_with(op=""), 4, "not a string of 0 characters"),
    ("op_too_long", request_with(op="A" * 129), 4, "not a string of 129 characters"),
    ("params_missing", request_with(params=...), 4, "'params' is missing"),
    ("params_array", request_with(params=[SECRET]), 4, "'params' must be a map"),
    ("timeout_negative", request_with(timeout_ms=-1), 4, "'timeout_ms'"),
    ("timeout_string", request_with(timeout_ms="5"), 4, "'timeout_ms'"),
]


@pytest.mark.parametrize("message, request_id, text",
                         [case[1:] for case in BAD_REQUESTS],
                         ids=[case[0] for case in BAD_REQUESTS])
def test_bad_request_field_named(message, request_id, text):
    """An ill-formed request names its field and keeps the id it could read."""
    server = ready_server()
    server.receive_data(message_frame(message))
    event = server.next_event()
    assert isinstance(event.error, errors.ParseRequestError)
    assert text in event.error.message
    assert event.request_id == request_id
    assert event.fatal is False
    assert_still_serving(server)


@pytest.mark.parametrize("message, request_id", [
    ({"type": "response", "id": 6, "result": {}}, 6),
    ({"type": "welcome", "version": 1}, 0),
    ({"type": "launch", "id": 6}, 6),
    ({"type": ["request"], "id": 6}, 6),
    ({"id": 6, "op": "ListKeys", "params": {}}, 6),
], ids=["response", "welcome", "unknown_type", "unhashable_type", "type_missing"])
def test_wrong_message_type_skipped(message, request_id):
    """A message a server does not accept is rejected and skipped."""
    server = ready_server()
    server.receive_data(message_frame(message))
    event = server.next_event()
    assert isinstance(event.error, errors.ParseRequestError)
    assert event.request_id == request_id
    assert event.fatal is False
    assert_still_serving(server)


@pytest.mark.parametrize("payload", [
    msgpack.packb({"type": "request", "id": 4, "op": "Encrypt",
                   "params": {"Plaintext": SECRET, "Bad": "XYZ"}}).replace(
                       b"\xa3XYZ", b"\xa3\xff\xfe\xfd"),
    msgpack.packb({"type": "request", "id": 4, "params": {"Plaintext": SECRET}}),
    msgpack.packb({"type": "request", "id": 4, "op": "Encrypt",
                   "params": {"Plaintext": SECRET}}) + SECRET,
    msgpack.packb([SECRET.decode()]),
], ids=["bad_utf8", "op_missing", "extra_bytes", "array"])
def test_error_never_echoes_payload(payload):
    """No error message quotes the bytes of the bad frame."""
    server = ready_server()
    server.receive_data(frame(payload))
    message = server.next_event().error.message
    assert "TOP-SECRET" not in message
    assert "\\x" not in message
    assert "0xff" not in message


def test_request_before_hello_fatal():
    """A request as the first frame is fatal, then CLOSED."""
    server = Connection(Role.SERVER)
    server.receive_data(valid_request())
    event = server.next_event()
    assert isinstance(event.error, errors.ParseRequestError)
    assert event.fatal is True
    assert server.next_event() is CLOSED


@pytest.mark.parametrize("data", [
    frame(b"\xc1"),
    frame(msgpack.packb([1])),
    struct.pack(">I", 300_000),
], ids=["garbage", "array", "oversize"])
def test_bad_frame_before_hello_fatal(data):
    """Any bad frame before the hello is fatal."""
    server = Connection(Role.SERVER)
    server.receive_data(data)
    event = server.next_event()
    assert event.fatal is True
    assert server.next_event() is CLOSED


def test_second_hello_fatal():
    """A second hello is fatal."""
    _, server = handshaken_pair()
    server.receive_data(Connection(Role.CLIENT).send(Hello()))
    event = server.next_event()
    assert isinstance(event.error, errors.ParseRequestError)
    assert event.fatal is True


def test_unsupported_version_fatal():
    """A hello offering no supported version is fatal and names ours."""
    server = Connection(Role.SERVER)
    server.receive_data(message_frame({"type": "hello", "versions": [2, 9],
                                       "client": "future"}))
    event = server.next_event()
    assert isinstance(event.error, errors.InvalidApiVersionError)
    assert "Supported versions: 1" in event.error.message
    assert event.fatal is True
    assert server.next_event() is CLOSED


@pytest.mark.parametrize("hello, field", [
    ({"type": "hello", "versions": 1, "client": "x"}, "'versions'"),
    ({"type": "hello", "versions": [], "client": "x"}, "'versions'"),
    ({"type": "hello", "versions": ["1"], "client": "x"}, "'versions'"),
    ({"type": "hello", "versions": [1]}, "'client' is missing"),
], ids=["versions_integer", "versions_empty", "versions_strings", "client_missing"])
def test_bad_hello_fatal(hello, field):
    """An ill-formed hello is fatal and names its field."""
    server = Connection(Role.SERVER)
    server.receive_data(message_frame(hello))
    event = server.next_event()
    assert field in event.error.message
    assert event.fatal is True


@pytest.mark.parametrize("data", [
    valid_request()[:-1],
    valid_request()[:2],
    struct.pack(">I", 300_000) + b"\x00" * 1000,
], ids=["payload", "header", "oversize_payload"])
def test_truncated_frame_fatal(data):
    """EOF in the middle of a frame is fatal, then CLOSED."""
    server = ready_server()
    server.receive_data(data)
    drain(server)
    server.receive_data(b"")
    event = server.next_event()
    assert isinstance(event.error, errors.ParseRequestError)
    assert "truncated frame" in event.error.message
    assert event.fatal is True
    assert server.next_event() is CLOSED


def test_data_after_eof_raises():
    """Feeding bytes after EOF is a local bug."""
    server = ready_server()
    server.receive_data(b"")
    with pytest.raises(LocalProtocolError):
        server.receive_data(b"\x00")


def test_data_after_fatal_ignored():
    """Bytes after a fatal error are not buffered."""
    server = Connection(Role.SERVER)
    server.receive_data(valid_request())
    server.next_event()
    server.receive_data(valid_request() * 100)
    assert server.buffered_bytes == 0


# --- bad input on the client side ---------------------------------------------


def reply_frame(**fields) -> bytes:
    return message_frame({"type": "response", **fields})


def test_reply_unknown_id_reported():
    """A reply to an id never sent is a non-fatal error with that id."""
    client, _ = handshaken_pair()
    client.receive_data(reply_frame(id=41, result={}))
    event = client.next_event()
    assert isinstance(event.error, errors.InternalFailureError)
    assert event.request_id == 41
    assert event.fatal is False


def test_reply_twice_reported():
    """A second reply to the same id is reported."""
    client, server = handshaken_pair()
    client.send(Request(3, "ListKeys", {}))
    reply = server.send(Response(3, result={}))
    client.receive_data(reply + reply)
    events = drain(client)
    assert events[0] == Response(3, result={})
    assert events[1].request_id == 3


@pytest.mark.parametrize("fields", [
    {"id": 3, "result": {}, "error": {}},
    {"id": 3},
    {"id": 3, "result": [1]},
    {"id": 3, "error": "KeyNotFound"},
], ids=["both", "neither", "result_array", "error_string"])
def test_malformed_reply_reported(fields):
    """A malformed reply is reported against its request id."""
    client, _ = handshaken_pair()
    client.send(Request(3, "ListKeys", {}))
    client.receive_data(reply_frame(**fields))
    event = client.next_event()
    assert isinstance(event.error, errors.InternalFailureError)
    assert event.request_id == 3
    assert client.pending_requests == frozenset()


@pytest.mark.parametrize("fields", [
    {"id": "3", "result": {}},
    {"id": -1, "error": {}},
    {"id": 0, "result": {}},
], ids=["id_string", "id_negative", "result_for_id_zero"])
def test_reply_bad_id_reported(fields):
    """A reply with an unusable id is reported with id 0."""
    client, _ = handshaken_pair()
    client.receive_data(reply_frame(**fields))
    event = client.next_event()
    assert event.request_id == 0
    assert event.fatal is False


def test_error_without_request_accepted():
    """An error reply with id 0 is a Response event."""
    client, server = handshaken_pair()
    reply = error_response(errors.ParseRequestError("bad frame"))
    client.receive_data(server.send(reply))
    assert client.next_event() == reply


def test_request_event_rejected_by_client():
    """A client does not accept request messages."""
    client, _ = handshaken_pair()
    client.receive_data(valid_request(5))
    event = client.next_event()
    assert event.request_id == 5
    assert event.fatal is False


def test_rejected_hello_is_typed():
    """An error instead of a welcome is fatal and keeps its type."""
    client = Connection(Role.CLIENT)
    server = Connection(Role.SERVER)
    client.send(Hello())
    client.receive_data(server.send(error_response(errors.InvalidApiVersionError())))
    event = client.next_event()
    assert isinstance(event.error, errors.InvalidApiVersionError)
    assert event.fatal is True
    assert client.next_event() is CLOSED


def test_welcome_unoffered_version_fatal():
    """A welcome naming a version the client did not offer is fatal."""
    client = Connection(Role.CLIENT)
    client.send(Hello(versions=(1,)))
    client.receive_data(message_frame({"type": "welcome", "version": 2,
                                       "server": "x", "max_frame": 10}))
    event = client.next_event()
    assert isinstance(event.error, errors.InvalidApiVersionError)
    assert event.fatal is True


@pytest.mark.parametrize("welcome", [
    {"type": "welcome", "version": "1", "server": "x", "max_frame": 10},
    {"type": "welcome", "version": 1, "max_frame": 10},
    {"type": "welcome", "version": 1, "server": "x", "max_frame": 0},
    {"type": "response", "id": 1, "result": {}},
], ids=["version_string", "server_missing", "max_frame_zero", "response"])
def test_bad_welcome_fatal(welcome):
    """An ill-formed first reply is fatal."""
    client = Connection(Role.CLIENT)
    client.send(Hello())
    client.receive_data(message_frame(welcome))
    event = client.next_event()
    assert isinstance(event.error, errors.InternalFailureError)
    assert event.fatal is True


def test_second_welcome_fatal():
    """A second welcome is fatal."""
    client, server = handshaken_pair()
    client.receive_data(message_frame({"type": "welcome", "version": 1,
                                       "server": "x", "max_frame": 10}))
    assert client.next_event().fatal is True


def test_oversize_reply_skipped():
    """A reply over the client's limit is skipped; the next one arrives."""
    client = Connection(Role.CLIENT, max_frame_size=1000)
    server = Connection(Role.SERVER)
    server.receive_data(client.send(Hello()))
    server.next_event()
    client.receive_data(server.send(Welcome()))
    client.next_event()
    client.send(Request(1, "Decrypt", {}))
    client.send(Request(2, "Decrypt", {}))
    big = server.send(Response(1, result={"Plaintext": bytes(5000)}))
    small = server.send(Response(2, result={"Plaintext": b"ok"}))
    client.receive_data(big + small)
    events = drain(client)
    assert isinstance(events[0].error, errors.RequestTooLargeError)
    assert events[0].fatal is False
    assert events[1] == Response(2, result={"Plaintext": b"ok"})


def test_truncated_reply_fatal():
    """EOF in the middle of a reply is fatal on the client too."""
    client, server = handshaken_pair()
    client.send(Request(1, "Decrypt", {}))
    client.receive_data(server.send(Response(1, result={}))[:-2])
    client.receive_data(b"")
    event = client.next_event()
    assert "truncated frame" in event.error.message
    assert event.fatal is True


# --- checks on sending --------------------------------------------------------


def test_request_before_welcome_raises():
    """A client cannot send a request before the welcome."""
    client = Connection(Role.CLIENT)
    client.send(Hello())
    with pytest.raises(LocalProtocolError):
        client.send(Request(1, "ListKeys", {}))


def test_hello_twice_raises():
    """A client cannot send a second hello."""
    client = Connection(Role.CLIENT)
    client.send(Hello())
    with pytest.raises(LocalProtocolError):
        client.send(Hello())


@pytest.mark.parametrize("request_id", [0, -1, MAX_REQUEST_ID + 1, True, "1"])
def test_request_id_range_enforced(request_id):
    """Request ids must be integers from 1 to 2**63-1."""
    client, _ = handshaken_pair()
    with pytest.raises(LocalProtocolError):
        client.send(Request(request_id, "ListKeys", {}))


def test_request_id_in_flight_raises():
    """A client cannot reuse an id that awaits a reply."""
    client, _ = handshaken_pair()
    client.send(Request(8, "ListKeys", {}))
    with pytest.raises(LocalProtocolError):
        client.send(Request(8, "ListKeys", {}))


def test_request_over_server_limit():
    """A request larger than the server's limit fails before it is sent."""
    client, _ = handshaken_pair(max_frame=100)
    with pytest.raises(errors.RequestTooLargeError):
        client.send(Request(1, "Encrypt", {"Plaintext": bytes(200)}))
    assert client.pending_requests == frozenset()


def test_unencodable_param_raises():
    """A value msgpack cannot encode raises, and the connection goes on."""
    client, server = handshaken_pair()
    with pytest.raises(errors.InvalidParameterError):
        client.send(Request(1, "Encrypt", {"Plaintext": {1, 2}}))
    server.receive_data(client.send(Request(1, "Encrypt", {"Plaintext": b"x"})))
    assert server.next_event() == Request(1, "Encrypt", {"Plaintext": b"x"})


@pytest.mark.parametrize("role, event", [
    (Role.SERVER, Request(1, "ListKeys", {})),
    (Role.SERVER, Hello()),
    (Role.CLIENT, Response(1, result={})),
    (Role.CLIENT, Welcome()),
], ids=["server_request", "server_hello", "client_response", "client_welcome"])
def test_wrong_role_send_raises(role, event):
    """Each role sends only its own message types."""
    with pytest.raises(LocalProtocolError):
        Connection(role).send(event)


def test_result_before_welcome_raises():
    """A server cannot send a result before its welcome."""
    server = Connection(Role.SERVER)
    with pytest.raises(LocalProtocolError):
        server.send(Response(1, result={}))


def test_error_before_welcome_allowed():
    """A server may reply to a bad first frame with an error."""
    server = Connection(Role.SERVER)
    data = server.send(error_response(errors.ParseRequestError()))
    assert data[4:5] == b"\x83"


@pytest.mark.parametrize("response", [
    Response(1),
    Response(1, result={}, error={}),
    Response(0, result={}),
    Response(-1, error={}),
], ids=["neither", "both", "result_id_zero", "negative_id"])
def test_bad_response_send_raises(response):
    """A server cannot send an ill-formed response."""
    _, server = handshaken_pair()
    with pytest.raises(LocalProtocolError):
        server.send(response)


def test_welcome_unoffered_version_raises():
    """A server cannot choose a version the client did not offer."""
    server = Connection(Role.SERVER)
    server.receive_data(Connection(Role.CLIENT).send(Hello()))
    server.next_event()
    with pytest.raises(LocalProtocolError):
        server.send(Welcome(version=2))


def test_bad_max_frame_size_raises():
    """The frame limit must be a positive integer."""
    with pytest.raises(ValueError):
        Connection(Role.SERVER, max_frame_size=0)


def test_unencodable_result_is_internal():
    """A server result msgpack cannot encode is an internal failure."""
    _, server = handshaken_pair()
    with pytest.raises(errors.InternalFailureError):
        server.send(Response(1, result={"When": object()}))
