"""Tests of ``AsyncKmsClient`` against the fake agent on a real Unix socket."""

from __future__ import annotations

import threading

import pytest
import trio

from client import AsyncKmsClient, errors
from client.wire import Response, error_response

from conftest import echo_handler


def hold_then_reverse(count: int, reply_order: list[int]):
    """Return a handler that replies to ``count`` requests in reverse order.

    The ids it replies to go to ``reply_order``, in the order sent.
    """
    held = []
    lock = threading.Lock()

    def handler(request, reply):
        with lock:
            held.append(request)
            batch = list(reversed(held)) if len(held) == count else []
        for waiting in batch:
            reply_order.append(waiting.id)
            echo_handler(waiting, reply)
        return True
    return handler


async def test_call_returns_result_map(agent):
    """call returns the result map of the reply."""
    async with AsyncKmsClient(agent.path) as client:
        result = await client.call("DescribeKey", KeyId="key-1")
    assert result == {"Op": "DescribeKey", "KeyId": "key-1", "RequestId": "req-1"}


async def test_wrapper_sends_api_params(agent):
    """A typed wrapper awaits to the result with PascalCase params sent."""
    async with AsyncKmsClient(agent.path) as client:
        result = await client.encrypt("k", "text", {"a": "b"})
    assert result["Plaintext"] == b"text"
    assert agent.requests[0].params == {"KeyId": "k", "Plaintext": b"text",
                                        "EncryptionContext": {"a": "b"}}


async def test_replies_out_of_order(agent):
    """Concurrent calls on one connection each get their own reply."""
    reply_order = []
    agent.handler = hold_then_reverse(10, reply_order)
    results = {}

    async def one_call(number):
        results[number] = await client.call("Echo", Tag=number)
    async with AsyncKmsClient(agent.path) as client:
        async with trio.open_nursery() as nursery:
            for number in range(10):
                nursery.start_soon(one_call, number)
    assert {number: result["Tag"] for number, result in results.items()} == {
        number: number for number in range(10)}
    assert reply_order == sorted(reply_order, reverse=True)
    assert agent.accepted == 1


async def test_typed_error_raised(agent):
    """An error reply raises its class with status and request id."""
    def handler(request, reply):
        reply(error_response(errors.KeyDisabledError(request_id="r-1"), request.id))
        return True
    agent.handler = handler
    async with AsyncKmsClient(agent.path) as client:
        with pytest.raises(errors.KeyDisabledError) as caught:
            await client.encrypt("k", b"x")
    assert caught.value.http_status == 409
    assert caught.value.request_id == "r-1"


async def test_broken_connection_fails_waiters(agent):
    """When the agent drops the connection every waiting call fails."""
    held = []

    def drop_at_three(request, reply):
        held.append(request)
        return len(held) < 3
    agent.handler = drop_at_three
    failures = []

    async def one_call():
        try:
            await client.call("CreateKey")
        except errors.ServerUnreachableError as exc:
            failures.append(exc)
    async with AsyncKmsClient(agent.path) as client:
        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(one_call)
    assert len(failures) == 3


async def test_reconnect_after_server_drop(agent):
    """After the agent drops the connection the next call reconnects."""
    def reply_then_drop(request, reply):
        echo_handler(request, reply)
        return False
    agent.handler = reply_then_drop
    async with AsyncKmsClient(agent.path) as client:
        await client.call("ListKeys")
        await trio.to_thread.run_sync(agent.wait_dropped)
        result = await client.call("DescribeKey", KeyId="k")
    assert result["KeyId"] == "k"
    assert agent.accepted == 2


async def test_timeout_raises_read_timeout(agent):
    """No reply within the timeout raises ReadTimeoutError."""
    agent.handler = lambda request, reply: True
    async with AsyncKmsClient(agent.path, timeout=0.2) as client:
        with pytest.raises(errors.ReadTimeoutError):
            await client.call("ListKeys")


async def test_late_reply_ignored(agent):
    """A reply after its call timed out is dropped; the connection goes on."""
    held = []

    def reply_late(request, reply):
        if request.id == 1:
            held.append(request)
            return True
        echo_handler(held[0], reply)
        echo_handler(request, reply)
        return True
    agent.handler = reply_late
    async with AsyncKmsClient(agent.path, timeout=0.2) as client:
        with pytest.raises(errors.ReadTimeoutError):
            await client.call("First")
        client.timeout = 10
        result = await client.call("Second")
    assert result["Op"] == "Second"
    assert agent.accepted == 1


async def test_missing_socket_unreachable(tmp_path):
    """Opening a client on a missing socket raises ServerUnreachableError."""
    with pytest.raises(errors.ServerUnreachableError, match="absent.sock"):
        async with AsyncKmsClient(tmp_path / "absent.sock"):
            pass


async def test_rejected_hello_raises_typed(agent):
    """An agent that rejects the hello raises the typed error on open."""
    agent.hello_error = errors.InvalidApiVersionError("Supported versions: 7.")
    with pytest.raises(errors.InvalidApiVersionError):
        async with AsyncKmsClient(agent.path):
            pass


async def test_call_before_open_raises(agent):
    """Calling a client that was never entered is a usage error."""
    with pytest.raises(RuntimeError, match="async with"):
        await AsyncKmsClient(agent.path).call("ListKeys")


async def test_body_exception_not_grouped(agent):
    """An exception in the body reaches the caller as itself."""
    with pytest.raises(KeyError):
        async with AsyncKmsClient(agent.path):
            raise KeyError("from the body")


async def test_unknown_code_raises_unknown_error(agent):
    """An error code the client does not know raises UnknownError."""
    def handler(request, reply):
        reply(Response(request.id, error={"Code": "Future.Code", "HttpStatus": 451}))
        return True
    agent.handler = handler
    async with AsyncKmsClient(agent.path) as client:
        with pytest.raises(errors.UnknownError):
            await client.call("ListKeys")


async def test_close_fails_pending_calls(agent):
    """Closing the client fails the calls still waiting."""
    agent.handler = lambda request, reply: True
    failures = []

    async def one_call():
        try:
            await client.call("ListKeys")
        except errors.ServerUnreachableError as exc:
            failures.append(exc)
    async with trio.open_nursery() as nursery:
        client = AsyncKmsClient(agent.path)
        await client.__aenter__()
        nursery.start_soon(one_call)
        await trio.to_thread.run_sync(agent.wait_for_requests, 1)
        await client.aclose()
    assert len(failures) == 1

