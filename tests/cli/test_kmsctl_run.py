"""kmsctl runs: output, errors, exit status and file commands on a fake agent."""

from __future__ import annotations

import base64
import io
import json
import os
import signal

import pytest

from client import cli
from client.errors import (
    InternalFailureError,
    KeyNotFoundError,
    ServerUnreachableError,
)


class Recorder:
    """A client factory that hands out one client and records its arguments."""

    def __init__(self, client):
        self.client = client
        self.opened: list[tuple[str | None, float]] = []

    def __call__(self, socket_path, timeout):
        self.opened.append((socket_path, timeout))
        return self.client


def run(argv, client=None, *, factory=None, stdin: bytes = b""):
    stdout, stderr = io.StringIO(), io.StringIO()
    factory = factory or Recorder(client)
    status = cli.run(argv, client_factory=factory, stdin=io.BytesIO(stdin),
                     stdout=stdout, stderr=stderr)
    return status, stdout.getvalue(), stderr.getvalue(), factory


def test_operation_reply_printed(fake_kms):
    """A reply is printed as JSON on stdout and the exit status is 0."""
    status, out, err, _ = run(
        ["Encrypt", "--KeyId", "alias/app", "--Plaintext", "hello",
         "--EncryptionContext", '{"app":"x"}'], fake_kms)
    reply = json.loads(out)
    assert status == 0
    assert err == ""
    assert reply["Plaintext"] == base64.b64encode(b"hello").decode()
    assert reply["EncryptionContext"] == {"app": "x"}


def test_parameters_sent_typed(fake_kms):
    """The client receives bytes, maps and integers, not text."""
    run(["GenerateDataKey", "--KeyId", "k", "--NumberOfBytes", "16",
         "--EncryptionContext", '{"a":"b"}'], fake_kms)
    assert fake_kms.calls[0][1] == {"KeyId": "k", "NumberOfBytes": 16,
                                    "EncryptionContext": {"a": "b"}}


def test_client_closed_after_call(fake_kms):
    """The client is closed once the reply is printed."""
    run(["ListKeys"], fake_kms)
    assert fake_kms.closed


def test_socket_option_used(fake_kms, monkeypatch):
    """--socket wins over KMS_AGENT_SOCKET and --timeout is passed on."""
    monkeypatch.setenv("KMS_AGENT_SOCKET", "/env.sock")
    *_, factory = run(["--socket", "/opt.sock", "--timeout", "5", "ListKeys"],
                      fake_kms)
    assert factory.opened == [("/opt.sock", 5.0)]


def test_socket_from_environment(fake_kms, monkeypatch):
    """Without --socket, KMS_AGENT_SOCKET names the socket."""
    monkeypatch.setenv("KMS_AGENT_SOCKET", "/env.sock")
    *_, factory = run(["ListKeys"], fake_kms)
    assert factory.opened == [("/env.sock", cli.DEFAULT_TIMEOUT)]


def test_no_socket_leaves_default(fake_kms, monkeypatch):
    """Without --socket or the variable, the client default is used."""
    monkeypatch.delenv("KMS_AGENT_SOCKET", raising=False)
    *_, factory = run(["ListKeys"], fake_kms)
    assert factory.opened == [(None, cli.DEFAULT_TIMEOUT)]


def test_caller_error_exits_one(make_fake_kms):
    """A 4xx error prints the four fields on stderr and exits 1."""
    kms = make_fake_kms(fail_with=KeyNotFoundError(request_id="req-1"))
    status, out, err, _ = run(["DescribeKey", "--KeyId", "nope"], kms)
    assert status == 1
    assert out == ""
    assert json.loads(err) == {
        "Code": "Forbidden.KeyNotFound",
        "Message": KeyNotFoundError.default_message,
        "HttpStatus": 404,
        "RequestId": "req-1",
    }


def test_agent_error_exits_two(make_fake_kms):
    """A 5xx error from the agent exits 2."""
    kms = make_fake_kms(fail_with=InternalFailureError())
    status, _, err, _ = run(["ListKeys"], kms)
    assert status == 2
    assert json.loads(err)["Code"] == "InternalFailure"


def test_unreachable_socket_exits_two():
    """A client that cannot connect exits 2 with SDK.ServerUnreachable."""

    def refuse_connection(socket_path, timeout):
        raise ConnectionRefusedError(111, "Connection refused")

    status, _, err, _ = run(["ListKeys"], factory=refuse_connection)
    assert status == 2
    assert json.loads(err)["Code"] == ServerUnreachableError.code


def test_ignored_stop_signal_kept():
    """A stop signal ignored by the parent, as under nohup, stays ignored."""
    saved = {number: signal.getsignal(number) for number in cli.STOP_SIGNALS}
    try:
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        cli._raise_on_stop_signals()
        assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
        assert signal.getsignal(signal.SIGTERM) == cli._raise_stopped
    finally:
        for number, handler in saved.items():
            signal.signal(number, handler)


