"""Policy reload and keystore failure on the real daemon.

SIGHUP and ReloadPolicies put a new policy file in force without
dropping connections, and a bad file is refused whole while the old
policies stay. A keystore whose token cannot be opened leaves the agent
serving the other keystore and answering 503 for its own keys, until a
SIGHUP opens it again.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time

import pytest

from client import KmsClient, errors
from tests.integration.access_env import (
    codes, keystore_table, make_tokens, run_as, start, traversable_dir,
    unix_users, write_policies,  # noqa: F401 (fixture)
)
from tests.integration.conftest import REPO, launch

pytestmark = pytest.mark.hsm

LOG_WAIT_SECONDS = 30

POLICIES = """
    [principals.admin]
    uids = [0]
    keystores = ["*"]

    [principals.alice]
    users = ["{alice}"]
    keystores = ["tenant-a"]

    [principals.bob]
    users = ["{bob}"]
    keystores = ["tenant-b"]

    [policies.admin-everything]
    principals = ["admin"]
    permissions = ["administrator", "key-user", "secret-user"]
    resources = ["key/*", "secret/*", "agent"]

    [policies.tenants]
    principals = [{users}]
    permissions = ["key-user"]
    resources = ["key/*"]
"""


def policies(users, granted=("alice", "bob"), extra: str = "") -> str:
    names = ", ".join(f'"{name}"' for name in granted)
    return POLICIES.format(alice=users.alice.name, bob=users.bob.name,
                           users=names) + extra


def wait_for_log(agent, text: str, count: int = 1) -> None:
    """Wait until ``text`` appears ``count`` times in the agent's log."""
    deadline = time.monotonic() + LOG_WAIT_SECONDS
    while agent.log_text().count(text) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"{text!r} not logged:\n{agent.log_text()[-3000:]}")
        time.sleep(0.05)


@pytest.fixture
def workdir():
    directory = traversable_dir()
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def agent(workdir, unix_users):
    """An agent over two tokens where alice and bob may use keys."""
    module, token_a, token_b = make_tokens(workdir)
    keystores = (keystore_table("tenant-a", module, token_a)
                 + keystore_table("tenant-b", module, token_b))
    process = start(workdir, unix_users.group, keystores, policies(unix_users))
    yield process
    process.stop()


def encrypt_as(user, agent, key_id) -> str:
    return codes(run_as(user, agent.socket, [
        ("Encrypt", {"KeyId": key_id, "Plaintext": b"x"})]))[0]


def test_sighup_applies_new_policies(agent, workdir, unix_users):
    """After SIGHUP a removed grant is refused, on the same admin connection."""
    admin = KmsClient(agent.socket)
    key_id = admin.create_key()["KeyMetadata"]["KeyId"]
    connection = admin._socket
    assert encrypt_as(unix_users.alice, agent, key_id) == "OK"
    write_policies(workdir, policies(unix_users, granted=("bob",)))
    agent.process.send_signal(signal.SIGHUP)
    wait_for_log(agent, "access control reloaded")
    assert encrypt_as(unix_users.alice, agent, key_id) == "Forbidden.NoPermission"
    assert admin.describe_key(key_id)["KeyMetadata"]["KeyId"] == key_id
    assert admin._socket is connection
    admin.close()


def test_sighup_bad_file_keeps_old(agent, workdir, unix_users):
    """A policy file with an unknown template is refused whole."""
    with KmsClient(agent.socket) as admin:
        key_id = admin.create_key()["KeyMetadata"]["KeyId"]
    write_policies(workdir, policies(unix_users, extra="""
        [policies.broken]
        principals = ["alice"]
        permissions = ["superuser"]
        resources = ["key/*"]
    """))
    agent.process.send_signal(signal.SIGHUP)
    wait_for_log(agent, "configuration reload failed")
    assert "superuser" in agent.log_text()
    assert encrypt_as(unix_users.alice, agent, key_id) == "OK"


