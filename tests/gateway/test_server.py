"""The gateway's HTTP server on a loopback port: framing, limits, faults.

The server runs in-process on 127.0.0.1 with a fake-keystore agent, or a
fake dispatcher where a test needs a request to block or fail; a raw h11
client sends the bytes, so malformed and oversized requests can be sent
exactly.
"""

from __future__ import annotations

import json

import h11
import pytest
import trio
import trio.testing

from agent.gateway import messages, protobuf
from agent.gateway.server import GatewayServer, Limits
from tests.gateway import harness
from tests.gateway.harness import GatewayAgent, sign_acs3

LIMITS = dict(max_body_bytes=4096, max_connections=8, max_in_flight=4,
              idle_timeout=30.0, request_timeout=30.0)


class BlockingDispatcher:
    """A dispatcher whose requests wait for ``release`` or raise."""

    operations: dict = {}

    def __init__(self, fail: bool = False):
        self.fail = fail
        self.started = trio.Event()
        self.release = trio.Event()

    async def handle(self, ctx, params):
        if self.fail:
            raise RuntimeError("boom")
        self.started.set()
        await self.release.wait()
        return {"RequestId": ctx.request_id}


class Served:
    """A running server and its port."""

    def __init__(self, server: GatewayServer, port: int):
        self.server, self.port = server, port

    async def connect(self) -> trio.SocketStream:
        return await trio.open_tcp_stream("127.0.0.1", self.port)


@pytest.fixture
async def agent(tmp_path):
    instance = GatewayAgent(tmp_path)
    yield instance
    await instance.store.aclose()


async def start(nursery, agent: GatewayAgent, dispatcher=None, extra=(),
                **limits) -> Served:
    if dispatcher is not None:
        agent.gateway.dispatcher = dispatcher
    server = GatewayServer(agent.gateway, Limits(**{**LIMITS, **limits}))
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    await nursery.start(server.serve, [*listeners, *extra])
    return Served(server, port)


def raw_request(agent: GatewayAgent, action: str = "ListKeys", key_id=None,
                secret=None, **query) -> bytes:
    request = sign_acs3(agent, action, query, key_id=key_id or harness.ACCESS_KEY_ID,
                        secret=secret or harness.ACCESS_KEY_SECRET)
    head = f"POST {request.target} HTTP/1.1\r\n" + "".join(
        f"{name}: {value}\r\n" for name, value in request.headers)
    return (head + "content-length: 0\r\n\r\n").encode("latin-1")


async def read_response(stream, conn: h11.Connection) -> tuple[int, dict, bytes]:
    status, headers, body = None, {}, b""
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await stream.receive_some(65536))
        elif isinstance(event, h11.Response):
            status = event.status_code
            headers = {k.decode(): v.decode() for k, v in event.headers}
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            return status, headers, body
        else:
            raise AssertionError(f"unexpected {event!r}")


async def exchange(served: Served, data: bytes) -> tuple[int, dict, bytes]:
    stream = await served.connect()
    async with stream:
        await stream.send_all(data)
        conn = h11.Connection(h11.CLIENT)
        conn.send(h11.Request(method="POST", target="/", headers=[("host", "x")]))
        return await read_response(stream, conn)


async def test_keep_alive_serves_two_requests(agent):
    """Two requests on one connection get two replies."""
    async with trio.open_nursery() as nursery:
        served = await start(nursery, agent)
        stream = await served.connect()
        conn = h11.Connection(h11.CLIENT)
        statuses = []
        for _ in range(2):
            await stream.send_all(raw_request(agent))
            conn.send(h11.Request(method="POST", target="/", headers=[("host", "x")]))
            conn.send(h11.EndOfMessage())
            status, _, body = await read_response(stream, conn)
            statuses.append((status, json.loads(body)["PageSize"]))
            conn.start_next_cycle()
        await stream.aclose()
        nursery.cancel_scope.cancel()
    assert statuses == [(200, 10), (200, 10)]


async def test_malformed_request_line_answered(agent):
    """Garbage instead of HTTP gets a ParseRequestParameterException reply."""
    async with trio.open_nursery() as nursery:
        served = await start(nursery, agent)
        status, headers, body = await exchange(served, b"HELLO THERE\r\n\r\n")
        after, _, _ = await exchange(served, raw_request(agent))
        nursery.cancel_scope.cancel()
    assert status == 400
    assert json.loads(body)["Code"] == "ParseRequestParameterException"
    assert headers["content-type"] == "application/json;charset=utf-8"
    assert after == 200


