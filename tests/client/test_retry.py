"""Client retries: the policy as a table, then both clients on a fake agent.

The table pins which errors each kind of operation retries. The client
tests run ``KmsClient`` and ``AsyncKmsClient`` against the fake agent on
a real Unix socket, and count the requests it received.
"""

from __future__ import annotations

import functools

import pytest
import trio

from client import AsyncKmsClient, KmsClient, errors, retry, sync
from client.retry import RetryPolicy, mark_not_sent
from client.wire import error_response

from conftest import FakeAgent, echo_handler

FAST = RetryPolicy(retries=3, base_delay=0.001, max_delay=0.002, deadline=30)


def not_sent(error: errors.KmsError) -> errors.KmsError:
    return mark_not_sent(error)


POLICY_TABLE = [
    # (operation, error, retried)
    ("CreateKey", errors.ThrottlingError(), True),
    ("CreateKey", not_sent(errors.ServerUnreachableError()), True),
    ("CreateKey", not_sent(errors.ReadTimeoutError()), True),
    ("CreateKey", errors.ServerUnreachableError(), False),
    ("CreateKey", errors.ReadTimeoutError(), False),
    ("CreateKey", errors.InternalFailureError(), False),
    ("CreateKey", errors.ServiceUnavailableError(), False),
    ("CreateKey", errors.AuditUnavailableError(), False),
    ("CreateSecret", errors.InternalFailureError(), False),
    ("CreateKeyVersion", errors.ReadTimeoutError(), False),
    ("ScheduleKeyDeletion", errors.InternalFailureError(), False),
    ("RotateSecret", errors.ServiceUnavailableError(), False),
    ("Encrypt", errors.InternalFailureError(), True),
    ("Decrypt", errors.ReadTimeoutError(), True),
    ("DescribeKey", errors.ServerUnreachableError(), True),
    ("ListKeys", errors.ServiceUnavailableError(), True),
    ("GetSecretValue", errors.AuditUnavailableError(), True),
    ("EnableKey", errors.InternalFailureError(), True),
    ("PutSecretValue", errors.ServiceUnavailableError(), True),
    ("Encrypt", errors.KeyNotFoundError(), False),
    ("Encrypt", errors.KeyDisabledError(), False),
    ("Encrypt", errors.InvalidParameterError(), False),
    ("Encrypt", errors.NoPermissionError(), False),
    ("Encrypt", errors.UnknownError("Throttling", 400), False),
    ("CreateKey", not_sent(errors.UnknownCallerError()), False),
    ("DescribeKey", errors.LimitExceededError(), False),
]


def case_id(operation: str, error: errors.KmsError) -> str:
    sent = "not_sent" if retry.was_not_sent(error) else "sent"
    return f"{operation}-{error.code}-{sent}"


@pytest.mark.parametrize("operation, error, retried", POLICY_TABLE,
                         ids=[case_id(op, err) for op, err, _ in POLICY_TABLE])
def test_policy_table(operation, error, retried):
    """Each operation retries exactly the errors the table lists."""
    assert RetryPolicy().should_retry(operation, error) is retried


def test_delay_has_full_jitter():
    """Waits range from 0 to the exponential cap, which max_delay bounds."""
    policy = RetryPolicy(base_delay=0.1, max_delay=1.0)
    assert policy.delay(0, lambda: 1.0) == pytest.approx(0.1)
    assert policy.delay(3, lambda: 1.0) == pytest.approx(0.8)
    assert policy.delay(6, lambda: 1.0) == pytest.approx(1.0)
    assert policy.delay(3, lambda: 0.0) == 0.0
    assert policy.delay(3, lambda: 0.5) == pytest.approx(0.4)


def test_gives_up_after_retries():
    """No wait is planned once the retries are spent."""
    policy = RetryPolicy(retries=2)
    error = errors.ThrottlingError()
    assert policy.next_delay("ListKeys", error, 1, 0.0, 30.0) is not None
    assert policy.next_delay("ListKeys", error, 2, 0.0, 30.0) is None


def test_gives_up_at_deadline():
    """No retry starts after the deadline, own or the client's."""
    error = errors.ThrottlingError()
    mine = RetryPolicy(deadline=1.0)
    assert mine.next_delay("ListKeys", error, 0, 0.99, 30.0, lambda: 1.0) is None
    assert mine.next_delay("ListKeys", error, 0, 0.5, 30.0, lambda: 1.0) is not None
    clients = RetryPolicy()
    assert clients.next_delay("ListKeys", error, 0, 2.0, 2.0, lambda: 0.0) is None


@pytest.mark.parametrize("value, retries", [(0, 0), (None, 0), (5, 5), (FAST, 3)])
def test_retries_argument_forms(value, retries):
    """retries= takes an int, None or a RetryPolicy."""
    assert retry.as_policy(value).retries == retries


@pytest.mark.parametrize("value", [-1, True, "3", 2.5])
def test_retries_argument_invalid(value):
    """Other retries= values are refused."""
    with pytest.raises(ValueError, match="retries must be"):
        retry.as_policy(value)


# --- the blocking client ------------------------------------------------------------


def failing(*failures: errors.KmsError):
    """A handler that replies with ``failures`` in turn, then echoes."""
    queue = list(failures)

    def handler(request, reply):
        if queue:
            reply(error_response(queue.pop(0), request.id))
            return True
        return echo_handler(request, reply)
    return handler


def test_no_retries_by_default(agent):
    """A client built without retries= sends each call once."""
    agent.handler = failing(errors.ThrottlingError())
    with KmsClient(agent.path) as client:
        with pytest.raises(errors.ThrottlingError):
            client.call("ListKeys")
    assert len(agent.requests) == 1