def test_reload_operation(agent, workdir, unix_users):
    """ReloadPolicies names the problem of a bad file, then loads a good one."""
    write_policies(workdir, policies(unix_users) + '\n[policies.x]\nprincipals = '
                   '["ghost"]\npermissions = ["key-user"]\nresources = ["key/*"]\n')
    with KmsClient(agent.socket) as admin:
        key_id = admin.create_key()["KeyMetadata"]["KeyId"]
        with pytest.raises(errors.InvalidConfigurationError) as caught:
            admin.call("ReloadPolicies")
        assert "ghost" in caught.value.message
        assert encrypt_as(unix_users.bob, agent, key_id) == "Forbidden.NoPermission"
        write_policies(workdir, policies(unix_users, granted=("alice",)))
        assert admin.call("ReloadPolicies")["Principals"] == 3
    assert encrypt_as(unix_users.alice, agent, key_id) == "OK"


def test_reload_refused_to_tenant(agent, unix_users):
    """Only administrators of the agent may reload."""
    outcomes = run_as(unix_users.alice, agent.socket, [("ReloadPolicies", {})])
    assert codes(outcomes) == ["Forbidden.NoPermission"]


# --- a keystore that fails to open ---------------------------------------------------


def test_failed_keystore_serves_others(agent, workdir, unix_users):
    """With tenant-b's PIN wrong, tenant-a serves and tenant-b answers 503."""
    with KmsClient(agent.socket) as admin:
        key_a = admin.create_key()["KeyMetadata"]["KeyId"]
        key_b = admin.call("CreateKey", DKMSInstanceId="tenant-b")[
            "KeyMetadata"]["KeyId"]
        blob_b = admin.encrypt(key_b, b"b data")["CiphertextBlob"]
    agent.stop()
    pin_file = workdir / "token" / "pin"
    good_pin = pin_file.read_text()
    wrong_pin = workdir / "wrong-pin"
    wrong_pin.write_text("000000\n")
    wrong_pin.chmod(0o600)
    config = workdir / "config.toml"
    text = config.read_text()
    b_table = text.index("[keystores.tenant-b]")
    config.write_text(text[:b_table] + text[b_table:].replace(str(pin_file),
                                                            str(wrong_pin)))
    restarted = launch(config, workdir)
    try:
        assert "keystore failed to open" in restarted.log_text()
        with KmsClient(restarted.socket) as admin:
            assert admin.encrypt(key_a, b"a data")["KeyId"] == key_a
            for call in (lambda: admin.encrypt(key_b, b"x"),
                         lambda: admin.decrypt(blob_b),
                         lambda: admin.call("CreateKey", DKMSInstanceId="tenant-b")):
                with pytest.raises(errors.ServiceUnavailableError) as caught:
                    call()
                assert caught.value.http_status == 503
        assert encrypt_as(unix_users.bob, restarted, key_b) == \
            "ServiceUnavailableTemporary"
        assert encrypt_as(unix_users.alice, restarted, key_b) == \
            "Forbidden.NoPermission"
        wrong_pin.write_text(good_pin)
        restarted.process.send_signal(signal.SIGHUP)
        wait_for_log(restarted, '"keystore opened"')
        with KmsClient(restarted.socket) as admin:
            assert admin.decrypt(blob_b)["Plaintext"] == b"b data"
    finally:
        restarted.stop()


def test_no_keystore_opens_exits(workdir):
    """The agent refuses to start when no keystore opens, naming each."""
    module, token_a, _ = make_tokens(workdir)
    config = workdir / "config.toml"
    config.write_text(
        '[agent]\nsocket = "agent.sock"\ndata_dir = "data"\nsocket_mode = "0600"\n'
        'default_keystore = "tenant-a"\n'
        + keystore_table("tenant-a", module, token_a, label="missing-a")
        + keystore_table("tenant-b", module, token_a, label="missing-b"))
    result = subprocess.run([sys.executable, "-m", "agent", "--config", str(config)],
                            cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "keystore tenant-a" in result.stderr
    assert "keystore tenant-b" in result.stderr