async def test_declared_large_body_refused(agent):
    """A Content-Length over the limit gets RequestEntityTooLarge."""
    async with trio.open_nursery() as nursery:
        served = await start(nursery, agent)
        status, _, body = await exchange(
            served, b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 5000\r\n\r\n")
        nursery.cancel_scope.cancel()
    assert status == 413
    assert json.loads(body)["Code"] == "RequestEntityTooLarge"


async def test_chunked_large_body_refused(agent):
    """A chunked body that grows over the limit is refused as it arrives."""
    chunk = b"1000\r\n" + b"a" * 4096 + b"\r\n"
    data = (b"POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n"
            + chunk * 2)
    async with trio.open_nursery() as nursery:
        served = await start(nursery, agent)
        status, _, body = await exchange(served, data)
        nursery.cancel_scope.cancel()
    assert status == 413
    assert json.loads(body)["Code"] == "RequestEntityTooLarge"


async def test_large_dkms_body_gets_protobuf_error(agent):
    """An oversized dedicated-instance request gets a protobuf Error."""
    data = (b"POST / HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-protobuf\r\n"
            b"x-kms-apiname: Encrypt\r\ncontent-length: 9000\r\n\r\n")
    async with trio.open_nursery() as nursery:
        served = await start(nursery, agent)
        status, headers, body = await exchange(served, data)
        nursery.cancel_scope.cancel()
    assert status == 413
    assert headers["content-type"] == "application/x-protobuf"
    assert protobuf.decode(messages.ERROR, body)["ErrorCode"] == "RequestEntityTooLarge"


async def test_too_many_in_flight_throttled(agent):
    """A request over max_in_flight gets Rejected.Throttling (429)."""
    dispatcher = BlockingDispatcher()
    async with trio.open_nursery() as nursery:
        served = await start(nursery, agent, dispatcher, max_in_flight=1)
        nursery.start_soon(exchange, served, raw_request(agent))
        await dispatcher.started.wait()
        status, _, body = await exchange(served, raw_request(agent))
        dispatcher.release.set()
        nursery.cancel_scope.cancel()
    assert status == 429
    assert json.loads(body)["Code"] == "Rejected.Throttling"


async def test_unexpected_failure_answered(agent):
    """An unexpected exception gets InternalFailure and the server goes on."""
    async with trio.open_nursery() as nursery:
        served = await start(nursery, agent, BlockingDispatcher(fail=True))
        status, _, body = await exchange(served, raw_request(agent))
        again, _, _ = await exchange(served, raw_request(agent))
        nursery.cancel_scope.cancel()
    assert status == 500
    assert json.loads(body)["Code"] == "InternalFailure"
    assert again == 500


async def test_idle_connection_closed(agent):
    """A connection that sends nothing is closed after idle_timeout."""
    async with trio.open_nursery() as nursery:
        served = await start(nursery, agent, idle_timeout=0.1)
        stream = await served.connect()
        with trio.fail_after(10):
            data = await stream.receive_some(100)
        await stream.aclose()
        nursery.cancel_scope.cancel()
    assert data == b""


async def test_drain_closes_idle_connections(agent):
    """drain closes idle keep-alive connections and stops accepting."""
    async with trio.open_nursery() as nursery:
        served = await start(nursery, agent)
        stream = await served.connect()
        await trio.testing.wait_all_tasks_blocked()
        await served.server.drain(5)
        with trio.fail_after(10):
            data = await stream.receive_some(100)
        await stream.aclose()
        nursery.cancel_scope.cancel()
    assert data == b""


async def test_too_many_connections_refused(agent):
    """A connection over max_connections gets ServiceUnavailableTemporary."""
    async with trio.open_nursery() as nursery:
        served = await start(nursery, agent, max_connections=1)
        first = await served.connect()
        await trio.testing.wait_all_tasks_blocked()
        status, _, body = await exchange(served, raw_request(agent))
        await first.aclose()
        nursery.cancel_scope.cancel()
    assert status == 503
    assert json.loads(body)["Code"] == "ServiceUnavailableTemporary"


async def test_unix_socket_peer_matches_principal(agent, tmp_path):
    """A principal naming this uid is served on the Unix socket only."""
    def request() -> bytes:
        return raw_request(agent, key_id=harness.UNIX_KEY_ID,
                           secret=harness.UNIX_SECRET)

    path = tmp_path / "gateway.sock"
    unix = trio.socket.socket(trio.socket.AF_UNIX)
    await unix.bind(str(path))
    unix.listen()
    async with trio.open_nursery() as nursery:
        served = await start(nursery, agent, extra=[trio.SocketListener(unix)])
        over_tcp, _, tcp_body = await exchange(served, request())
        stream = await trio.open_unix_socket(str(path))
        async with stream:
            await stream.send_all(request())
            conn = h11.Connection(h11.CLIENT)
            conn.send(h11.Request(method="POST", target="/", headers=[("host", "x")]))
            over_unix, _, _ = await read_response(stream, conn)
        nursery.cancel_scope.cancel()
    assert over_unix == 200
    assert over_tcp == 403
    assert json.loads(tcp_body)["Code"] == "Forbidden.UnknownCaller"
