"""Tests of ``SecretsClient``: cache, fallback, retry and watch, on a fake agent.

``FakeSecrets`` serves GetSecretValue and WaitSecretChange from a map of
versions, through the fake agent on a real Unix socket. The clock and the
backoff sleep are injected, so expiry and retries need no waiting.
"""

from __future__ import annotations

import os
import threading

import pytest

from client import AsyncKmsClient, KmsClient, errors
from client.secrets import (
    AsyncSecretsClient,
    RetryPolicy,
    SecretsClient,
    SecretValue,
)
from client.wire import Response, error_response

from conftest import FakeAgent

WAIT_LIMIT = 10.0


class FakeSecrets:
    """Secret versions served the way the agent serves them.

    ``failures`` lists errors to return, one per GetSecretValue, before the
    stored value. ``long_poll`` False makes WaitSecretChange unknown, as on
    an agent without it.
    """

    def __init__(self):
        self.current: dict[str, dict] = {}
        self.failures: list[errors.KmsError] = []
        self.extra_reply: dict = {}
        self.long_poll = True
        self.changed = threading.Condition()
        self._versions = 0

    def put(self, name: str, data: str | bytes, data_type: str = "text") -> str:
        """Store a new current version of ``name`` and return its id."""
        with self.changed:
            self._versions += 1
            version_id = f"v{self._versions}"
            self.current[name] = {"SecretData": data, "SecretDataType": data_type,
                                  "VersionId": version_id}
            self.changed.notify_all()
        return version_id

    def handler(self, request, reply) -> bool:
        if request.op == "GetSecretValue":
            reply(self._get(request))
        elif request.op == "WaitSecretChange" and self.long_poll:
            reply(self._wait(request))
        else:
            error = errors.InvalidApiNameError(f"Unknown operation {request.op}.")
            reply(error_response(error, request.id))
        return True

    def _get(self, request) -> Response:
        if self.failures:
            return error_response(self.failures.pop(0), request.id)
        stored = self.current.get(request.params["SecretName"])
        if stored is None:
            return error_response(errors.ResourceNotFoundError(), request.id)
        result = {"SecretName": request.params["SecretName"], **stored,
                  "VersionStages": {"VersionStage": ["ACSCurrent"]},
                  **self.extra_reply}
        return Response(request.id, result=result)

    def _wait(self, request) -> Response:
        name, known = request.params["SecretName"], request.params["VersionId"]
        with self.changed:
            self.changed.wait_for(lambda: self.current[name]["VersionId"] != known,
                                  timeout=request.params["TimeoutSeconds"])
            version_id = self.current[name]["VersionId"]
        result = {"SecretName": name, "VersionId": version_id,
                  "Changed": version_id != known}
        return Response(request.id, result=result)


