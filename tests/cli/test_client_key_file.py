"""kmsctl with a bad client key file in ``$KMS_AGENT_CLIENT_KEY``.

A key id the handshake cannot carry is reported when the file is
loaded, as InvalidParameter naming the file, with exit status 1 and no
traceback. The agent is the threaded fake of ``tests.client``.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from client import cli
from client.client_key import ClientKey
from client.errors import InvalidParameterError
from client.wire import LocalProtocolError
from tests.client.conftest import FakeAgent

REPO = Path(__file__).resolve().parents[2]
KMSCTL = str(Path(sys.executable).with_name("kmsctl"))
BAD_KEY_IDS = {
    "long": "K" * 5000,
    "newline": "KAAP.one\nKAAP.two",
    "empty": "",
    "non_ascii": "KAAP.\u00e9",
}


def write_key_file(path: Path, key_id: str) -> Path:
    """Write a 0600 client key file with ``key_id`` and a fresh key."""
    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()).decode()
    path.write_text(json.dumps({"ClientKeyId": key_id, "PrivateKeyData": pem}))
    path.chmod(0o600)
    return path


@pytest.fixture
def fake_agent(tmp_path):
    agent = FakeAgent(str(tmp_path / "agent.sock"))
    yield agent
    agent.stop()


@pytest.mark.parametrize("key_id", BAD_KEY_IDS.values(), ids=BAD_KEY_IDS.keys())
def test_bad_key_id_rejected_on_load(tmp_path, key_id):
    """Loading a file whose key id the handshake rejects names the file."""
    path = write_key_file(tmp_path / "key.json", key_id)
    with pytest.raises(InvalidParameterError) as caught:
        ClientKey.from_file(path)
    assert str(path) in caught.value.message
    assert "ClientKeyId" in caught.value.message


def test_long_key_id_not_echoed(tmp_path):
    """The message gives the length of a long key id, not the id."""
    path = write_key_file(tmp_path / "key.json", BAD_KEY_IDS["long"])
    with pytest.raises(InvalidParameterError) as caught:
        ClientKey.from_file(path)
    assert "it has 5000" in caught.value.message
    assert "KKKK" not in caught.value.message


@pytest.mark.parametrize("key_id", BAD_KEY_IDS.values(), ids=BAD_KEY_IDS.keys())
def test_kmsctl_bad_key_file(tmp_path, monkeypatch, fake_agent, key_id):
    """kmsctl prints InvalidParameter naming the file and exits 1."""
    path = write_key_file(tmp_path / "key.json", key_id)
    monkeypatch.setenv("KMS_AGENT_CLIENT_KEY", str(path))
    out, err = io.StringIO(), io.StringIO()
    status = cli.run(["--socket", fake_agent.path, "ListKeys"], stdout=out,
                     stderr=err)
    assert status == 1
    error = json.loads(err.getvalue())
    assert error["Code"] == "InvalidParameter"
    assert str(path) in error["Message"]
    assert out.getvalue() == ""
    assert fake_agent.requests == []


def test_kmsctl_process_prints_no_traceback(tmp_path, fake_agent):
    """The kmsctl process reports a 5000-character key id as JSON."""
    path = write_key_file(tmp_path / "key.json", BAD_KEY_IDS["long"])
    env = {**os.environ, "KMS_AGENT_CLIENT_KEY": str(path)}
    result = subprocess.run(
        [KMSCTL, "--socket", fake_agent.path, "ListKeys"],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=60)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert json.loads(result.stderr)["Code"] == "InvalidParameter"


class ProtocolErrorClient:
    """A client whose every call fails on the local side of the wire."""

    def call(self, operation, **params):
        raise LocalProtocolError("client_key_id must be 1 to 128 printable "
                                 "ASCII characters")

    def close(self):
        pass


def test_kmsctl_local_protocol_error():
    """A LocalProtocolError that escapes the client becomes InvalidParameter."""
    out, err = io.StringIO(), io.StringIO()
    status = cli.run(["ListKeys"], client_factory=lambda path, timeout:
                     ProtocolErrorClient(), stdout=out, stderr=err)
    assert status == 1
    error = json.loads(err.getvalue())
    assert error["Code"] == "InvalidParameter"
    assert "client_key_id must be 1 to 128" in error["Message"]
