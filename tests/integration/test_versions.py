"""Key versions, rotation and random numbers on the real daemon and token.

Automatic rotation is made due by moving the key's NextRotationDate into
the past in the store file, since the shortest real interval is 7 days.
"""

from __future__ import annotations

import base64
import json
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from client import KmsClient, errors
from tests.integration.conftest import REPO, launch, start_agent
from tests.integration.test_kmsctl import KMSCTL

pytestmark = pytest.mark.hsm
WAIT_SECONDS = 30.0


@pytest.fixture
def client(shared_agent):
    with KmsClient(shared_agent.socket) as instance:
        yield instance


def new_key(client, **params) -> str:
    return client.create_key(**params)["KeyMetadata"]["KeyId"]


def make_due(agent, key_id: str) -> None:
    """Move a key's next automatic rotation into the past, in the store file."""
    database = Path(agent.config).parent / "data" / "kms-agent.db"
    with sqlite3.connect(database, timeout=10) as conn:
        cursor = conn.execute(
            "UPDATE keys SET next_rotation_date = '2000-01-01T00:00:00Z' "
            "WHERE key_id = ?", (key_id,))
        assert cursor.rowcount == 1
    conn.close()


def wait_for_new_primary(client, key_id: str, old_primary: str) -> dict:
    """Return the key's metadata once its primary version has changed."""
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        meta = client.describe_key(key_id)["KeyMetadata"]
        if meta["PrimaryKeyVersion"] != old_primary:
            return meta
        time.sleep(0.1)
    raise AssertionError(f"key {key_id} was not rotated in {WAIT_SECONDS} s")


def rotation_log_lines(agent) -> list[dict]:
    lines = [json.loads(line) for line in agent.log_text().splitlines()
             if line.startswith("{")]
    return [line for line in lines if line.get("msg") == "key rotated"]


def test_versions_and_old_blobs(client):
    """After CreateKeyVersion old blobs decrypt and new ones use the new version."""
    key_id = new_key(client)
    first = client.describe_key(key_id)["KeyMetadata"]["PrimaryKeyVersion"]
    old = client.encrypt(key_id, b"before", {"app": "v"})
    created = client.create_key_version(key_id)["KeyVersion"]
    assert created["KeyId"] == key_id
    listed = client.list_key_versions(key_id)
    assert listed["TotalCount"] == 2
    ids = [v["KeyVersionId"] for v in listed["KeyVersions"]["KeyVersion"]]
    assert ids == [first, created["KeyVersionId"]]
    meta = client.describe_key(key_id)["KeyMetadata"]
    assert meta["PrimaryKeyVersion"] == created["KeyVersionId"]
    decrypted = client.decrypt(old["CiphertextBlob"], {"app": "v"})
    assert decrypted["Plaintext"] == b"before"
    assert decrypted["KeyVersionId"] == first
    new = client.encrypt(key_id, b"after")
    assert new["KeyVersionId"] == created["KeyVersionId"]


def test_re_encrypt_to_new_primary(client):
    """ReEncrypt moves a blob of an old version to the primary version."""
    key_id = new_key(client)
    old = client.encrypt(key_id, b"move me")
    primary = client.create_key_version(key_id)["KeyVersion"]["KeyVersionId"]
    moved = client.re_encrypt(old["CiphertextBlob"], key_id)
    assert moved["KeyVersionId"] == primary
    assert client.decrypt(moved["CiphertextBlob"])["Plaintext"] == b"move me"


def test_describe_version_wrong_key(client):
    """DescribeKeyVersion with another key's version is KeyVersionNotFound."""
    key_a = new_key(client)
    key_b = new_key(client)
    version_b = client.describe_key(key_b)["KeyMetadata"]["PrimaryKeyVersion"]
    with pytest.raises(errors.KeyVersionNotFoundError):
        client.describe_key_version(key_a, version_b)
    own = client.describe_key_version(key_b, version_b)["KeyVersion"]
    assert own["KeyId"] == key_b


