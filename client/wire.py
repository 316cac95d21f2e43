"""Sans-IO framing and messages of the kms-agent protocol, for both sides.

A frame is a 4-byte big-endian length N followed by N bytes of msgpack that
contain one map. ``Connection`` turns received bytes into events and events
into the bytes to write. It never touches a socket, so the agent's server
and both clients (``client.sync``, ``client.aio``) share it.

The client's first frame is a hello and the server replies with a welcome.
A hello that names a client key gets a challenge (a random nonce) first;
the client answers with a proof, its signature over
``client_key_proof_message``, and the welcome follows once the server
has checked it. A server that refuses the caller replies to the hello or
the proof with an error response of id 0 and closes.
Received frames that break the protocol become ``ProtocolError`` events.
Such an event is fatal (the connection must close) only when the stream
cannot go on: before the handshake is complete, on a second hello or
welcome, and on a truncated frame.
A bad frame later in the stream is reported and skipped, so one buggy
request does not cost the caller its connection.
"""

from __future__ import annotations

import dataclasses
import enum
import struct
from typing import Any

import msgpack

from client.errors import (
    InternalFailureError,
    InvalidApiVersionError,
    InvalidParameterError,
    KmsError,
    ParseRequestError,
    RequestTooLargeError,
    error_from_wire,
)

PROTOCOL_VERSION = 1
SUPPORTED_VERSIONS = (1,)
DEFAULT_MAX_FRAME_SIZE = 262144
DEFAULT_SOCKET_PATH = "/run/kms-agent/agent.sock"
SOCKET_ENV = "KMS_AGENT_SOCKET"
CLIENT_NAME = "kms-agent-python/0.1.0"
SERVER_NAME = "kms-agent/0.1.0"
MAX_REQUEST_ID = 2**63 - 1
# Operation names are short API names; a longer one is refused before it
# can reach a log line.
MAX_OPERATION_LENGTH = 128
MAX_CLIENT_KEY_ID = 128
MIN_NONCE_BYTES = 16
MAX_NONCE_BYTES = 256
MAX_SIGNATURE_BYTES = 1024
# Signed in front of the key id and the nonce, so that a proof can never
# be mistaken for a signature made for another purpose.
PROOF_CONTEXT = b"kms-agent client key proof v1\x00"

HEADER_SIZE = 4
_HEADER = struct.Struct(">I")
_MAX_ENCODABLE_LENGTH = 2**32 - 1

# Consumed bytes in front of the receive buffer are dropped once there are
# this many, so that a long stream of small frames is not copied per frame.
_COMPACT_THRESHOLD = 65536

_MSGPACK_TYPE_NAMES = {
    type(None): "nil",
    bool: "a boolean",
    int: "an integer",
    float: "a float",
    str: "a string",
    bytes: "bin",
    list: "an array",
    dict: "a map",
}


class LocalProtocolError(RuntimeError):
    """This side tried to send something the protocol does not allow.

    It marks a bug in the code driving the ``Connection``, so it is not a
    ``KmsError`` and never travels on the wire.
    """


class _Sentinel:
    __slots__ = ("_name",)

    def __init__(self, name: str):
        self._name = name

    def __repr__(self) -> str:
        return self._name


NEED_DATA = _Sentinel("NEED_DATA")
CLOSED = _Sentinel("CLOSED")
_MISSING = _Sentinel("MISSING")


class Role(enum.Enum):
    CLIENT = "client"
    SERVER = "server"


# --- events -------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Hello:
    """The client's first frame: the protocol versions it can speak.

    ``client_key_id`` names the client key the client will prove it holds.
    """

    versions: tuple[int, ...] = SUPPORTED_VERSIONS
    client: str = CLIENT_NAME
    client_key_id: str | None = None


@dataclasses.dataclass(frozen=True, slots=True, repr=False)
class Challenge:
    """The server's reply to a hello that names a client key: a fresh nonce."""

    nonce: bytes

    def __repr__(self) -> str:
        return f"Challenge(nonce=<{len(self.nonce)} bytes>)"