def test_throttled_call_retried(agent):
    """A throttled call is sent again until it succeeds."""
    agent.handler = failing(errors.ThrottlingError(), errors.ThrottlingError())
    with KmsClient(agent.path, retries=FAST) as client:
        result = client.call("CreateKey")
    assert result["Op"] == "CreateKey"
    assert len(agent.requests) == 3


def test_last_error_after_retries(agent):
    """When every attempt fails, the last error is raised."""
    failures = [errors.InternalFailureError(f"failure {n}") for n in range(4)]
    agent.handler = failing(*failures)
    with KmsClient(agent.path, retries=FAST) as client:
        with pytest.raises(errors.InternalFailureError, match="failure 3"):
            client.call("DescribeKey", KeyId="k")
    assert len(agent.requests) == 4


def test_create_not_retried_on_5xx(agent):
    """CreateKey that failed inside the agent is not sent again."""
    agent.handler = failing(errors.InternalFailureError())
    with KmsClient(agent.path, retries=FAST) as client:
        with pytest.raises(errors.InternalFailureError):
            client.call("CreateKey")
    assert len(agent.requests) == 1


def test_caller_error_not_retried(agent):
    """A 4xx error is raised at once."""
    agent.handler = failing(errors.KeyNotFoundError())
    with KmsClient(agent.path, retries=FAST) as client:
        with pytest.raises(errors.KeyNotFoundError):
            client.call("DescribeKey", KeyId="k")
    assert len(agent.requests) == 1


def test_dropped_create_not_retried(agent):
    """A CreateKey whose connection broke after sending is not repeated."""
    agent.handler = lambda request, reply: False
    with KmsClient(agent.path, retries=FAST) as client:
        with pytest.raises(errors.ServerUnreachableError):
            client.call("CreateKey")
    assert len(agent.requests) == 1


def test_dropped_read_retried(agent):
    """A read whose connection broke is sent again on a new connection."""
    drops = [True]

    def handler(request, reply):
        if drops:
            drops.pop()
            return False
        return echo_handler(request, reply)

    agent.handler = handler
    with KmsClient(agent.path, retries=FAST) as client:
        assert client.call("DescribeKey", KeyId="k")["KeyId"] == "k"
    assert len(agent.requests) == 2


def test_timeout_ends_retries_by_default(agent):
    """A reply timeout uses the whole budget, so it is not retried."""
    agent.handler = lambda request, reply: True
    with KmsClient(agent.path, timeout=0.2, retries=3) as client:
        with pytest.raises(errors.ReadTimeoutError):
            client.call("DescribeKey", KeyId="k")
    assert len(agent.requests) == 1


def test_connect_failure_retried_for_create(tmp_path, monkeypatch):
    """CreateKey is retried when connecting failed, as nothing was sent."""
    path = str(tmp_path / "late.sock")
    started = []

    def start_agent_then_sleep(seconds):
        if not started:
            started.append(FakeAgent(path))

    monkeypatch.setattr(sync, "call_with_retries", functools.partial(
        retry.call_with_retries, sleep=start_agent_then_sleep))
    try:
        with KmsClient(path, retries=FAST) as client:
            assert client.call("CreateKey")["Op"] == "CreateKey"
        assert len(started[0].requests) == 1
    finally:
        for fake in started:
            fake.stop()


def test_connect_failure_gives_up(tmp_path):
    """With no agent at all, the last connect error is raised."""
    with KmsClient(str(tmp_path / "absent.sock"), retries=FAST) as client:
        with pytest.raises(errors.ServerUnreachableError, match="absent.sock"):
            client.call("CreateKey")


# --- the trio client ----------------------------------------------------------------


async def test_async_throttled_call_retried(agent):
    """The trio client retries a throttled call too."""
    agent.handler = failing(errors.ThrottlingError())
    async with AsyncKmsClient(agent.path, retries=FAST) as client:
        result = await client.call("CreateKey")
    assert result["Op"] == "CreateKey"
    assert len(agent.requests) == 2


async def test_async_create_not_retried_on_5xx(agent):
    """The trio client does not repeat a CreateKey that failed inside."""
    agent.handler = failing(errors.ServiceUnavailableError())
    async with AsyncKmsClient(agent.path, retries=FAST) as client:
        with pytest.raises(errors.ServiceUnavailableError):
            await client.call("CreateKey")
    assert len(agent.requests) == 1


async def test_async_read_retried_on_5xx(agent):
    """The trio client retries a read that failed inside the agent."""
    agent.handler = failing(errors.InternalFailureError(),
                            errors.InternalFailureError())
    async with AsyncKmsClient(agent.path, retries=FAST) as client:
        result = await client.call("Encrypt", KeyId="k", Plaintext=b"x")
    assert result["Op"] == "Encrypt"
    assert len(agent.requests) == 3


async def test_async_no_retry_after_close(agent):
    """Calls failed by closing the client are not retried."""
    agent.handler = lambda request, reply: True
    failures = []

    async def one_call(client):
        try:
            await client.call("ListKeys")
        except errors.ServerUnreachableError as exc:
            failures.append(exc)

    async with trio.open_nursery() as nursery:
        client = AsyncKmsClient(agent.path, retries=FAST)
        await client.__aenter__()
        nursery.start_soon(one_call, client)
        await trio.to_thread.run_sync(agent.wait_for_requests, 1)
        await client.aclose()
    assert len(failures) == 1
    assert len(agent.requests) == 1