class FakeClock:
    """A monotonic clock that moves only when a test advances it."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def secrets(agent):
    fake = FakeSecrets()
    agent.handler = fake.handler
    return fake


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def sleeps():
    return []


@pytest.fixture
def make_client(agent, clock, sleeps):
    clients = []

    def make(**options) -> SecretsClient:
        options.setdefault("clock", clock)
        options.setdefault("sleep", sleeps.append)
        client = SecretsClient(KmsClient(agent.path, timeout=WAIT_LIMIT), **options)
        clients.append(client)
        return client
    yield make
    for client in clients:
        client.close()


def get_requests(agent) -> list:
    return [request for request in agent.requests if request.op == "GetSecretValue"]


def test_get_returns_text_value(secrets, make_client):
    """A text secret comes back as str with its version and stages."""
    version_id = secrets.put("prod/db", "hunter2")
    value = make_client().get("prod/db")
    assert value.data == "hunter2"
    assert value.data_type == "text"
    assert value.version_id == version_id
    assert value.version_stages == ("ACSCurrent",)
    assert value.stale is False


def test_get_returns_binary_bytes(secrets, make_client):
    """A binary secret comes back as bytes."""
    secrets.put("tls/key", b"\x00\xffkey", "binary")
    value = make_client().get("tls/key")
    assert value.data == b"\x00\xffkey"
    assert value.as_text() == "AP9rZXk="


def test_get_sends_stage_and_version(agent, secrets, make_client):
    """stage and version_id travel as VersionStage and VersionId."""
    secrets.put("prod/db", "x")
    make_client().get("prod/db", stage="ACSPrevious", version_id="v1")
    assert agent.requests[0].params == {"SecretName": "prod/db",
                                        "VersionStage": "ACSPrevious",
                                        "VersionId": "v1"}


def test_repr_hides_secret_data():
    """The repr of a SecretValue never contains the data."""
    value = SecretValue("prod/db", "hunter2", version_id="v1")
    assert "hunter2" not in repr(value)
    assert "hunter2" not in str(value)


def test_cache_serves_within_ttl(agent, secrets, make_client, clock):
    """A second read within the TTL does not reach the agent."""
    secrets.put("prod/db", "one")
    client = make_client(ttl=60)
    client.get("prod/db")
    clock.advance(59)
    secrets.put("prod/db", "two")
    value = client.get("prod/db")
    assert value.data == "one"
    assert len(get_requests(agent)) == 1


def test_ttl_expiry_refetches_value(agent, secrets, make_client, clock):
    """A read after the TTL fetches the new value from the agent."""
    secrets.put("prod/db", "one")
    client = make_client(ttl=60)
    client.get("prod/db")
    clock.advance(60)
    secrets.put("prod/db", "two")
    value = client.get("prod/db")
    assert value.data == "two"
    assert len(get_requests(agent)) == 2


def test_default_ttl_one_hour(agent, secrets, make_client, clock):
    """Without a ttl argument a value is kept for one hour."""
    secrets.put("prod/db", "one")
    client = make_client()
    client.get("prod/db")
    clock.advance(3599)
    client.get("prod/db")
    clock.advance(1)
    client.get("prod/db")
    assert len(get_requests(agent)) == 2


def test_per_call_ttl_overrides(agent, secrets, make_client, clock):
    """A ttl given to get applies to that read."""
    secrets.put("prod/db", "one")
    client = make_client(ttl=3600)
    client.get("prod/db")
    clock.advance(10)
    client.get("prod/db", ttl=5)
    assert len(get_requests(agent)) == 2


def test_stages_cached_separately(agent, secrets, make_client):
    """Reads of different stages of one secret do not share an entry."""
    secrets.put("prod/db", "one")
    client = make_client()
    client.get("prod/db")
    client.get("prod/db", stage="ACSPrevious")
    assert len(get_requests(agent)) == 2


def test_invalidate_forces_fetch(agent, secrets, make_client):
    """After invalidate the next read goes to the agent."""
    secrets.put("prod/db", "one")
    client = make_client()
    client.get("prod/db")
    client.invalidate("prod/db")
    client.get("prod/db")
    assert len(get_requests(agent)) == 2


def test_cache_evicts_least_recent(agent, secrets, make_client):
    """Past max_entries the least recently read value is dropped."""
    for name in ("a", "b", "c"):
        secrets.put(name, name)
    client = make_client(max_entries=2)
    client.get("a")
    client.get("b")
    client.get("a")
    client.get("c")
    client.get("a")
    client.get("b")
    assert [r.params["SecretName"] for r in get_requests(agent)] == ["a", "b", "c", "b"]


def test_fallback_when_socket_disappears(agent, secrets, make_client, clock):
    """With the agent gone, an expired value is served and marked stale."""
    secrets.put("prod/db", "hunter2")
    client = make_client(ttl=60)
    first = client.get("prod/db")
    agent.stop()
    os.unlink(agent.path)
    clock.advance(90)
    value = client.get("prod/db")
    assert value.data == "hunter2"
    assert value.version_id == first.version_id
    assert value.stale is True
    assert value.stale_age_seconds == 90


def test_fallback_after_retries_spent(secrets, make_client, sleeps, clock):
    """The fallback comes only after every retry of the failure."""
    secrets.put("prod/db", "hunter2")
    client = make_client(ttl=60, retry=RetryPolicy(max_retries=3))
    client.get("prod/db")
    clock.advance(60)
    secrets.failures = [errors.ServiceUnavailableError()] * 4
    value = client.get("prod/db")
    assert value.stale is True
    assert len(sleeps) == 3


@pytest.mark.parametrize("error", [
    errors.ServerUnreachableError(), errors.ReadTimeoutError(),
    errors.ThrottlingError(), errors.ServiceUnavailableError(),
    errors.InternalFailureError(),
], ids=lambda error: error.code)
def test_fallback_on_retryable_errors(secrets, make_client, clock, error):
    """Each retryable error, once retries are spent, falls back to the cache."""
    secrets.put("prod/db", "hunter2")
    client = make_client(ttl=60, retry=RetryPolicy(max_retries=1))
    client.get("prod/db")
    clock.advance(60)
    secrets.failures = [error, error]
    value = client.get("prod/db")
    assert value.data == "hunter2"
    assert value.stale is True


def test_fallback_defers_next_fetch(agent, secrets, make_client, clock):
    """After a fallback the agent is not asked again for a few seconds."""
    secrets.put("prod/db", "hunter2")
    client = make_client(ttl=60, retry=RetryPolicy(max_retries=0),
                         stale_retry_interval=5)
    client.get("prod/db")
    clock.advance(60)
    secrets.failures = [errors.ServiceUnavailableError()]
    client.get("prod/db")
    clock.advance(4)
    deferred = client.get("prod/db")
    clock.advance(1)
    fresh = client.get("prod/db")
    assert deferred.stale is True
    assert fresh.stale is False
    assert len(get_requests(agent)) == 3


def test_unreachable_without_cache_raises(tmp_path, clock, sleeps):
    """With nothing cached, an unreachable agent raises after the retries."""
    client = SecretsClient(socket_path=str(tmp_path / "absent.sock"),
                           clock=clock, sleep=sleeps.append)
    with pytest.raises(errors.ServerUnreachableError):
        client.get("prod/db")
    assert len(sleeps) == client.retry.max_retries


def test_not_found_not_retried(agent, secrets, make_client, sleeps):
    """A 404 is raised at once, without retry."""
    with pytest.raises(errors.ResourceNotFoundError):
        make_client().get("absent")
    assert len(get_requests(agent)) == 1
    assert sleeps == []


@pytest.mark.parametrize("error", [
    errors.InvalidParameterError(), errors.NoPermissionError(),
    errors.ResourceInDeleteWindowError(), errors.UnknownError("Throttling", 400),
], ids=lambda error: error.code)
def test_caller_errors_not_retried(agent, secrets, make_client, sleeps, error):
    """4xx and 409 errors are raised at once, without retry."""
    secrets.failures = [error]
    with pytest.raises(errors.KmsError) as caught:
        make_client().get("prod/db")
    assert caught.value.code == error.code
    assert len(get_requests(agent)) == 1
    assert sleeps == []


def test_caller_error_beats_cache(secrets, make_client, clock):
    """A deleted secret raises even when an old value is cached."""
    secrets.put("prod/db", "hunter2")
    client = make_client(ttl=60)
    client.get("prod/db")
    clock.advance(60)
    secrets.current.clear()
    with pytest.raises(errors.ResourceNotFoundError):
        client.get("prod/db")


def test_throttling_retried_then_succeeds(agent, secrets, make_client, sleeps):
    """Throttled reads are retried until the agent serves the value."""
    secrets.put("prod/db", "hunter2")
    secrets.failures = [errors.ThrottlingError(), errors.ThrottlingError()]
    value = make_client().get("prod/db")
    assert value.data == "hunter2"
    assert len(get_requests(agent)) == 3
    assert len(sleeps) == 2


def test_retries_capped_then_raise(agent, secrets, make_client, sleeps):
    """After max_retries the retryable error is raised."""
    secrets.failures = [errors.ThrottlingError()] * 10
    with pytest.raises(errors.ThrottlingError):
        make_client(retry=RetryPolicy(max_retries=3)).get("prod/db")
    assert len(get_requests(agent)) == 4


def test_retry_hook_sees_each_retry(secrets, make_client):
    """on_retry is called before each backoff with the error and delay."""
    secrets.put("prod/db", "hunter2")
    secrets.failures = [errors.ThrottlingError(), errors.InternalFailureError()]
    seen = []
    make_client(on_retry=lambda error, number, delay: seen.append(
        (error.code, number))).get("prod/db")
    assert seen == [("Rejected.Throttling", 1), ("InternalFailure", 2)]


def test_backoff_grows_to_cap():
    """Delays double from the base and stop at the cap."""
    policy = RetryPolicy(base_delay=0.1, max_delay=1.0)
    ceilings = [policy.delay(retry, lambda: 1.0) for retry in range(6)]
    assert ceilings == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])


def test_backoff_jitter_keeps_half():
    """The jitter never shortens a delay below half its ceiling."""
    policy = RetryPolicy(base_delay=0.1, max_delay=1.0)
    assert policy.delay(3, lambda: 0.0) == pytest.approx(0.4)


def test_agent_stale_flag_kept(secrets, make_client):
    """A value the agent marks stale is returned stale with its age."""
    secrets.put("prod/db", "hunter2")
    secrets.extra_reply = {"Stale": True, "StaleAgeSeconds": 42}
    value = make_client().get("prod/db")
    assert value.stale is True
    assert value.stale_age_seconds == 42


def test_agent_stale_value_rechecked_soon(agent, secrets, make_client, clock):
    """A value the agent marked stale is cached only briefly."""
    secrets.put("prod/db", "hunter2")
    secrets.extra_reply = {"Stale": True, "StaleAgeSeconds": 42}
    client = make_client(stale_retry_interval=5)
    client.get("prod/db")
    clock.advance(5)
    client.get("prod/db")
    assert len(get_requests(agent)) == 2


def test_malformed_reply_raises_internal(agent, make_client):
    """A reply without SecretData raises InternalFailureError."""
    agent.handler = lambda request, reply: reply(
        Response(request.id, result={"SecretName": "x"})) or True
    with pytest.raises(errors.InternalFailureError, match="no SecretData"):
        make_client(retry=RetryPolicy(max_retries=0)).get("x")


def test_json_field_selects_string():
    """json_field returns a string field as is and others as JSON."""
    value = SecretValue("prod/db", '{"password": "pw", "port": 5432}')
    assert value.json_field("password") == "pw"
    assert value.json_field("port") == "5432"


def test_json_field_missing_hides_value():
    """A missing field raises a message without the secret's value."""
    value = SecretValue("prod/db", '{"password": "hunter2"}')
    with pytest.raises(errors.InvalidParameterError) as caught:
        value.json_field("user")
    assert "user" in str(caught.value)
    assert "hunter2" not in str(caught.value)