def test_rotation_policy_round_trip(client):
    """A policy set by CreateKey and UpdateRotationPolicy shows in DescribeKey."""
    key_id = new_key(client, enable_automatic_rotation=True, rotation_interval="30d")
    meta = client.describe_key(key_id)["KeyMetadata"]
    assert meta["AutomaticRotation"] == "Enabled"
    assert meta["RotationInterval"] == "2592000s"
    assert meta["NextRotationDate"] > meta["CreationDate"]
    client.update_rotation_policy(key_id, True, "168h")
    meta = client.describe_key(key_id)["KeyMetadata"]
    assert meta["RotationInterval"] == "604800s"
    client.update_rotation_policy(key_id, False)
    meta = client.describe_key(key_id)["KeyMetadata"]
    assert meta["AutomaticRotation"] == "Disabled"
    with pytest.raises(errors.InvalidParameterError):
        client.update_rotation_policy(key_id, True, "1d")


def test_rotation_in_running_agent(tmp_path):
    """A running agent rotates a due key once, logs it, and old blobs decrypt."""
    agent = start_agent(tmp_path / "agent", extra_agent="rotation_check_interval = 0.2")
    try:
        with KmsClient(agent.socket) as client:
            key_id = new_key(client, enable_automatic_rotation=True,
                             rotation_interval="7d")
            meta = client.describe_key(key_id)["KeyMetadata"]
            blob = client.encrypt(key_id, b"old data")["CiphertextBlob"]
            make_due(agent, key_id)
            rotated = wait_for_new_primary(client, key_id, meta["PrimaryKeyVersion"])
            assert rotated["LastRotationDate"] >= meta["CreationDate"]
            assert rotated["NextRotationDate"] > rotated["LastRotationDate"]
            assert client.decrypt(blob)["Plaintext"] == b"old data"
            assert client.list_key_versions(key_id)["TotalCount"] == 2
            lines = rotation_log_lines(agent)
            assert len(lines) == 1
            assert lines[0]["key_id"] == key_id
            assert lines[0]["key_version"] == rotated["PrimaryKeyVersion"]
    finally:
        agent.stop()


def test_rotation_due_at_restart(tmp_path):
    """A rotation that fell due while the agent was down happens at start."""
    agent = start_agent(tmp_path / "agent")
    with KmsClient(agent.socket) as client:
        key_id = new_key(client, enable_automatic_rotation=True,
                         rotation_interval="30d")
        primary = client.describe_key(key_id)["KeyMetadata"]["PrimaryKeyVersion"]
        blob = client.encrypt(key_id, b"from before")["CiphertextBlob"]
    assert agent.stop() == 0
    make_due(agent, key_id)
    again = launch(agent.config, agent.config.parent)
    try:
        with KmsClient(again.socket) as client:
            meta = wait_for_new_primary(client, key_id, primary)
            assert client.list_key_versions(key_id)["TotalCount"] == 2
            assert client.decrypt(blob)["Plaintext"] == b"from before"
            assert meta["NextRotationDate"] > meta["LastRotationDate"]
        assert len(rotation_log_lines(again)) == 1
    finally:
        again.stop()


@pytest.mark.parametrize("length", [1, 32, 1024])
def test_generate_random_lengths(client, length):
    """GenerateRandom returns the requested number of bytes from the token."""
    random = client.generate_random(length)["Random"]
    assert len(random) == length


@pytest.mark.parametrize("length", [0, 1025])
def test_generate_random_bounds(client, length):
    """Lengths outside 1 to 1024 are InvalidParameter."""
    with pytest.raises(errors.InvalidParameterError):
        client.generate_random(length)


def test_random_password_client(client):
    """GetRandomPassword honours length and exclusions over the socket."""
    reply = client.get_random_password(password_length=20, exclude_punctuation=True)
    password = reply["RandomPassword"]
    assert len(password) == 20
    assert password.isalnum()


def test_random_with_kmsctl(shared_agent):
    """kmsctl GenerateRandom prints Base64 of the requested length."""
    result = subprocess.run(
        [*KMSCTL, "--socket", str(shared_agent.socket), "GenerateRandom",
         "--Length", "48"], capture_output=True, cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr
    assert len(base64.b64decode(json.loads(result.stdout)["Random"])) == 48


def test_password_with_kmsctl(shared_agent):
    """kmsctl GetRandomPassword takes its flags from the command line."""
    result = subprocess.run(
        [*KMSCTL, "--socket", str(shared_agent.socket), "GetRandomPassword",
         "--PasswordLength", "16", "--ExcludeNumbers", "true"],
        capture_output=True, cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr
    password = json.loads(result.stdout)["RandomPassword"]
    assert len(password) == 16
    assert not any(c.isdigit() for c in password)
