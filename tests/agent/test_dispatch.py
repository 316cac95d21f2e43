"""The dispatcher: stages around requests, unexpected errors, log lines."""

from __future__ import annotations

import io
import json
import logging

import pytest

from agent.context import Peer, RequestContext
from agent.logs import log, setup_logging
from agent.rpc.dispatch import Dispatcher, Operation, Stage
from agent.rpc.params import Param
from client import errors


async def echo(services, ctx, values):
    return {"Echo": values.get("Text", "")}


async def explode(services, ctx, values):
    raise RuntimeError("secret detail from a bug")


class Recorder(Stage):
    def __init__(self, refuse: bool = False):
        self.refuse = refuse
        self.seen = []

    async def before(self, ctx, operation, values):
        if self.refuse:
            raise errors.NoPermissionError()

    async def after(self, ctx, operation, values, result, failure):
        self.seen.append((ctx.operation, dict(result) if result else None,
                          failure and failure.code))


def dispatcher(*stages):
    operations = [Operation("Echo", echo, (Param("Text"),)),
                  Operation("Explode", explode)]
    return Dispatcher(operations, services=None, stages=stages)


def context(op):
    return RequestContext.new(op, Peer(1, 1, 1))


async def test_stage_sees_success():
    """after() gets the result of a successful request."""
    recorder = Recorder()
    result = await dispatcher(recorder).handle(context("Echo"), {"Text": "hi"})
    assert result["Echo"] == "hi"
    assert recorder.seen == [("Echo", {"Echo": "hi"}, None)]


async def test_stage_refusal_skips_handler():
    """A refusing before() stops the request with its error."""
    recorder = Recorder(refuse=True)
    with pytest.raises(errors.NoPermissionError) as caught:
        await dispatcher(recorder).handle(context("Echo"), {})
    assert caught.value.request_id
    assert recorder.seen == [("Echo", None, "Forbidden.NoPermission")]


async def test_unexpected_error_is_generic():
    """A bug becomes InternalFailure without its detail, and stages see it."""
    recorder = Recorder()
    with pytest.raises(errors.InternalFailureError) as caught:
        await dispatcher(recorder).handle(context("Explode"), {})
    assert "secret detail" not in str(caught.value)
    assert recorder.seen == [("Explode", None, "InternalFailure")]


async def test_unknown_operation_reaches_stages():
    """An unknown operation is refused and still recorded by stages."""
    recorder = Recorder()
    with pytest.raises(errors.InvalidApiNameError):
        await dispatcher(recorder).handle(context("Nope"), {})
    assert recorder.seen == [("Nope", None, "InvalidApiName")]


def test_log_rejects_unknown_fields():
    """Log fields outside the vocabulary are a programming error."""
    with pytest.raises(ValueError):
        log(logging.INFO, "x", plaintext="oops")


async def test_only_failures_logged_without_log_successes():
    """With log_successes off, a failed request has its line and a success none."""
    stream = io.StringIO()
    setup_logging("info", "json", stream)
    quiet = Dispatcher([Operation("Echo", echo, (Param("Text"),))], services=None,
                       log_successes=False)
    await quiet.handle(context("Echo"), {"Text": "hi"})
    with pytest.raises(errors.KmsError):
        await quiet.handle(context("Echo"), {"Txt": "hi"})
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [(line["op"], line["code"]) for line in lines] == [
        ("Echo", "InvalidParameter")]


async def test_json_log_line_per_request():
    """Each request writes one JSON line with the vocabulary fields."""
    stream = io.StringIO()
    setup_logging("info", "json", stream)
    await dispatcher().handle(context("Echo"), {"Text": "hi"})
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert len(lines) == 1
    assert lines[0]["op"] == "Echo"
    assert lines[0]["code"] == "OK"
    assert lines[0]["peer_uid"] == 1


def test_text_log_cannot_be_forged():
    """Text logs quote values, so a newline in an op name stays on its line."""
    stream = io.StringIO()
    setup_logging("info", "text", stream)
    log(logging.INFO, "request", op="X\n16:45:00 INFO request op=Forged code=OK")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    assert 'op="X\\n16:45:00 INFO request op=Forged code=OK"' in lines[0]