def test_json_field_non_object_rejected():
    """A value that is not a JSON object has no fields."""
    value = SecretValue("prod/db", "hunter2")
    with pytest.raises(errors.InvalidParameterError) as caught:
        value.json_field("password")
    assert "hunter2" not in str(caught.value)


def collect_changes(client, name, **options):
    changes: list[SecretValue] = []
    arrived = threading.Event()

    def callback(value):
        changes.append(value)
        arrived.set()
    watch = client.watch(name, callback, **options)
    return watch, changes, arrived


def test_watch_long_poll_calls_back(secrets, make_client):
    """A new version reaches the callback through WaitSecretChange."""
    secrets.put("prod/db", "one")
    client = make_client()
    client.get("prod/db")
    watch, changes, arrived = collect_changes(client, "prod/db", wait_seconds=5)
    new_version = secrets.put("prod/db", "two")
    assert arrived.wait(WAIT_LIMIT)
    watch.stop(0)
    assert watch.mode == "long-poll"
    assert changes[0].data == "two"
    assert changes[0].version_id == new_version


def test_watch_refreshes_the_cache(secrets, make_client):
    """After a change, get returns the new value without waiting for the TTL."""
    secrets.put("prod/db", "one")
    client = make_client()
    client.get("prod/db")
    watch, _, arrived = collect_changes(client, "prod/db", wait_seconds=5)
    secrets.put("prod/db", "two")
    assert arrived.wait(WAIT_LIMIT)
    watch.stop(0)
    assert client.get("prod/db").data == "two"


