"""The loopback metrics listener and the textfile writer."""

from __future__ import annotations

import os
import stat

import pytest
import trio

from agent.ops import exposition


def render() -> str:
    return "# HELP up Up.\n# TYPE up gauge\nup 1\n"


async def fetch(port: int, request: bytes) -> bytes:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(request)
        reply = b""
        while chunk := await stream.receive_some(65536):
            reply += chunk
    return reply


@pytest.fixture
async def port(nursery):
    listeners = await exposition.open_metrics_listeners("127.0.0.1", 0)
    host, bound = await nursery.start(exposition.serve_metrics, render, listeners)
    return bound


async def test_get_metrics(port):
    """GET /metrics returns the text format with its content type."""
    reply = await fetch(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    head, body = reply.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200 OK")
    assert b"Content-Type: text/plain; version=0.0.4; charset=utf-8" in head
    assert body == render().encode()


async def test_head_has_no_body(port):
    """HEAD /metrics returns the headers only."""
    reply = await fetch(port, b"HEAD /metrics HTTP/1.0\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 200 OK")
    assert reply.endswith(b"\r\n\r\n")


async def test_other_path_not_found(port):
    """Any other path is 404."""
    reply = await fetch(port, b"GET / HTTP/1.1\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 404")


async def test_post_not_allowed(port):
    """Methods other than GET and HEAD are 405 with an Allow header."""
    reply = await fetch(port, b"POST /metrics HTTP/1.1\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 405")
    assert b"Allow: GET, HEAD" in reply


async def test_oversized_head_rejected(port):
    """A request head over 8 KiB gets 400 instead of being buffered."""
    reply = await fetch(port, b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 20000)
    assert reply.startswith(b"HTTP/1.1 400")


async def test_garbage_request_rejected(port):
    """A request line that is not HTTP gets 400."""
    reply = await fetch(port, b"hello\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 400")


async def test_busy_address_startup_error(port):
    """A port already taken is a startup error naming the address."""
    with pytest.raises(exposition.StartupError, match=f"127.0.0.1:{port}"):
        await exposition.open_metrics_listeners("127.0.0.1", port)


def test_textfile_replaced_readable(tmp_path):
    """The textfile is replaced whole and readable by node_exporter (0644)."""
    path = tmp_path / "kms_agent.prom"
    path.write_text("old")
    old_umask = os.umask(0o077)
    try:
        exposition.write_textfile(path, render())
    finally:
        os.umask(old_umask)
    assert path.read_text() == render()
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kms_agent.prom"]


async def test_textfile_loop_writes_on_cancel(tmp_path):
    """The loop writes at once, and once more when cancelled."""
    path = tmp_path / "kms_agent.prom"
    texts = iter(["first\n", "last\n"])
    with trio.move_on_after(0):
        await exposition.textfile_loop(lambda: next(texts), path, 3600)
    assert path.read_text() == "last\n"