@dataclasses.dataclass(frozen=True, slots=True, repr=False)
class Proof:
    """The client's signature over ``client_key_proof_message``."""

    signature: bytes

    def __repr__(self) -> str:
        return f"Proof(signature=<{len(self.signature)} bytes>)"


@dataclasses.dataclass(frozen=True, slots=True)
class Welcome:
    """The server's reply to a hello: the chosen version and its frame limit."""

    version: int = PROTOCOL_VERSION
    server: str = SERVER_NAME
    max_frame: int = DEFAULT_MAX_FRAME_SIZE


@dataclasses.dataclass(frozen=True, slots=True, repr=False)
class Request:
    """One operation call; ``params`` uses the API's PascalCase names.

    The repr lists parameter names only, because values may be plaintexts.
    """

    id: int
    op: str
    params: dict[str, Any]
    timeout_ms: int | None = None

    def __repr__(self) -> str:
        names = ", ".join(str(name) for name in self.params)
        return (
            f"Request(id={self.id}, op={self.op!r}, params=[{names}], "
            f"timeout_ms={self.timeout_ms})"
        )


@dataclasses.dataclass(frozen=True, slots=True, repr=False)
class Response:
    """The reply to request ``id``: a result map or an error map.

    ``id`` 0 marks an error about a frame whose id could not be read. The
    repr lists result names only, because a result may contain a plaintext.
    """

    id: int
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None

    def __repr__(self) -> str:
        if self.result is None:
            return f"Response(id={self.id}, error={self.error!r})"
        names = ", ".join(str(name) for name in self.result)
        return f"Response(id={self.id}, result=[{names}])"


@dataclasses.dataclass(frozen=True, slots=True)
class ProtocolError:
    """A received frame broke the protocol.

    ``request_id`` is the id of the bad request when it could be read,
    else 0. When ``fatal`` is true the connection cannot go on: send the
    error back if useful, then close.
    """

    error: KmsError
    request_id: int = 0
    fatal: bool = False


Event = Hello | Challenge | Proof | Welcome | Request | Response | ProtocolError


def client_key_proof_message(client_key_id: str, nonce: bytes) -> bytes:
    """Return the bytes a client signs to prove it holds a client key."""
    return PROOF_CONTEXT + client_key_id.encode("utf-8") + b"\x00" + nonce


def _is_client_key_id(value: Any) -> bool:
    return (type(value) is str and 0 < len(value) <= MAX_CLIENT_KEY_ID
            and value.isascii() and value.isprintable())


def error_response(error: KmsError, request_id: int = 0) -> Response:
    """Build the reply that carries ``error`` for request ``request_id``."""
    return Response(request_id, error=error.to_wire())


def negotiate_version(offered: Any) -> int:
    """Return the highest protocol version in both ``offered`` and ours.

    Raises:
        InvalidApiVersionError: no offered version is supported; the
            message names the versions this side supports.
    """
    common = [v for v in SUPPORTED_VERSIONS if v in offered]
    if not common:
        supported = ", ".join(str(v) for v in SUPPORTED_VERSIONS)
        raise InvalidApiVersionError(
            f"None of the offered protocol versions is supported. "
            f"Supported versions: {supported}."
        )
    return max(common)


def _type_name(value: Any) -> str:
    return _MSGPACK_TYPE_NAMES.get(type(value), "an ext value")


def _reject_ext_type(code: int, data: bytes) -> Any:
    raise ValueError("msgpack ext types are not allowed")


def _describe_unpack_error(exc: Exception) -> str:
    # The exception text may quote payload bytes, so it is never echoed.
    if isinstance(exc, UnicodeDecodeError):
        return "The frame payload contains a string that is not valid UTF-8."
    if isinstance(exc, msgpack.ExtraData):
        return "The frame payload has bytes after its msgpack object."
    if isinstance(exc, msgpack.StackError):
        return "The frame payload is nested too deeply."
    return (
        "The frame payload is not valid msgpack, or it uses ext types or "
        "map keys that are not strings."
    )


