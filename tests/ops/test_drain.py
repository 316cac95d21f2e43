"""Server.drain with a slow operation: stop accepting, finish, time out."""

from __future__ import annotations

import errno
import socket
import struct

import msgpack

import pytest
import trio

from agent.rpc.dispatch import Dispatcher, Operation
from agent.rpc.server import INLINE_OPERATIONS, Server, bind_socket
from client.aio import AsyncKmsClient


class Gate:
    """An operation that waits until the test opens the gate."""

    def __init__(self):
        self.entered = trio.Event()
        self.open = trio.Event()

    async def handler(self, services, ctx, values):
        self.entered.set()
        await self.open.wait()
        return {"Done": True}


@pytest.fixture
async def served(tmp_path, nursery):
    gate = Gate()
    path = tmp_path / "agent.sock"
    # "Encrypt" runs on the connection's reader, as a quick operation does.
    assert "Encrypt" in INLINE_OPERATIONS
    dispatcher = Dispatcher([Operation("Slow", gate.handler),
                             Operation("Encrypt", gate.handler)], None)
    server = Server(bind_socket(path, 0o600, None), dispatcher, 262144)
    await nursery.start(server.serve)
    return server, gate, path


async def call_slow(path) -> None:
    async with AsyncKmsClient(path) as client:
        await client.call("Slow")


def connect_refused(path) -> bool:
    with socket.socket(socket.AF_UNIX) as probe:
        try:
            probe.connect(str(path))
        except OSError as exc:
            return exc.errno in (errno.ECONNREFUSED, errno.ENOENT)
    return False


async def test_drain_finishes_in_flight(served, nursery):
    """A request running when the drain starts gets its reply."""
    server, gate, path = served
    replies = []

    async def call():
        async with AsyncKmsClient(path) as client:
            replies.append(await client.call("Slow"))

    nursery.start_soon(call)
    await gate.entered.wait()
    nursery.start_soon(server.drain, 60)
    await trio.sleep(0)
    gate.open.set()
    with trio.fail_after(30):
        while not replies:
            await trio.sleep(0.01)
    assert replies[0]["Done"] is True


async def test_drain_refuses_new_connections(served, nursery):
    """Once draining, a new connection is refused at once instead of hanging."""
    server, gate, path = served
    nursery.start_soon(call_slow, path)
    await gate.entered.wait()
    nursery.start_soon(server.drain, 60)
    await trio.sleep(0.05)
    assert await trio.to_thread.run_sync(connect_refused, path)
    gate.open.set()


async def test_drain_returns_at_deadline(served, nursery):
    """A request that outlasts the deadline does not hold the drain."""
    server, gate, path = served
    replies = []

    async def call():
        async with AsyncKmsClient(path) as client:
            replies.append(await client.call("Slow"))

    nursery.start_soon(call)
    await gate.entered.wait()
    with trio.fail_after(30):
        await server.drain(0.1)
    assert replies == []
    gate.open.set()


def _frame(message: dict) -> bytes:
    payload = msgpack.packb(message, use_bin_type=True)
    return struct.pack(">I", len(payload)) + payload


def _read_frames(sock: socket.socket, count: int) -> list[dict]:
    # Read ``count`` frames, or fewer if the server closes the connection.
    buffer, frames = b"", []
    while len(frames) < count:
        while len(buffer) < 4 or len(buffer) < 4 + struct.unpack(">I", buffer[:4])[0]:
            chunk = sock.recv(65536)
            if not chunk:
                return frames
            buffer += chunk
        length = struct.unpack(">I", buffer[:4])[0]
        frames.append(msgpack.unpackb(buffer[4:4 + length], raw=False))
        buffer = buffer[4 + length:]
    return frames


async def test_drain_rejects_read_requests_not_started(served, nursery):
    """Requests read with one in progress get ServiceUnavailable, not silence."""
    server, gate, path = served
    sock = socket.socket(socket.AF_UNIX)
    sock.settimeout(30)
    await trio.to_thread.run_sync(sock.connect, str(path))
    hello = {"type": "hello", "versions": [1], "client": "test"}
    # The hello and three quick requests arrive in one write, so the reader
    # has the last two buffered while the first one waits at the gate.
    requests = b"".join(_frame({"type": "request", "id": number, "op": "Encrypt",
                                "params": {}}) for number in (1, 2, 3))
    await trio.to_thread.run_sync(sock.sendall, _frame(hello) + requests)
    await gate.entered.wait()
    nursery.start_soon(server.drain, 60)
    await trio.sleep(0.05)
    gate.open.set()
    frames = await trio.to_thread.run_sync(_read_frames, sock, 4)
    sock.close()
    assert frames[0]["type"] == "welcome"
    replies = {frame["id"]: frame for frame in frames[1:]}
    assert replies[1]["result"]["Done"] is True
    for number in (2, 3):
        assert replies[number]["error"]["Code"] == "ServiceUnavailableTemporary"