def test_bad_argument_exits_one(fake_kms):
    """A bad argument prints an InvalidParameter error and exits 1."""
    status, _, err, _ = run(["Decrypt", "--CiphertextBlob", "%%%"], fake_kms)
    assert status == 1
    assert json.loads(err)["Code"] == "InvalidParameter"
    assert fake_kms.calls == []


def test_help_lists_file_commands():
    """--help prints usage with the file commands on stdout and exits 0."""
    status, out, _, _ = run(["--help"])
    assert status == 0
    assert "encrypt-file" in out
    assert "decrypt-file" in out


def test_no_command_prints_usage():
    """With no command, the usage goes to stderr and the exit status is 1."""
    status, out, err, _ = run([])
    assert status == 1
    assert out == ""
    assert err.startswith("usage: kmsctl")


def test_file_commands_round_trip(fake_kms, tmp_path):
    """encrypt-file then decrypt-file restores the file, printing nothing."""
    source = tmp_path / "plain.txt"
    source.write_bytes(os.urandom(70_000))
    sealed, output = tmp_path / "sealed", tmp_path / "out"
    context = ["--EncryptionContext", '{"app":"x"}']
    first = run(["encrypt-file", "--KeyId", "alias/app", *context, str(source),
                 str(sealed)], fake_kms)
    second = run(["decrypt-file", *context, str(sealed), str(output)], fake_kms)
    assert first[:3] == (0, "", "")
    assert second[:3] == (0, "", "")
    assert output.read_bytes() == source.read_bytes()


def test_data_key_never_printed(fake_kms, tmp_path):
    """Neither output stream shows the data key, raw or as Base64."""
    source = tmp_path / "plain.txt"
    source.write_bytes(b"secret")
    _, out, err, _ = run(["encrypt-file", "--KeyId", "k", str(source),
                          str(tmp_path / "sealed")], fake_kms)
    key_text = base64.b64encode(fake_kms.data_keys[0]).decode()
    assert key_text not in out + err
    assert fake_kms.data_keys[0].hex() not in out + err


def test_wrong_context_decrypt_exits_one(fake_kms, tmp_path):
    """decrypt-file with the wrong context exits 1 and creates no output."""
    source = tmp_path / "plain.txt"
    source.write_bytes(b"secret")
    sealed, output = tmp_path / "sealed", tmp_path / "out"
    run(["encrypt-file", "--KeyId", "k", "--EncryptionContext", '{"a":"1"}',
         str(source), str(sealed)], fake_kms)
    status, _, err, _ = run(["decrypt-file", "--EncryptionContext", '{"a":"2"}',
                             str(sealed), str(output)], fake_kms)
    assert status == 1
    assert json.loads(err)["Code"] == "InvalidCiphertext"
    assert not output.exists()


def test_context_from_file(fake_kms, tmp_path):
    """The file commands read --EncryptionContext from file:// too."""
    context = tmp_path / "context.json"
    context.write_text('{"app": "x"}\n')
    source = tmp_path / "plain.txt"
    source.write_bytes(b"secret")
    status, *_ = run(["encrypt-file", "--KeyId", "k", "--EncryptionContext",
                      f"file://{context}", str(source), str(tmp_path / "s")],
                     fake_kms)
    assert status == 0
    assert fake_kms.calls[0][1]["EncryptionContext"] == {"app": "x"}


@pytest.mark.parametrize("context", ['"text"', "[1]", '{"a": 1}', "plain"])
def test_invalid_file_context_rejected(fake_kms, tmp_path, context):
    """A context that is not a map of strings exits 1 before any call."""
    source = tmp_path / "plain.txt"
    source.write_bytes(b"secret")
    status, _, err, _ = run(["encrypt-file", "--KeyId", "k", "--EncryptionContext",
                             context, str(source), str(tmp_path / "s")], fake_kms)
    assert status == 1
    assert json.loads(err)["Code"] == "InvalidParameter"
    assert fake_kms.calls == []


def test_missing_input_file_exits_one(fake_kms, tmp_path):
    """A missing IN file is reported with its path and exits 1."""
    missing = tmp_path / "absent.txt"
    status, _, err, _ = run(["encrypt-file", "--KeyId", "k", str(missing),
                             str(tmp_path / "out")], fake_kms)
    assert status == 1
    assert str(missing) in json.loads(err)["Message"]


def test_progress_bar_on_terminal(fake_kms, tmp_path):
    """A terminal stderr gets a progress line; a pipe gets none."""

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    source = tmp_path / "plain.txt"
    source.write_bytes(os.urandom(1000))
    stderr = Terminal()
    status = cli.run(["encrypt-file", "--KeyId", "k", str(source),
                      str(tmp_path / "s")], client_factory=Recorder(fake_kms),
                     stdin=io.BytesIO(), stdout=io.StringIO(), stderr=stderr)
    assert status == 0
    assert "100%" in stderr.getvalue()