def _field_error(kind: str, field: str, expected: str, value: Any) -> str:
    if value is _MISSING:
        return f"The {kind} field '{field}' is missing."
    if type(value) is int:
        found = str(value)
    elif type(value) is str:
        found = f"a string of {len(value)} characters"
    else:
        found = _type_name(value)
    return f"The {kind} field '{field}' must be {expected}, not {found}."


def _is_request_id(value: Any) -> bool:
    return type(value) is int and 0 < value <= MAX_REQUEST_ID


def _check_reply(request_id: int, result: Any, error: Any) -> str | None:
    # Return what is wrong with a response, or None when it is well formed.
    if (result is _MISSING) == (error is _MISSING):
        return "The response must contain exactly one of 'result' and 'error'."
    if error is not _MISSING and type(error) is not dict:
        return _field_error("response", "error", "a map", error)
    if result is not _MISSING and type(result) is not dict:
        return _field_error("response", "result", "a map", result)
    if request_id == 0 and result is not _MISSING:
        return "A response with id 0 must contain an error, not a result."
    return None


# --- the connection -----------------------------------------------------------


class Connection:
    """The protocol state of one connection, for either role.

    Feed received bytes to ``receive_data`` and read events from
    ``next_event`` until it returns ``NEED_DATA``. ``send`` checks an
    outgoing event against the protocol and returns its framed bytes.
    Frames longer than ``max_frame_size`` are skipped without being
    buffered. A ``Connection`` is not thread-safe.

    Attributes:
        role: which side this object plays.
        max_frame_size: the largest payload accepted, in bytes.
        version: the negotiated protocol version, once known.
        peer_max_frame_size: (client role) the largest request payload
            the server accepts, from its welcome.
    """

    def __init__(self, role: Role, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE):
        if type(max_frame_size) is not int or max_frame_size < 1:
            raise ValueError("max_frame_size must be a positive integer")
        self.role = role
        self.max_frame_size = max_frame_size
        self.version: int | None = None
        self.peer_max_frame_size: int | None = None
        self._buffer = bytearray()
        self._offset = 0
        self._skip = 0
        self._eof = False
        self._failed = False
        # Receive side: the peer's handshake frame has arrived.
        self._ready = False
        # Send side: this side's handshake frame has gone out.
        self._handshake_sent = False
        self._peer_versions: tuple[int, ...] = ()
        self._offered_versions: tuple[int, ...] = ()
        # Client key handshake: the hello named a key, the challenge went
        # out (or came in), and the proof came in (or went out).
        self._key_offered = False
        self._challenged = False
        self._proved = False
        self._pending: set[int] = set()
        self._packer = msgpack.Packer(use_bin_type=True, datetime=False)
        if role is Role.SERVER:
            self._malformed = ParseRequestError
            self._handlers = {"hello": self._on_hello, "proof": self._on_proof,
                              "request": self._on_request}
        else:
            self._malformed = InternalFailureError
            self._handlers = {
                "challenge": self._on_challenge,
                "welcome": self._on_welcome,
                "response": self._on_response,
            }

    @property
    def pending_requests(self) -> frozenset[int]:
        """(client role) The ids of requests sent and still awaiting a reply."""
        return frozenset(self._pending)

    @property
    def buffered_bytes(self) -> int:
        """The number of received bytes not yet turned into events."""
        return len(self._buffer) - self._offset

    @property
    def in_frame(self) -> bool:
        """Whether a frame has started arriving and is not complete yet."""
        return bool(self._skip) or len(self._buffer) > self._offset

    # --- receiving ------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Add bytes read from the peer; ``b""`` means the peer closed.

        Raises:
            LocalProtocolError: data arrives after the end of stream.
        """
        if self._eof:
            raise LocalProtocolError("receive_data() was called after EOF")
        if not data:
            self._eof = True
            return
        if self._failed:
            return
        if self._skip:
            if len(data) <= self._skip:
                self._skip -= len(data)
                return
            data = memoryview(data)[self._skip:]
            self._skip = 0
        self._compact()
        self._buffer += data

    def _compact(self) -> None:
        offset = self._offset
        if not offset:
            return
        if offset == len(self._buffer):
            self._buffer.clear()
            self._offset = 0
        elif offset >= _COMPACT_THRESHOLD:
            del self._buffer[:offset]
            self._offset = 0

    def next_event(self) -> Event | _Sentinel:
        """Return the next event, ``NEED_DATA`` or ``CLOSED``.

        Frames received before the end of stream are still returned. Once
        a fatal ``ProtocolError`` or ``CLOSED`` has been returned, every
        later call returns ``CLOSED``.
        """
        if self._failed:
            return CLOSED
        buffer = self._buffer
        start = self._offset
        if len(buffer) - start < HEADER_SIZE:
            return self._end_of_data()
        (length,) = _HEADER.unpack_from(buffer, start)
        if length > self.max_frame_size:
            return self._skip_frame(length)
        end = start + HEADER_SIZE + length
        if end > len(buffer):
            return self._end_of_data()
        payload = buffer[start + HEADER_SIZE:end]
        self._offset = end
        return self._decode(payload)

    def _end_of_data(self) -> _Sentinel | ProtocolError:
        if not self._eof:
            return NEED_DATA
        if self.buffered_bytes or self._skip:
            return self._fail(self._malformed("The stream ended in a truncated frame."))
        self._failed = True
        return CLOSED

    def _skip_frame(self, length: int) -> ProtocolError:
        # Drop whatever part of the payload is already buffered; the
        # rest is dropped by receive_data as it arrives.
        start = self._offset + HEADER_SIZE
        dropped = min(length, len(self._buffer) - start)
        self._offset = start + dropped
        self._skip = length - dropped
        self._compact()
        kind = "request" if self.role is Role.SERVER else "reply"
        error = RequestTooLargeError(
            f"The {kind} frame of {length} bytes exceeds the maximum frame size "
            f"of {self.max_frame_size} bytes."
        )
        return self._reject(error, 0)

    def _decode(self, payload: bytearray) -> Event:
        try:
            message = msgpack.unpackb(
                payload,
                raw=False,
                strict_map_key=True,
                ext_hook=_reject_ext_type,
                max_ext_len=0,
            )
        except (ValueError, msgpack.UnpackException) as exc:
            return self._reject(self._malformed(_describe_unpack_error(exc)), 0)
        if type(message) is not dict:
            text = f"The frame payload must be a map, not {_type_name(message)}."
            return self._reject(self._malformed(text), 0)
        kind = message.get("type")
        handler = self._handlers.get(kind) if type(kind) is str else None
        if handler is None:
            return self._on_unexpected(message)
        return handler(message)

    def _reject(self, error: KmsError, request_id: int) -> ProtocolError:
        # Before the handshake is complete nothing can be trusted, so
        # every bad frame ends the connection.
        if not self._ready:
            return self._fail(error)
        return ProtocolError(error, request_id)

    def _fail(self, error: KmsError) -> ProtocolError:
        self._failed = True
        self._buffer = bytearray()
        self._offset = 0
        self._skip = 0
        return ProtocolError(error, 0, fatal=True)

    def _on_unexpected(self, message: dict[str, Any]) -> ProtocolError:
        kind = message.get("type", _MISSING)
        if kind is _MISSING:
            text = "The message field 'type' is missing."
        elif kind in ("hello", "challenge", "proof", "welcome", "request",
                      "response"):
            text = f"A {self.role.value} does not accept '{kind}' messages."
        else:
            text = "The message field 'type' names an unknown message type."
        request_id = message.get("id")
        return self._reject(self._malformed(text), request_id
                            if _is_request_id(request_id) else 0)

    # --- received messages, server role ---------------------------------------

    def _on_hello(self, message: dict[str, Any]) -> Hello | ProtocolError:
        if self._ready:
            return self._fail(ParseRequestError("A second hello was received."))
        versions = message.get("versions", _MISSING)
        if (
            type(versions) is not list
            or not versions
            or any(type(v) is not int for v in versions)
        ):
            text = _field_error("hello", "versions", "a non-empty array of integers",
                                versions)
            return self._fail(ParseRequestError(text))
        client = message.get("client", _MISSING)
        if type(client) is not str:
            text = _field_error("hello", "client", "a string", client)
            return self._fail(ParseRequestError(text))
        key_id = message.get("client_key_id")
        if key_id is not None and not _is_client_key_id(key_id):
            text = (f"The hello field 'client_key_id' must be 1 to "
                    f"{MAX_CLIENT_KEY_ID} printable ASCII characters.")
            return self._fail(ParseRequestError(text))
        try:
            negotiate_version(versions)
        except InvalidApiVersionError as exc:
            return self._fail(exc)
        self._ready = True
        self._peer_versions = tuple(versions)
        self._key_offered = key_id is not None
        return Hello(tuple(versions), client, key_id)

    def _on_proof(self, message: dict[str, Any]) -> Proof | ProtocolError:
        if not self._challenged or self._proved:
            return self._fail(ParseRequestError(
                "A proof is accepted only once, in reply to a challenge."))
        signature = message.get("signature", _MISSING)
        if type(signature) is not bytes or not 0 < len(signature) <= \
                MAX_SIGNATURE_BYTES:
            text = _field_error("proof", "signature",
                                f"bin of 1 to {MAX_SIGNATURE_BYTES} bytes", signature)
            return self._fail(ParseRequestError(text))
        self._proved = True
        return Proof(signature)

    def _on_request(self, message: dict[str, Any]) -> Request | ProtocolError:
        if not self._ready:
            return self._fail(ParseRequestError("The first frame must be a hello."))
        if self._challenged and not self._proved:
            return self._fail(ParseRequestError(
                "The client key proof must come before any request."))
        request_id = message.get("id", _MISSING)
        if not _is_request_id(request_id):
            text = _field_error("request", "id", "an integer from 1 to 2**63-1",
                                request_id)
            return ProtocolError(ParseRequestError(text), 0)
        op = message.get("op", _MISSING)
        if type(op) is not str or not 0 < len(op) <= MAX_OPERATION_LENGTH:
            text = _field_error("request", "op",
                                f"a string of 1 to {MAX_OPERATION_LENGTH} characters",
                                op)
            return ProtocolError(ParseRequestError(text), request_id)
        params = message.get("params", _MISSING)
        if type(params) is not dict:
            text = _field_error("request", "params", "a map", params)
            return ProtocolError(ParseRequestError(text), request_id)
        timeout_ms = message.get("timeout_ms")
        if timeout_ms is not None and (type(timeout_ms) is not int or timeout_ms < 0):
            text = _field_error("request", "timeout_ms", "a non-negative integer",
                                timeout_ms)
            return ProtocolError(ParseRequestError(text), request_id)
        return Request(request_id, op, params, timeout_ms)

    # --- received messages, client role ---------------------------------------

    def _on_challenge(self, message: dict[str, Any]) -> Challenge | ProtocolError:
        if not self._key_offered or self._challenged or self._ready:
            return self._fail(InternalFailureError(
                "The agent sent a challenge for a hello that named no client key."))
        nonce = message.get("nonce", _MISSING)
        if type(nonce) is not bytes or not MIN_NONCE_BYTES <= len(nonce) <= \
                MAX_NONCE_BYTES:
            text = _field_error("challenge", "nonce",
                                f"bin of {MIN_NONCE_BYTES} to {MAX_NONCE_BYTES} bytes",
                                nonce)
            return self._fail(InternalFailureError(text))
        self._challenged = True
        return Challenge(nonce)

    def _on_welcome(self, message: dict[str, Any]) -> Welcome | ProtocolError:
        if self._ready:
            return self._fail(InternalFailureError("A second welcome was received."))
        version = message.get("version", _MISSING)
        server = message.get("server", _MISSING)
        max_frame = message.get("max_frame", _MISSING)
        if type(version) is not int:
            text = _field_error("welcome", "version", "an integer", version)
        elif type(server) is not str:
            text = _field_error("welcome", "server", "a string", server)
        elif type(max_frame) is not int or max_frame < 1:
            text = _field_error("welcome", "max_frame", "a positive integer",
                                max_frame)
        elif version not in self._offered_versions:
            return self._fail(InvalidApiVersionError(
                f"The agent chose protocol version {version}, which this client "
                f"did not offer."
            ))
        else:
            self._ready = True
            self.version = version
            self.peer_max_frame_size = max_frame
            return Welcome(version, server, max_frame)
        return self._fail(InternalFailureError(text))

    def _on_response(self, message: dict[str, Any]) -> Response | ProtocolError:
        request_id = message.get("id", _MISSING)
        error = message.get("error", _MISSING)
        if not self._ready:
            return self._on_handshake_rejected(request_id, error)
        if type(request_id) is not int or not 0 <= request_id <= MAX_REQUEST_ID:
            text = _field_error("response", "id", "an integer from 0 to 2**63-1",
                                request_id)
            return ProtocolError(InternalFailureError(text), 0)
        if request_id and request_id not in self._pending:
            text = (
                f"The agent replied to request id {request_id}, which is not "
                f"awaiting a reply."
            )
            return ProtocolError(InternalFailureError(text), request_id)
        self._pending.discard(request_id)
        result = message.get("result", _MISSING)
        text = _check_reply(request_id, result, error)
        if text:
            return ProtocolError(InternalFailureError(text), request_id)
        if result is _MISSING:
            return Response(request_id, error=error)
        return Response(request_id, result=result)

    def _on_handshake_rejected(self, request_id: Any, error: Any) -> ProtocolError:
        # The server may reply to a hello with an error (an unsupported
        # version, say) instead of a welcome; surface it as typed.
        if request_id == 0 and type(error) is dict:
            return self._fail(error_from_wire(error))
        return self._fail(InternalFailureError("The first frame must be a welcome."))

    # --- sending --------------------------------------------------------------

    def send(self, event: Event) -> bytes:
        """Check ``event`` against the protocol and return its framed bytes.

        Raises:
            LocalProtocolError: this role may not send the event now.
            InvalidParameterError: (client role) the event contains a value
                that msgpack cannot encode.
            InternalFailureError: (server role) the same, for a reply.
            RequestTooLargeError: (client role) the request is larger than
                the server's maximum frame size.
        """
        if self.role is Role.CLIENT:
            if type(event) is Request:
                return self._send_request(event)
            if type(event) is Hello:
                return self._send_hello(event)
            if type(event) is Proof:
                return self._send_proof(event)
        else:
            if type(event) is Response:
                return self._send_response(event)
            if type(event) is Welcome:
                return self._send_welcome(event)
            if type(event) is Challenge:
                return self._send_challenge(event)
        name = type(event).__name__
        raise LocalProtocolError(f"A {self.role.value} cannot send {name} events")

    def _frame(self, message: dict[str, Any]) -> bytes:
        try:
            payload = self._packer.pack(message)
        except (TypeError, ValueError, OverflowError) as exc:
            # A client's params come from its caller; a server's result is
            # built by the agent, so there the fault is internal.
            error_class = (InvalidParameterError if self.role is Role.CLIENT
                           else InternalFailureError)
            raise error_class(
                f"The {message['type']} contains a value that msgpack cannot encode. "
                f"Use only nil, booleans, integers, floats, strings, bytes, "
                f"arrays and maps."
            ) from exc
        if len(payload) > _MAX_ENCODABLE_LENGTH:
            raise RequestTooLargeError(
                f"The {message['type']} frame of {len(payload)} bytes cannot be "
                f"framed."
            )
        return _HEADER.pack(len(payload)) + payload

    def _send_hello(self, event: Hello) -> bytes:
        if self._handshake_sent:
            raise LocalProtocolError("hello was already sent")
        versions = tuple(event.versions)
        if not versions or any(type(v) is not int for v in versions):
            raise LocalProtocolError("hello versions must be a non-empty list of ints")
        message = {"type": "hello", "versions": list(versions), "client": event.client}
        if event.client_key_id is not None:
            if not _is_client_key_id(event.client_key_id):
                raise LocalProtocolError(
                    f"client_key_id must be 1 to {MAX_CLIENT_KEY_ID} printable "
                    "ASCII characters")
            message["client_key_id"] = event.client_key_id
        data = self._frame(message)
        self._handshake_sent = True
        self._offered_versions = versions
        self._key_offered = event.client_key_id is not None
        return data

    def _send_proof(self, event: Proof) -> bytes:
        if not self._challenged or self._proved:
            raise LocalProtocolError("a proof must be sent once, after a challenge")
        if type(event.signature) is not bytes or not 0 < len(event.signature) <= \
                MAX_SIGNATURE_BYTES:
            raise LocalProtocolError(
                f"the proof signature must be 1 to {MAX_SIGNATURE_BYTES} bytes")
        self._proved = True
        return self._frame({"type": "proof", "signature": event.signature})

    def _send_challenge(self, event: Challenge) -> bytes:
        if not self._key_offered or self._challenged or self._handshake_sent:
            raise LocalProtocolError(
                "a challenge must be sent once, after a hello naming a client key")
        if type(event.nonce) is not bytes or not MIN_NONCE_BYTES <= \
                len(event.nonce) <= MAX_NONCE_BYTES:
            raise LocalProtocolError(
                f"the nonce must be {MIN_NONCE_BYTES} to {MAX_NONCE_BYTES} bytes")
        self._challenged = True
        return self._frame({"type": "challenge", "nonce": event.nonce})

    def _send_request(self, event: Request) -> bytes:
        if not self._ready:
            raise LocalProtocolError("requests may be sent only after the welcome")
        if not _is_request_id(event.id):
            raise LocalProtocolError("request id must be an int from 1 to 2**63-1")
        if event.id in self._pending:
            raise LocalProtocolError(f"request id {event.id} is already in flight")
        if type(event.op) is not str or not event.op:
            raise LocalProtocolError("request op must be a non-empty string")
        message = {"type": "request", "id": event.id, "op": event.op,
                   "params": event.params}
        if event.timeout_ms is not None:
            message["timeout_ms"] = event.timeout_ms
        data = self._frame(message)
        limit = self.peer_max_frame_size
        if limit is not None and len(data) - HEADER_SIZE > limit:
            raise RequestTooLargeError(
                f"The request frame of {len(data) - HEADER_SIZE} bytes exceeds the "
                f"agent's maximum frame size of {limit} bytes."
            )
        self._pending.add(event.id)
        return data

    def _send_welcome(self, event: Welcome) -> bytes:
        if not self._ready or self._handshake_sent:
            raise LocalProtocolError("welcome must be sent once, after the hello")
        if self._challenged and not self._proved:
            raise LocalProtocolError("welcome must wait for the client key proof")
        if event.version not in self._peer_versions:
            raise LocalProtocolError(
                f"version {event.version} was not offered by the client"
            )
        if event.version not in SUPPORTED_VERSIONS:
            raise LocalProtocolError(f"version {event.version} is not supported")
        data = self._frame({"type": "welcome", "version": event.version,
                            "server": event.server, "max_frame": event.max_frame})
        self._handshake_sent = True
        self.version = event.version
        return data

    def _send_response(self, event: Response) -> bytes:
        if type(event.id) is not int or not 0 <= event.id <= MAX_REQUEST_ID:
            raise LocalProtocolError("response id must be an int from 0 to 2**63-1")
        result = _MISSING if event.result is None else event.result
        error = _MISSING if event.error is None else event.error
        problem = _check_reply(event.id, result, error)
        if problem:
            raise LocalProtocolError(problem)
        if result is _MISSING:
            return self._frame({"type": "response", "id": event.id, "error": error})
        if not self._handshake_sent:
            raise LocalProtocolError("a result may be sent only after the welcome")
        return self._frame({"type": "response", "id": event.id, "result": result})
