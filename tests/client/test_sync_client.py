"""Tests of ``KmsClient`` against the fake agent on a real Unix socket."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading

import pytest

from client import KmsClient, errors
from client.sync import resolve_socket_path
from client.wire import DEFAULT_SOCKET_PATH, SOCKET_ENV, Response, error_response

from conftest import FakeAgent, echo_handler


def reply_error(error: errors.KmsError):
    def handler(request, reply):
        reply(error_response(error, request.id))
        return True
    return handler


def test_call_returns_result_map(agent):
    """call returns the result map of the reply."""
    with KmsClient(agent.path) as client:
        result = client.call("DescribeKey", KeyId="key-1")
    assert result == {"Op": "DescribeKey", "KeyId": "key-1", "RequestId": "req-1"}


def test_call_sends_timeout(agent):
    """The client's timeout travels as the request's timeout_ms."""
    with KmsClient(agent.path, timeout=2.5) as client:
        client.call("ListKeys")
    assert agent.requests[0].timeout_ms == 2500


WRAPPERS = [
    ("create_key", (), {"key_spec": "Aliyun_AES_256", "tags": {"env": "prod"}},
     "CreateKey", {"KeySpec": "Aliyun_AES_256",
                   "Tags": [{"TagKey": "env", "TagValue": "prod"}]}),
    ("describe_key", ("k",), {}, "DescribeKey", {"KeyId": "k"}),
    ("list_keys", (), {"page_number": 2, "page_size": 50}, "ListKeys",
     {"PageNumber": 2, "PageSize": 50}),
    ("enable_key", ("k",), {}, "EnableKey", {"KeyId": "k"}),
    ("disable_key", ("k",), {}, "DisableKey", {"KeyId": "k"}),
    ("schedule_key_deletion", ("k", 7), {}, "ScheduleKeyDeletion",
     {"KeyId": "k", "PendingWindowInDays": 7}),
    ("cancel_key_deletion", ("k",), {}, "CancelKeyDeletion", {"KeyId": "k"}),
    ("encrypt", ("k", b"\x00\xff"), {"encryption_context": {"a": "b"}}, "Encrypt",
     {"KeyId": "k", "Plaintext": b"\x00\xff", "EncryptionContext": {"a": "b"}}),
    ("decrypt", (b"blob",), {}, "Decrypt", {"CiphertextBlob": b"blob"}),
    ("re_encrypt", (b"blob", "k2"), {"source_encryption_context": {"a": "b"}},
     "ReEncrypt", {"CiphertextBlob": b"blob", "DestinationKeyId": "k2",
                   "SourceEncryptionContext": {"a": "b"}}),
    ("generate_data_key", ("k",), {"number_of_bytes": 16}, "GenerateDataKey",
     {"KeyId": "k", "NumberOfBytes": 16}),
    ("generate_data_key_without_plaintext", ("k",), {"key_spec": "AES_128"},
     "GenerateDataKeyWithoutPlaintext", {"KeyId": "k", "KeySpec": "AES_128"}),
    ("create_alias", ("alias/app", "k"), {}, "CreateAlias",
     {"AliasName": "alias/app", "KeyId": "k"}),
    ("update_alias", ("alias/app", "k"), {}, "UpdateAlias",
     {"AliasName": "alias/app", "KeyId": "k"}),
    ("delete_alias", ("alias/app",), {}, "DeleteAlias", {"AliasName": "alias/app"}),
    ("list_aliases", (), {"page_size": 5}, "ListAliases", {"PageSize": 5}),
    ("tag_resource", ("k", [{"TagKey": "a", "TagValue": "b"}]), {}, "TagResource",
     {"KeyId": "k", "Tags": [{"TagKey": "a", "TagValue": "b"}]}),
    ("untag_resource", ("k", ["a"]), {}, "UntagResource",
     {"KeyId": "k", "TagKeys": ["a"]}),
    ("list_resource_tags", ("k",), {}, "ListResourceTags", {"KeyId": "k"}),
]


@pytest.mark.parametrize("method, args, kwargs, op, params", WRAPPERS,
                         ids=[wrapper[0] for wrapper in WRAPPERS])
def test_wrapper_sends_api_params(agent, method, args, kwargs, op, params):
    """Each wrapper sends its operation with PascalCase params only."""
    with KmsClient(agent.path) as client:
        result = getattr(client, method)(*args, **kwargs)
    assert agent.requests[0].op == op
    assert agent.requests[0].params == params
    assert result["Op"] == op


def test_str_plaintext_sent_utf8(agent):
    """A str plaintext is sent as its UTF-8 bytes."""
    with KmsClient(agent.path) as client:
        client.encrypt("k", "naïve")
    assert agent.requests[0].params["Plaintext"] == "naïve".encode()


def test_bad_plaintext_type_raises(agent):
    """A plaintext that is neither str nor bytes is rejected locally."""
    with KmsClient(agent.path) as client:
        with pytest.raises(errors.InvalidParameterError):
            client.encrypt("k", 12)
    assert agent.requests == []


def test_typed_error_raised(agent):
    """An error reply raises its class with code, status and request id."""
    agent.handler = reply_error(errors.KeyNotFoundError(request_id="req-404"))
    with KmsClient(agent.path) as client:
        with pytest.raises(errors.KeyNotFoundError) as caught:
            client.describe_key("absent")
    assert caught.value.code == "Forbidden.KeyNotFound"
    assert caught.value.http_status == 404
    assert caught.value.request_id == "req-404"


def test_unknown_code_raises_unknown_error(agent):
    """An error code the client does not know raises UnknownError."""
    def handler(request, reply):
        reply(Response(request.id, error={"Code": "Future.Code", "HttpStatus": 451,
                                          "Message": "Later.", "RequestId": "r"}))
        return True
    agent.handler = handler
    with KmsClient(agent.path) as client:
        with pytest.raises(errors.UnknownError) as caught:
            client.call("ListKeys")
    assert caught.value.code == "Future.Code"


def test_connection_reused_between_calls(agent):
    """Calls share one connection while it stays open."""
    with KmsClient(agent.path) as client:
        client.call("ListKeys")
        client.call("ListKeys")
    assert agent.accepted == 1


def test_reconnect_after_server_drop(agent):
    """After the agent drops an idle connection, the next call reconnects."""
    def reply_then_drop(request, reply):
        echo_handler(request, reply)
        return False
    agent.handler = reply_then_drop
    with KmsClient(agent.path) as client:
        client.call("ListKeys")
        agent.wait_dropped()
        result = client.call("DescribeKey", KeyId="k")
    assert result["Op"] == "DescribeKey"
    assert agent.accepted == 2


def test_drop_mid_request_unreachable(agent):
    """A connection dropped before the reply raises ServerUnreachableError."""
    agent.handler = lambda request, reply: False
    with KmsClient(agent.path) as client:
        with pytest.raises(errors.ServerUnreachableError):
            client.call("CreateKey")


def test_next_call_after_drop_works(agent):
    """The call after a dropped request opens a new connection."""
    calls = []

    def drop_first(request, reply):
        calls.append(request)
        if len(calls) == 1:
            return False
        return echo_handler(request, reply)
    agent.handler = drop_first
    with KmsClient(agent.path) as client:
        with pytest.raises(errors.ServerUnreachableError):
            client.call("CreateKey")
        assert client.call("ListKeys")["Op"] == "ListKeys"


def test_timeout_raises_read_timeout(agent):
    """No reply within the timeout raises ReadTimeoutError."""
    agent.handler = lambda request, reply: True
    with KmsClient(agent.path, timeout=0.2) as client:
        with pytest.raises(errors.ReadTimeoutError):
            client.call("ListKeys")


def test_call_after_timeout_works(agent):
    """After a timeout the next call gets its own reply."""
    def silent_first(request, reply):
        if request.id == 1:
            return True
        return echo_handler(request, reply)
    agent.handler = silent_first
    with KmsClient(agent.path, timeout=0.2) as client:
        with pytest.raises(errors.ReadTimeoutError):
            client.call("ListKeys")
        client.timeout = 10
        assert client.call("DescribeKey", KeyId="k")["KeyId"] == "k"


def test_missing_socket_unreachable(tmp_path):
    """A socket path with nothing on it raises ServerUnreachableError."""
    client = KmsClient(tmp_path / "absent.sock")
    with pytest.raises(errors.ServerUnreachableError, match="absent.sock"):
        client.call("ListKeys")


def test_stale_socket_unreachable(tmp_path):
    """A socket file without a listener raises ServerUnreachableError."""
    path = tmp_path / "stale.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()
    with pytest.raises(errors.ServerUnreachableError):
        KmsClient(path).call("ListKeys")


def test_rejected_hello_raises_typed(agent):
    """An agent that rejects the hello raises the typed error."""
    agent.hello_error = errors.InvalidApiVersionError("Supported versions: 7.")
    with pytest.raises(errors.InvalidApiVersionError, match="Supported versions: 7"):
        KmsClient(agent.path).call("ListKeys")


def test_request_over_limit_raises(tmp_path):
    """A request over the agent's frame limit fails locally; the client goes on."""
    fake = FakeAgent(str(tmp_path / "small.sock"), max_frame=1024)
    try:
        with KmsClient(fake.path) as client:
            with pytest.raises(errors.RequestTooLargeError):
                client.encrypt("k", bytes(2000))
            assert client.call("ListKeys")["Op"] == "ListKeys"
    finally:
        fake.stop()
    assert [request.op for request in fake.requests] == ["ListKeys"]