def test_watch_falls_back_to_polling(agent, secrets, make_client):
    """Without WaitSecretChange the watch polls and still calls back."""
    secrets.long_poll = False
    secrets.put("prod/db", "one")
    client = make_client()
    watch, changes, arrived = collect_changes(client, "prod/db", wait_seconds=5,
                                              poll_interval=0.05)
    agent.wait_for_requests(2)
    secrets.put("prod/db", "two")
    assert arrived.wait(WAIT_LIMIT)
    watch.stop(0)
    assert watch.mode == "polling"
    assert changes[0].data == "two"


def test_watch_reports_errors(secrets, make_client):
    """An error while watching goes to on_error and the watch goes on."""
    reported = threading.Event()
    errors_seen = []

    def on_error(error):
        errors_seen.append(error.code)
        reported.set()
    watch, _, _ = collect_changes(make_client(), "absent", wait_seconds=5,
                                  on_error=on_error)
    assert reported.wait(WAIT_LIMIT)
    stopped = watch.stop(WAIT_LIMIT)
    assert errors_seen[0] == "Forbidden.ResourceNotFound"
    assert stopped is True


async def test_async_get_caches_value(agent, secrets):
    """The trio client caches like the blocking one."""
    secrets.put("prod/db", "hunter2")
    clock = FakeClock()
    async with AsyncKmsClient(agent.path) as kms:
        client = AsyncSecretsClient(kms, ttl=60, clock=clock)
        first = await client.get("prod/db")
        second = await client.get("prod/db")
    assert first.data == "hunter2"
    assert second.data == "hunter2"
    assert len(get_requests(agent)) == 1


