"""The Secrets Manager end to end: client library, real daemon, real token."""

from __future__ import annotations

import signal
import sys
import threading
import time

import pytest

from client import KmsClient, errors
from tests.integration.conftest import start_agent

pytestmark = pytest.mark.hsm

ROTATE = f"""
[secrets]
cache_ttl = 60
rotation_check_interval = 0.2

[[secrets.rotation]]
pattern = "rot/*"
command = ['{sys.executable}', '-c',
           'import sys; sys.stdout.write(sys.stdin.read() + "-rotated")']
"""


@pytest.fixture(scope="module")
def secrets_agent(tmp_path_factory):
    """One agent with a rotation rule, shared by this module's tests."""
    agent = start_agent(tmp_path_factory.mktemp("secrets") / "agent",
                        extra_agent=ROTATE)
    yield agent
    agent.stop()


@pytest.fixture
def client(secrets_agent):
    with KmsClient(secrets_agent.socket) as instance:
        yield instance


def wait_for_waiters(client: KmsClient, count: int) -> None:
    """Poll DescribeAgentCache until ``count`` long polls are waiting."""
    while client.describe_agent_cache()["SecretWaiters"] != count:
        time.sleep(0.01)


def test_secret_lifecycle(client):
    """Create, read, put, list, delete and restore through the daemon."""
    client.create_secret("it/main", "first", "v1", description="main flow")
    client.put_secret_value("it/main", "second", "v2")
    current = client.get_secret_value("it/main")
    previous = client.get_secret_value("it/main", version_stage="ACSPrevious")
    versions = client.list_secret_version_ids("it/main")["VersionIds"]["VersionId"]
    client.delete_secret("it/main", recovery_window_in_days=7)
    with pytest.raises(errors.ResourceInDeleteWindowError):
        client.get_secret_value("it/main")
    client.restore_secret("it/main")
    assert current["SecretData"] == "second"
    assert previous["SecretData"] == "first"
    assert [v["VersionId"] for v in versions] == ["v1", "v2"]
    assert client.get_secret_value("it/main")["VersionId"] == "v2"


def test_binary_secret_round_trip(client):
    """A binary value travels as bytes and comes back unchanged."""
    data = bytes(range(256)) * 8
    client.create_secret("it/binary", data, "v1", secret_data_type="binary")
    assert client.get_secret_value("it/binary")["SecretData"] == data


def test_no_old_value_after_put(secrets_agent, client):
    """Concurrent readers never see a value older than the last put."""
    client.create_secret("it/race", "0", "v0")
    state = {"returned": 0, "stale": [], "reads": 0}

    def reader():
        with KmsClient(secrets_agent.socket) as own:
            while state["returned"] < 15:
                known = state["returned"]
                value = int(own.get_secret_value("it/race")["SecretData"])
                state["reads"] += 1
                if value < known:
                    state["stale"].append((known, value))

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for thread in threads:
        thread.start()
    for number in range(1, 16):
        client.put_secret_value("it/race", str(number), f"v{number}")
        state["returned"] = number
    for thread in threads:
        thread.join()
    assert state["reads"] > 0
    assert state["stale"] == []


def test_wait_wakes_on_put(secrets_agent, client):
    """WaitSecretChange returns as soon as a put moves ACSCurrent."""
    client.create_secret("it/wait", "one", "v1")
    replies = []

    def waiter():
        with KmsClient(secrets_agent.socket, timeout=310) as own:
            replies.append(own.wait_secret_change("it/wait", "v1", 300))

    thread = threading.Thread(target=waiter)
    thread.start()
    wait_for_waiters(client, 1)
    client.put_secret_value("it/wait", "two", "v2")
    thread.join()
    assert replies[0]["Changed"] is True
    assert replies[0]["VersionId"] == "v2"


def test_rotate_secret_command(client):
    """RotateSecret runs the configured command and moves the stages."""
    client.create_secret("rot/a", "base", "v1")
    client.rotate_secret("rot/a", "r1")
    assert client.get_secret_value("rot/a")["SecretData"] == "base-rotated"
    previous = client.get_secret_value("rot/a", version_stage="ACSPrevious")
    assert previous["VersionId"] == "v1"


def test_values_never_logged(secrets_agent, client):
    """Secret values reach neither the log nor error messages."""
    markers = ["marker-5d0e", "marker-77a1", "marker-5d0e-rotated"]
    client.create_secret("rot/logged", markers[0], "v1")
    client.put_secret_value("rot/logged", markers[1], "v2")
    with pytest.raises(errors.ResourceExistError) as caught:
        client.put_secret_value("rot/logged", markers[0], "v2")
    client.update_secret_version_stage("rot/logged", "ACSCurrent",
                                       move_to_version="v1")
    client.rotate_secret("rot/logged", "r1")
    client.get_secret_value("rot/logged")
    log = secrets_agent.log_text()
    assert client.get_secret_value("rot/logged")["SecretData"] == markers[2]
    for marker in markers:
        assert marker not in log
        assert marker not in str(caught.value)


def test_drain_releases_long_poll(tmp_path):
    """SIGTERM ends a waiting long poll with a reply, not a broken socket."""
    agent = start_agent(tmp_path / "agent")
    replies = []
    try:
        with KmsClient(agent.socket) as client:
            client.create_secret("it/drain", "x", "v1")

            def waiter():
                with KmsClient(agent.socket, timeout=310) as own:
                    replies.append(own.wait_secret_change("it/drain", "v1", 300))

            thread = threading.Thread(target=waiter)
            thread.start()
            wait_for_waiters(client, 1)
            code = agent.stop(signal.SIGTERM)
            thread.join()
    finally:
        agent.stop()
    assert code == 0
    assert replies[0]["Changed"] is False


def test_disconnect_ends_long_polls(shared_agent):
    """Long polls of a client that disconnected stop waiting at once."""
    import msgpack
    import socket as socket_module
    import struct
    from client import KmsClient

    def frame(message):
        payload = msgpack.packb(message, use_bin_type=True)
        return struct.pack(">I", len(payload)) + payload

    with KmsClient(shared_agent.socket) as client:
        client.call("CreateSecret", SecretName="polls/db", VersionId="v1",
                    SecretData="pw")
        for _ in range(5):
            raw = socket_module.socket(socket_module.AF_UNIX)
            raw.connect(str(shared_agent.socket))
            raw.sendall(frame({"type": "hello", "versions": [1], "client": "t"}))
            for number in range(1, 21):
                raw.sendall(frame({"type": "request", "id": number,
                                   "op": "WaitSecretChange",
                                   "params": {"SecretName": "polls/db",
                                              "VersionId": "v1",
                                              "TimeoutSeconds": 300}}))
            time.sleep(0.05)
            raw.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            waiters = client.call("DescribeAgentCache")["SecretWaiters"]
            if waiters == 0:
                break
            time.sleep(0.1)
        assert waiters == 0
