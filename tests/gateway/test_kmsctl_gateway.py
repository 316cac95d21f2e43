"""``kmsctl gateway``: AccessKey pairs and client key files for principals."""

from __future__ import annotations

import base64
import io
import json
import os

from cryptography.hazmat.primitives.serialization import pkcs12

from agent.gateway.credentials import load_credentials
from client import gateway


def run(*argv: str) -> tuple[int, dict | None, str]:
    out, err = io.StringIO(), io.StringIO()
    status = gateway.run(list(argv), out, err)
    reply = json.loads(out.getvalue()) if out.getvalue() else None
    return status, reply, err.getvalue()


def test_access_key_appended(tmp_path):
    """create-access-key appends a pair the agent loads, in a 0600 file."""
    path = tmp_path / "creds.toml"
    status, reply, _ = run("create-access-key", "--principal", "app",
                           "--credentials-file", str(path))
    assert status == 0
    assert reply["AccessKeyId"].startswith("LTAI")
    assert os.stat(path).st_mode & 0o777 == 0o600
    key = load_credentials(path).access_keys[reply["AccessKeyId"]]
    assert key.secret == reply["AccessKeySecret"]
    assert key.principal == "app"


def test_two_keys_both_kept(tmp_path):
    """A second key is appended beside the first."""
    path = tmp_path / "creds.toml"
    first = run("create-access-key", "--principal", "a", "--credentials-file",
                str(path))[1]
    second = run("create-access-key", "--principal", "b", "--credentials-file",
                 str(path))[1]
    assert set(load_credentials(path).access_keys) == {first["AccessKeyId"],
                                                       second["AccessKeyId"]}


def test_client_key_file_loads(tmp_path):
    """create-client-key writes a PKCS#12 key file matching the public key."""
    path, output = tmp_path / "creds.toml", tmp_path / "clientKey.json"
    password_file = tmp_path / "pw"
    password_file.write_text("correct horse\n")
    status, reply, _ = run("create-client-key", "--principal", "app",
                           "--credentials-file", str(path), "--output", str(output),
                           "--password-file", str(password_file), "--days", "30")
    assert status == 0
    assert "Password" not in reply
    document = json.loads(output.read_text())
    assert document["KeyId"] == reply["ClientKeyId"]
    assert os.stat(output).st_mode & 0o777 == 0o600
    key, certificate, _ = pkcs12.load_key_and_certificates(
        base64.b64decode(document["PrivateKeyData"]), b"correct horse")
    stored = load_credentials(path).client_keys[reply["ClientKeyId"]]
    assert stored.public_key.public_numbers() == key.public_key().public_numbers()
    assert certificate is not None


def test_generated_password_printed(tmp_path):
    """Without --password-file a new password is made and printed."""
    output = tmp_path / "clientKey.json"
    _, reply, _ = run("create-client-key", "--principal", "app", "--credentials-file",
                      str(tmp_path / "creds.toml"), "--output", str(output))
    document = json.loads(output.read_text())
    key, _, _ = pkcs12.load_key_and_certificates(
        base64.b64decode(document["PrivateKeyData"]), reply["Password"].encode())
    assert key is not None


def test_existing_output_refused(tmp_path):
    """An existing key file is never overwritten."""
    output = tmp_path / "clientKey.json"
    output.write_text("{}")
    status, _, err = run("create-client-key", "--principal", "app",
                         "--credentials-file", str(tmp_path / "c.toml"),
                         "--output", str(output))
    assert status == 1
    assert "exists" in err
    assert output.read_text() == "{}"


def test_shared_credentials_file_refused(tmp_path):
    """A credentials file readable by others is refused."""
    path = tmp_path / "creds.toml"
    path.write_text("")
    os.chmod(path, 0o644)
    status, _, err = run("create-access-key", "--principal", "app",
                         "--credentials-file", str(path))
    assert status == 1
    assert "chmod 600" in err
    assert path.read_text() == ""


def test_bad_principal_refused(tmp_path):
    """A principal name with spaces is refused."""
    status, _, err = run("create-access-key", "--principal", "a b",
                         "--credentials-file", str(tmp_path / "c.toml"))
    assert status == 1
    assert "principal" in err


def test_missing_option_fails(tmp_path):
    """A missing --principal is a usage error."""
    status, _, _ = run("create-access-key", "--credentials-file",
                       str(tmp_path / "c.toml"))
    assert status == 2
