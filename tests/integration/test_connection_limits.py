"""Connection caps and timeouts on the real daemon."""

from __future__ import annotations

import socket
import struct
import time

import pytest

from client import KmsClient, errors
from tests.integration.conftest import start_agent
from tests.integration.test_protocol_abuse import RawConnection

pytestmark = pytest.mark.hsm


@pytest.fixture(scope="module")
def strict_agent(tmp_path_factory):
    agent = start_agent(
        tmp_path_factory.mktemp("strict") / "agent",
        extra_agent="max_connections_per_uid = 4\nhandshake_timeout = 0.5\n"
                    "frame_timeout = 0.5\nidle_timeout = 1.0")
    yield agent
    agent.stop()


def closed_by_agent(connection: RawConnection, within: float = 5.0) -> bool:
    connection.sock.settimeout(within)
    try:
        return connection.sock.recv(65536) == b""
    except (socket.timeout, ConnectionResetError):
        return False


def test_per_uid_cap(strict_agent):
    """Connections past the per-uid cap get ServiceUnavailable and close."""
    held = [RawConnection(strict_agent.socket) for _ in range(4)]
    for connection in held:
        connection.hello()
    extra = RawConnection(strict_agent.socket)
    reply = extra.receive()
    assert reply["error"]["Code"] == "ServiceUnavailableTemporary"
    assert reply["error"]["HttpStatus"] == 503
    for connection in held:
        connection.close()
    extra.close()
    time.sleep(0.2)
    with KmsClient(strict_agent.socket) as client:
        assert client.call("ListKeys")["TotalCount"] >= 0


def test_no_hello_times_out(strict_agent):
    """A connection that never says hello is closed after the timeout."""
    connection = RawConnection(strict_agent.socket)
    assert closed_by_agent(connection)
    connection.close()


def test_partial_frame_times_out(strict_agent):
    """A frame that stops half way is closed after the frame timeout."""
    connection = RawConnection(strict_agent.socket)
    connection.hello()
    connection.send(struct.pack(">I", 1000) + b"\x80")
    assert closed_by_agent(connection)
    connection.close()


def test_idle_connection_closed(strict_agent):
    """A connection with nothing in flight is closed when idle too long."""
    connection = RawConnection(strict_agent.socket)
    connection.hello()
    assert "result" in connection.request(1, "ListKeys")
    assert closed_by_agent(connection)
    connection.close()


def test_client_reconnects_after_idle_close(strict_agent):
    """The sync client reconnects after the agent closed an idle connection."""
    with KmsClient(strict_agent.socket) as client:
        key_id = client.create_key()["KeyMetadata"]["KeyId"]
        time.sleep(1.5)
        try:
            blob = client.encrypt(key_id, b"x")["CiphertextBlob"]
        except errors.ServerUnreachableError:
            blob = client.encrypt(key_id, b"x")["CiphertextBlob"]
        assert client.decrypt(blob)["Plaintext"] == b"x"