async def test_async_get_falls_back(agent, secrets):
    """The trio client serves a stale value when the agent fails."""
    secrets.put("prod/db", "hunter2")
    clock = FakeClock()
    sleeps = []

    async def record_sleep(seconds):
        sleeps.append(seconds)
    async with AsyncKmsClient(agent.path) as kms:
        client = AsyncSecretsClient(kms, ttl=60, clock=clock, sleep=record_sleep,
                                    retry=RetryPolicy(max_retries=2))
        await client.get("prod/db")
        clock.advance(60)
        secrets.failures = [errors.ServiceUnavailableError()] * 3
        value = await client.get("prod/db")
    assert value.stale is True
    assert len(sleeps) == 2


async def test_async_not_found_raised(agent, secrets):
    """The trio client raises a 404 without retry."""
    async with AsyncKmsClient(agent.path) as kms:
        client = AsyncSecretsClient(kms)
        with pytest.raises(errors.ResourceNotFoundError):
            await client.get("absent")
    assert len(get_requests(agent)) == 1


def test_agent_stale_age_grows(secrets, make_client, clock):
    """A cached value the agent marked stale ages while it is served."""
    secrets.put("prod/db", "hunter2")
    secrets.extra_reply = {"Stale": True, "StaleAgeSeconds": 42}
    client = make_client(stale_retry_interval=5)
    client.get("prod/db")
    clock.advance(3)
    value = client.get("prod/db")
    assert value.stale is True
    assert value.stale_age_seconds == 45


def test_watch_other_stage_polls(secrets, make_client):
    """A watch of a stage other than ACSCurrent polls."""
    secrets.put("prod/db", "one")
    watch, _, _ = collect_changes(make_client(), "prod/db", stage="ACSPrevious",
                                  poll_interval=60)
    watch.stop(0)
    assert watch.mode == "polling"


def test_watch_sends_known_version(agent, secrets, make_client):
    """The long poll names the version the client has and the wait."""
    version_id = secrets.put("prod/db", "one")
    watch, _, _ = collect_changes(make_client(), "prod/db", wait_seconds=7)
    agent.wait_for_requests(2)
    watch.stop(0)
    waits = [r for r in agent.requests if r.op == "WaitSecretChange"]
    assert waits[0].params == {"SecretName": "prod/db", "VersionId": version_id,
                               "TimeoutSeconds": 7}


def test_watch_wait_out_of_range(make_client):
    """A long-poll wait above the agent's limit is rejected."""
    with pytest.raises(errors.InvalidParameterError, match="wait_seconds"):
        make_client().watch("prod/db", print, wait_seconds=301)
