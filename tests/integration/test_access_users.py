"""Two Unix users against one daemon with two keystores on two tokens.

alice administers and uses keystore tenant-a; bob may only use keys and
read secrets in tenant-b; root (this process) administers everything.
Each user's calls run in a child process with that user's uid, so the
daemon sees real peer credentials. Every refusal of a resource that
exists is compared with the refusal of one that does not.
"""

from __future__ import annotations

import shutil
import uuid

import pytest

from client import KmsClient
from tests.integration.access_env import (
    User, codes, keystore_table, make_tokens, run_as, save_client_key, start,
    traversable_dir, unix_users,  # noqa: F401 (fixture)
)

pytestmark = pytest.mark.hsm

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

    [principals.keyed]
    client_key = true
    keystores = ["tenant-a"]

    [policies.admin-everything]
    principals = ["admin"]
    permissions = ["administrator", "key-user", "secret-user"]
    resources = ["key/*", "secret/*", "agent"]

    [policies.alice-tenant]
    principals = ["alice"]
    permissions = ["administrator", "key-user", "secret-user"]
    resources = ["key/*", "secret/*"]

    [policies.bob-use]
    principals = ["bob"]
    permissions = ["key-user", "secret-user"]
    resources = ["key/*", "secret/*"]

    [policies.keyed-use]
    principals = ["keyed"]
    permissions = ["key-user"]
    resources = ["key/*"]
"""


class Tenants:
    """The running agent and what root created in it for the tests."""

    def __init__(self, agent, directory, users):
        self.agent = agent
        self.directory = directory
        self.socket = agent.socket
        self.alice: User = users.alice
        self.bob: User = users.bob
        self.gid = users.gid
        with KmsClient(self.socket) as admin:
            self.key_a = admin.create_key()["KeyMetadata"]["KeyId"]
            self.key_b = admin.call("CreateKey", DKMSInstanceId="tenant-b")[
                "KeyMetadata"]["KeyId"]
            admin.create_alias("alias/tenant-a", self.key_a)
            self.blob_a = admin.encrypt(self.key_a, b"a secret")["CiphertextBlob"]
            self.blob_b = admin.encrypt(self.key_b, b"b secret")["CiphertextBlob"]
            admin.call("CreateSecret", SecretName="a/db", VersionId="v1",
                       SecretData="pw-a", EncryptionKeyId=self.key_a)
            admin.call("CreateSecret", SecretName="b/db", VersionId="v1",
                       SecretData="pw-b", EncryptionKeyId=self.key_b)

    def admin(self) -> KmsClient:
        return KmsClient(self.socket)


@pytest.fixture(scope="module")
def tenants(unix_users):
    directory = traversable_dir()
    try:
        module, token_a, token_b = make_tokens(directory)
        keystores = (keystore_table("tenant-a", module, token_a)
                     + keystore_table("tenant-b", module, token_b))
        policies = POLICIES.format(alice=unix_users.alice.name,
                                   bob=unix_users.bob.name)
        agent = start(directory, unix_users.group, keystores, policies)
        try:
            yield Tenants(agent, directory, unix_users)
        finally:
            agent.stop()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def stranger(tenants) -> User:
    """A uid with no account and no principal, in the socket's group."""
    return User("stranger", 4242, tenants.gid)


# --- each user sees what its policy grants -----------------------------------------


def test_alice_administers_her_keystore(tenants):
    """alice creates, manages and uses keys and secrets in tenant-a."""
    outcomes = run_as(tenants.alice, tenants.socket, [
        ("CreateKey", {"Description": "alice's"}),
        ("DisableKey", {"KeyId": tenants.key_a}),
        ("EnableKey", {"KeyId": tenants.key_a}),
        ("TagResource", {"KeyId": tenants.key_a,
                         "Tags": [{"TagKey": "team", "TagValue": "a"}]}),
        ("CreateAlias", {"AliasName": f"alias/a-{uuid.uuid4().hex[:8]}",
                         "KeyId": tenants.key_a}),
        ("Encrypt", {"KeyId": "alias/tenant-a", "Plaintext": b"x"}),
        ("Decrypt", {"CiphertextBlob": tenants.blob_a}),
        ("GenerateDataKey", {"KeyId": tenants.key_a}),
        ("GetSecretValue", {"SecretName": "a/db"}),
        ("PutSecretValue", {"SecretName": "a/db", "VersionId": "v2",
                            "SecretData": "pw-a2"}),
        ("SetKeyPolicy", {"KeyId": tenants.key_a,
                          "Policy": '{"Version":"1","Statement":[]}'}),
    ])
    assert codes(outcomes) == ["OK"] * 11
    assert outcomes[0]["result"]["KeyMetadata"]["DKMSInstanceId"] == "tenant-a"
    assert outcomes[0]["result"]["KeyMetadata"]["Creator"] == "alice"
    assert outcomes[6]["result"]["Plaintext"] == b"a secret"