def test_threads_get_own_replies(agent):
    """Calls from many threads each get the reply to their own request."""
    mismatches = []

    def worker(number):
        for count in range(25):
            tag = f"{number}-{count}"
            if client.call("Echo", Tag=tag)["Tag"] != tag:
                mismatches.append(tag)
    with KmsClient(agent.path) as client:
        threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert mismatches == []
    assert len(agent.requests) == 200


def test_close_drops_connection(agent):
    """close() closes the connection and a later call reconnects."""
    client = KmsClient(agent.path)
    client.call("ListKeys")
    client.close()
    agent.wait_dropped()
    client.call("ListKeys")
    client.close()
    assert agent.accepted == 2


def test_socket_path_from_argument(monkeypatch):
    """An explicit path wins over the environment."""
    monkeypatch.setenv(SOCKET_ENV, "/env/agent.sock")
    assert resolve_socket_path("/arg/agent.sock") == "/arg/agent.sock"


def test_socket_path_from_environment(monkeypatch):
    """Without an argument the environment names the socket."""
    monkeypatch.setenv(SOCKET_ENV, "/env/agent.sock")
    assert KmsClient().socket_path == "/env/agent.sock"


def test_socket_path_default(monkeypatch):
    """Without argument or environment the default path is used."""
    monkeypatch.delenv(SOCKET_ENV, raising=False)
    assert KmsClient().socket_path == DEFAULT_SOCKET_PATH


def test_client_imports_no_agent_or_trio():
    """Importing the blocking client loads neither the agent, pkcs11 nor trio."""
    code = ("import sys, client, client.sync, client.wire; "
            "print(sorted(m for m in sys.modules "
            "if m.split('.')[0] in ('agent', 'pkcs11', 'trio')))")
    output = subprocess.run([sys.executable, "-c", code], capture_output=True,
                            text=True, check=True).stdout
    assert output.strip() == "[]"