def test_bob_uses_but_cannot_manage(tenants):
    """bob may use keys and read secrets in tenant-b, and nothing more."""
    outcomes = run_as(tenants.bob, tenants.socket, [
        ("Encrypt", {"KeyId": tenants.key_b, "Plaintext": b"x"}),
        ("Decrypt", {"CiphertextBlob": tenants.blob_b}),
        ("GetSecretValue", {"SecretName": "b/db"}),
        ("DescribeKey", {"KeyId": tenants.key_b}),
        ("CreateKey", {"DKMSInstanceId": "tenant-b"}),
        ("DisableKey", {"KeyId": tenants.key_b}),
        ("CreateAlias", {"AliasName": "alias/bob", "KeyId": tenants.key_b}),
        ("PutSecretValue", {"SecretName": "b/db", "VersionId": "v2",
                            "SecretData": "x"}),
        ("SetKeyPolicy", {"KeyId": tenants.key_b,
                          "Policy": '{"Version":"1","Statement":[]}'}),
        ("ReloadPolicies", {}),
        ("CreateClientKey", {"Principal": "keyed"}),
    ])
    assert codes(outcomes) == ["OK"] * 4 + ["Forbidden.NoPermission"] * 7
    assert outcomes[1]["result"]["Plaintext"] == b"b secret"
    assert outcomes[2]["result"]["SecretData"] == "pw-b"
    assert {o["status"] for o in outcomes[4:]} == {403}


def test_lists_show_own_keystore(tenants):
    """ListKeys and ListSecrets show each user only its keystore."""
    for user, own_key, own_secret in [(tenants.alice, tenants.key_a, "a/db"),
                                      (tenants.bob, tenants.key_b, "b/db")]:
        keys, secrets = run_as(user, tenants.socket, [
            ("ListKeys", {"PageSize": 100}), ("ListSecrets", {"PageSize": 100})])
        key_ids = {k["KeyId"] for k in keys["result"]["Keys"]["Key"]}
        names = {s["SecretName"] for s in secrets["result"]["SecretList"]["Secret"]}
        assert own_key in key_ids
        assert {tenants.key_a, tenants.key_b} - key_ids == \
            {tenants.key_a, tenants.key_b} - {own_key}
        assert names == {own_secret}


def test_admin_sees_both_keystores(tenants):
    """root, bound to every keystore, lists both tenants' keys."""
    with tenants.admin() as admin:
        listed = admin.list_keys(page_size=100)["Keys"]["Key"]
    assert {tenants.key_a, tenants.key_b} <= {k["KeyId"] for k in listed}


def test_tenants_cannot_cross(tenants):
    """Neither user may touch the other tenant's keys, blobs or secrets."""
    for user, key, blob, secret in [
            (tenants.alice, tenants.key_b, tenants.blob_b, "b/db"),
            (tenants.bob, tenants.key_a, tenants.blob_a, "a/db")]:
        outcomes = run_as(user, tenants.socket, [
            ("Encrypt", {"KeyId": key, "Plaintext": b"x"}),
            ("Decrypt", {"CiphertextBlob": blob}),
            ("DescribeKey", {"KeyId": key}),
            ("GetSecretValue", {"SecretName": secret}),
            ("ReEncrypt", {"CiphertextBlob": blob, "DestinationKeyId": key}),
        ])
        assert codes(outcomes) == ["Forbidden.NoPermission"] * 5, user.name


# --- refusals do not leak existence ---------------------------------------------


def test_refusals_do_not_leak(tenants):
    """bob gets identical refusals for alice's resources and missing ones."""
    missing_key = "key-" + "z" * 24
    forged_blob = str(uuid.uuid4()).encode() + tenants.blob_a[36:]
    outcomes = run_as(tenants.bob, tenants.socket, [
        ("Encrypt", {"KeyId": tenants.key_a, "Plaintext": b"x"}),
        ("Encrypt", {"KeyId": missing_key, "Plaintext": b"x"}),
        ("DescribeKey", {"KeyId": "alias/tenant-a"}),
        ("DescribeKey", {"KeyId": "alias/no-such-alias"}),
        ("Decrypt", {"CiphertextBlob": tenants.blob_a}),
        ("Decrypt", {"CiphertextBlob": forged_blob}),
        ("GetSecretValue", {"SecretName": "a/db"}),
        ("GetSecretValue", {"SecretName": "a/none"}),
    ])
    assert set(codes(outcomes)) == {"Forbidden.NoPermission"}
    messages = [o["message"] for o in outcomes]
    assert messages[0].replace(tenants.key_a, "K") == \
        messages[1].replace(missing_key, "K")
    assert messages[2].replace("tenant-a", "X") == \
        messages[3].replace("no-such-alias", "X")
    assert tenants.key_a not in messages[2]
    assert messages[4] == messages[5]
    assert messages[6].replace("a/db", "S") == messages[7].replace("a/none", "S")


def test_unknown_uid_refused_at_handshake(tenants):
    """A process whose uid matches no principal is refused when it connects."""
    outcomes = run_as(stranger(tenants), tenants.socket, [("ListKeys", {})])
    assert codes(outcomes) == ["Forbidden.UnknownCaller"]
    assert "caller refused at handshake" in tenants.agent.log_text()


# --- client keys -------------------------------------------------------------------


def issue(tenants, **window) -> dict:
    with tenants.admin() as admin:
        return admin.call("CreateClientKey", Principal="keyed", **window)


def test_client_key_admits_stranger(tenants):
    """A client key makes an unknown uid the key's principal, in its scope."""
    user = stranger(tenants)
    key_file = save_client_key(issue(tenants), tenants.directory / "k1.json", user)
    outcomes = run_as(user, tenants.socket, [
        ("GetCallerIdentity", {}),
        ("Encrypt", {"KeyId": tenants.key_a, "Plaintext": b"x"}),
        ("Encrypt", {"KeyId": tenants.key_b, "Plaintext": b"x"}),
        ("DisableKey", {"KeyId": tenants.key_a}),
    ], client_key=str(key_file))
    assert codes(outcomes) == ["OK", "OK", "Forbidden.NoPermission",
                               "Forbidden.NoPermission"]
    assert outcomes[0]["result"]["Principal"] == "keyed"


def test_forged_client_key_refused(tenants):
    """A real key id with another private key is refused at handshake."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    reply = issue(tenants)
    reply["PrivateKeyData"] = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()).decode()
    user = stranger(tenants)
    key_file = save_client_key(reply, tenants.directory / "forged.json", user)
    outcomes = run_as(user, tenants.socket, [("ListKeys", {})],
                      client_key=str(key_file))
    assert codes(outcomes) == ["Forbidden.ClientKeyInvalid"]


def test_revoked_client_key_refused(tenants):
    """A revoked client key is refused at handshake."""
    reply = issue(tenants)
    with tenants.admin() as admin:
        admin.call("RevokeClientKey", ClientKeyId=reply["ClientKeyId"])
    user = stranger(tenants)
    key_file = save_client_key(reply, tenants.directory / "revoked.json", user)
    outcomes = run_as(user, tenants.socket, [("ListKeys", {})],
                      client_key=str(key_file))
    assert codes(outcomes) == ["Forbidden.ClientKeyRevoked"]


def test_client_key_outside_window_refused(tenants):
    """A key outside its validity window is refused as expired."""
    reply = issue(tenants, NotBefore="2099-01-01T00:00:00Z",
                  NotAfter="2100-01-01T00:00:00Z")
    user = stranger(tenants)
    key_file = save_client_key(reply, tenants.directory / "later.json", user)
    outcomes = run_as(user, tenants.socket, [("ListKeys", {})],
                      client_key=str(key_file))
    assert codes(outcomes) == ["Forbidden.ClientKeyExpired"]
