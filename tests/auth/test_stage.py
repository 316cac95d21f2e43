"""The access stage through the real dispatcher, on two fake keystores.

Each group of operations is called by a principal that may and by ones
that may not, and every refusal of a missing resource is compared with
the refusal of an existing one it may not use.
"""

from __future__ import annotations

import json
import uuid

import pytest

from agent.auth import rules
from agent.context import Peer, RequestContext
from agent.daemon import all_operations
from agent.keystore.unavailable import UnavailableKeystore
from client import errors
from tests.auth.harness import (
    ADMIN, ALICE, BOB, CAROL, NOBODY_GRANTED, STRANGER, AccessAgent,
)


@pytest.fixture
async def agent(tmp_path):
    instance = AccessAgent(tmp_path)
    yield instance
    await instance.store.aclose()


async def refusal(agent, uid, op, **params) -> errors.KmsError:
    """Return the error ``op`` fails with; fail the test if it succeeds."""
    with pytest.raises(errors.KmsError) as caught:
        await agent.call(uid, op, **params)
    return caught.value


def policy(*statements) -> str:
    return json.dumps({"Version": "1", "Statement": list(statements)})


def allow(principal, *actions, effect="Allow", **extra) -> dict:
    return {"Effect": effect, "Principal": {"Local": [principal]},
            "Action": list(actions), "Resource": ["*"], **extra}


# --- the operation table ------------------------------------------------------


def test_every_operation_has_rule():
    """Every operation the agent serves is mapped to a template."""
    unmapped = [op.name for op in all_operations() if op.name not in rules.RULES]
    assert unmapped == []


# Parameters that name a resource, and the operations where one of them
# names nothing that exists yet (a new alias) or nothing at all (a raw
# asymmetric ciphertext, whose key is the KeyId or CertificateId parameter).
RESOURCE_PARAMS = {"KeyId", "DestinationKeyId", "CiphertextBlob", "AliasName",
                   "SecretName", "SecretsList", "ProtectedResourceArn",
                   "EncryptionKeyId", "DKMSInstanceId", "SourceKeyId",
                   "CertificateId"}
NOT_REFERENCES = {("CreateAlias", "AliasName"),
                  ("AsymmetricDecrypt", "CiphertextBlob"),
                  ("CertificatePrivateKeyDecrypt", "CiphertextBlob")}


def test_resource_params_checked():
    """Every parameter that names a resource is a target of its rule."""
    for operation in all_operations():
        targets = {t.param for t in rules.RULES[operation.name].targets}
        for param in operation.params:
            if param.name in RESOURCE_PARAMS and \
                    (operation.name, param.name) not in NOT_REFERENCES:
                assert param.name in targets, (operation.name, param.name)


async def test_unmapped_operation_admin_only(agent):
    """An operation missing from the table is refused to a tenant."""
    error = await refusal(agent, ALICE, "Frobnicate")
    assert isinstance(error, errors.NoPermissionError)
    assert (await agent.call(ADMIN, "Frobnicate"))["Done"] is True


# --- who is calling -------------------------------------------------------------


async def test_unknown_caller_refused(agent):
    """A uid that matches no principal is refused on every request."""
    error = await refusal(agent, STRANGER, "ListKeys")
    assert isinstance(error, errors.UnknownCallerError)
    assert error.http_status == 403


async def test_caller_identity_reported(agent):
    """GetCallerIdentity names the principal and its keystores."""
    reply = await agent.call(ALICE, "GetCallerIdentity")
    assert reply["Principal"] == "alice"
    assert reply["Keystores"] == ["tenant-a"]
    assert reply["Uid"] == ALICE


async def test_principal_without_grants_refused(agent):
    """An admitted principal with no policy may do nothing."""
    for op, params in [("ListKeys", {}), ("CreateKey", {}),
                       ("GetRandomPassword", {}), ("ListSecrets", {})]:
        error = await refusal(agent, NOBODY_GRANTED, op, **params)
        assert isinstance(error, errors.NoPermissionError), op


# --- keys: cryptography -----------------------------------------------------------


async def test_tenant_round_trip(agent):
    """A key user encrypts and decrypts under a key of its keystore."""
    key_id = await agent.new_key(ALICE)
    blob = await agent.encrypt(key_id, ALICE, b"hello")
    reply = await agent.call(ALICE, "Decrypt", CiphertextBlob=blob)
    assert reply["Plaintext"] == b"hello"


async def test_other_tenant_key_refused(agent):
    """A key of another keystore is refused for every key operation."""
    key_id = await agent.new_key(ADMIN, "tenant-a")
    for op, params in [("Encrypt", {"Plaintext": b"x"}), ("GenerateDataKey", {}),
                       ("DescribeKey", {}), ("DisableKey", {}),
                       ("ListResourceTags", {}), ("GetKeyPolicy", {})]:
        error = await refusal(agent, BOB, op, KeyId=key_id, **params)
        assert isinstance(error, errors.NoPermissionError), op


async def test_foreign_blob_refused(agent):
    """Decrypt authorizes the key the blob names, before decrypting."""
    blob = await agent.encrypt(await agent.new_key(ALICE), ALICE)
    error = await refusal(agent, BOB, "Decrypt", CiphertextBlob=blob)
    assert isinstance(error, errors.NoPermissionError)


async def test_reencrypt_needs_both_keys(agent):
    """ReEncrypt needs the caller's rights on source and destination."""
    blob = await agent.encrypt(await agent.new_key(ALICE), ALICE)
    bob_key = await agent.new_key(BOB, "tenant-b")
    error = await refusal(agent, ALICE, "ReEncrypt", CiphertextBlob=blob,
                          DestinationKeyId=bob_key)
    assert isinstance(error, errors.NoPermissionError)
    error = await refusal(agent, BOB, "ReEncrypt", CiphertextBlob=blob,
                          DestinationKeyId=bob_key)
    assert isinstance(error, errors.NoPermissionError)


async def test_reencrypt_asymmetric_source_needs_source_key(agent):
    """With SourceKeyId the source key is authorized, not the blob's first bytes."""
    # The fake keystore has no key pairs; authorization does not care.
    bob_source = await agent.new_key(BOB, "tenant-b")
    alice_key = await agent.new_key(ALICE)
    source = {"SourceKeyId": bob_source, "SourceKeyVersionId": "v",
              "SourceEncryptionAlgorithm": "RSAES_OAEP_SHA_256"}
    error = await refusal(agent, ALICE, "ReEncrypt", CiphertextBlob=b"x" * 256,
                          DestinationKeyId=alice_key, **source)
    assert isinstance(error, errors.NoPermissionError)
    assert "ReEncrypt" in error.message
    # Bob may use his key, so the request reaches the handler, which turns
    # down a symmetric source key instead of failing on the blob's format.
    bob_key = await agent.new_key(BOB, "tenant-b")
    error = await refusal(agent, BOB, "ReEncrypt", CiphertextBlob=b"x" * 256,
                          DestinationKeyId=bob_key, **source)
    assert isinstance(error, errors.UnsupportedOperationError), error


async def test_key_user_cannot_manage(agent):
    """key-user grants cryptography, not lifecycle or aliases."""
    agent.policies["alice-tenant"]["permissions"] = ["key-user"]
    agent.control.reload()
    key_id = await agent.new_key(ADMIN)
    await agent.encrypt(key_id, ALICE)
    for op, params in [("DisableKey", {"KeyId": key_id}), ("CreateKey", {}),
                       ("CreateAlias", {"KeyId": key_id, "AliasName": "alias/a"}),
                       ("ScheduleKeyDeletion", {"KeyId": key_id,
                                                "PendingWindowInDays": 7})]:
        error = await refusal(agent, ALICE, op, **params)
        assert isinstance(error, errors.NoPermissionError), op


async def test_administrator_cannot_decrypt(agent):
    """administrator grants management, not cryptography."""
    agent.policies["alice-tenant"]["permissions"] = ["administrator"]
    agent.control.reload()
    key_id = await agent.new_key(ALICE)
    await agent.call(ALICE, "DisableKey", KeyId=key_id)
    await agent.call(ALICE, "EnableKey", KeyId=key_id)
    error = await refusal(agent, ALICE, "Encrypt", KeyId=key_id, Plaintext=b"x")
    assert isinstance(error, errors.NoPermissionError)


async def test_single_key_grant(agent):
    """A grant on key/<id> covers that key only and no listing."""
    granted = await agent.new_key()
    other = await agent.new_key()
    agent.policies["carol-one"] = {"principals": ["carol"],
                                   "permissions": ["key-user"],
                                   "resources": [f"key/{granted}"]}
    agent.control.reload()
    await agent.encrypt(granted, CAROL)
    error = await refusal(agent, CAROL, "Encrypt", KeyId=other, Plaintext=b"x")
    assert isinstance(error, errors.NoPermissionError)
    error = await refusal(agent, CAROL, "ListKeys")
    assert isinstance(error, errors.NoPermissionError)


async def test_deny_grant_wins(agent):
    """A Deny policy overrides an Allow on key/*."""
    key_id = await agent.new_key(ALICE)
    agent.policies["alice-not-this"] = {"principals": ["alice"], "effect": "Deny",
                                        "permissions": ["key-user"],
                                        "resources": [f"key/{key_id}"]}
    agent.control.reload()
    error = await refusal(agent, ALICE, "Encrypt", KeyId=key_id, Plaintext=b"x")
    assert isinstance(error, errors.NoPermissionError)


# --- refusals do not leak existence ------------------------------------------------


async def test_missing_key_same_refusal(agent):
    """A missing key and another tenant's key get the same refusal."""
    existing = await agent.new_key(ALICE)
    missing = "key-" + "x" * 24
    shown = await refusal(agent, BOB, "Encrypt", KeyId=existing, Plaintext=b"x")
    hidden = await refusal(agent, BOB, "Encrypt", KeyId=missing, Plaintext=b"x")
    assert type(shown) is type(hidden) is errors.NoPermissionError
    assert shown.message.replace(existing, "<ref>") == \
        hidden.message.replace(missing, "<ref>")


async def test_missing_alias_same_refusal(agent):
    """An alias of another tenant and a missing alias look the same."""
    key_id = await agent.new_key(ALICE)
    await agent.call(ALICE, "CreateAlias", AliasName="alias/alice", KeyId=key_id)
    shown = await refusal(agent, BOB, "DescribeKey", KeyId="alias/alice")
    hidden = await refusal(agent, BOB, "DescribeKey", KeyId="alias/nobody")
    assert type(shown) is type(hidden) is errors.NoPermissionError
    assert key_id not in shown.message
    assert shown.message.replace("alice", "X") == hidden.message.replace("nobody", "X")


async def test_missing_blob_version_same_refusal(agent):
    """A blob naming an unknown version is refused like a foreign one."""
    blob = await agent.encrypt(await agent.new_key(ALICE), ALICE)
    forged = str(uuid.uuid4()).encode() + blob[36:]
    shown = await refusal(agent, BOB, "Decrypt", CiphertextBlob=blob)
    hidden = await refusal(agent, BOB, "Decrypt", CiphertextBlob=forged)
    assert type(shown) is type(hidden) is errors.NoPermissionError
    assert shown.message == hidden.message


async def test_alias_commands_same_refusal(agent):
    """DeleteAlias of another tenant's alias and of a missing one match."""
    key_id = await agent.new_key(ALICE)
    await agent.call(ALICE, "CreateAlias", AliasName="alias/alice", KeyId=key_id)
    shown = await refusal(agent, BOB, "DeleteAlias", AliasName="alias/alice")
    hidden = await refusal(agent, BOB, "DeleteAlias", AliasName="alias/ghost")
    assert type(shown) is type(hidden) is errors.NoPermissionError


async def test_tenant_admin_missing_key_refused(agent):
    """A principal bound to some keystores never sees KeyNotFound."""
    error = await refusal(agent, ALICE, "DescribeKey", KeyId="key-" + "y" * 24)
    assert isinstance(error, errors.NoPermissionError)


async def test_global_admin_sees_not_found(agent):
    """A principal over every keystore gets the real not-found errors."""
    error = await refusal(agent, ADMIN, "DescribeKey", KeyId="key-" + "y" * 24)
    assert isinstance(error, errors.KeyNotFoundError)
    error = await refusal(agent, ADMIN, "DescribeKey", KeyId="alias/ghost")
    assert isinstance(error, errors.AliasNotFoundError)


async def test_missing_secret_same_refusal(agent):
    """A missing secret and another tenant's secret look the same."""
    await agent.call(ALICE, "CreateSecret", SecretName="alice/db", VersionId="v1",
                     SecretData="pw")
    shown = await refusal(agent, BOB, "GetSecretValue", SecretName="alice/db")
    hidden = await refusal(agent, BOB, "GetSecretValue", SecretName="alice/nope")
    assert type(shown) is type(hidden) is errors.NoPermissionError


# --- keystores ---------------------------------------------------------------------


async def test_create_in_foreign_keystore_refused(agent):
    """CreateKey is refused in a keystore the principal is not bound to."""
    error = await refusal(agent, ALICE, "CreateKey", DKMSInstanceId="tenant-b")
    assert isinstance(error, errors.NoPermissionError)
    error = await refusal(agent, ALICE, "CreateKey", DKMSInstanceId="no-such")
    assert isinstance(error, errors.NoPermissionError)


async def test_default_keystore_create_allowed(agent):
    """Without DKMSInstanceId a key goes to the default keystore."""
    reply = await agent.call(ALICE, "CreateKey")
    assert reply["KeyMetadata"]["DKMSInstanceId"] == "tenant-a"


async def test_list_keys_own_keystore(agent):
    """ListKeys shows only keys of the caller's keystores."""
    mine = {await agent.new_key(ALICE), await agent.new_key(ALICE)}
    await agent.new_key(BOB, "tenant-b")
    reply = await agent.call(ALICE, "ListKeys", PageSize=100)
    assert {k["KeyId"] for k in reply["Keys"]["Key"]} == mine
    assert reply["TotalCount"] == 2


async def test_list_keys_foreign_filter_empty(agent):
    """A DKMSInstanceId filter for another keystore lists nothing."""
    await agent.new_key(BOB, "tenant-b")
    reply = await agent.call(ALICE, "ListKeys", Filters=[
        {"Key": "DKMSInstanceId", "Values": ["tenant-b"]}])
    assert reply["Keys"]["Key"] == []
    assert reply["TotalCount"] == 0


async def test_admin_filters_by_keystore(agent):
    """An admin may filter ListKeys by keystore."""
    theirs = await agent.new_key(BOB, "tenant-b")
    await agent.new_key(ALICE)
    reply = await agent.call(ADMIN, "ListKeys", Filters=[
        {"Key": "DKMSInstanceId", "Values": ["tenant-b"]}])
    assert [k["KeyId"] for k in reply["Keys"]["Key"]] == [theirs]


async def test_list_aliases_own_keystore(agent):
    """ListAliases shows only aliases of keys in the caller's keystores."""
    await agent.call(ALICE, "CreateAlias", AliasName="alias/a",
                     KeyId=await agent.new_key(ALICE))
    await agent.call(BOB, "CreateAlias", AliasName="alias/b",
                     KeyId=await agent.new_key(BOB, "tenant-b"))
    reply = await agent.call(BOB, "ListAliases")
    assert [a["AliasName"] for a in reply["Aliases"]["Alias"]] == ["alias/b"]
    assert reply["TotalCount"] == 1


async def test_list_secrets_own_keystore(agent):
    """ListSecrets shows only secrets of the caller's keystores."""
    await agent.call(ALICE, "CreateSecret", SecretName="a/one", VersionId="v1",
                     SecretData="x")
    bob_key = await agent.new_key(BOB, "tenant-b")
    await agent.call(BOB, "CreateSecret", SecretName="b/one", VersionId="v1",
                     SecretData="y", EncryptionKeyId=bob_key)
    reply = await agent.call(BOB, "ListSecrets")
    assert [s["SecretName"] for s in reply["SecretList"]["Secret"]] == ["b/one"]


async def test_unavailable_keystore_answers_503(agent):
    """A keystore that failed to open answers 503, after authorization."""
    key_id = await agent.new_key(BOB, "tenant-b")
    agent.keystores["tenant-b"] = UnavailableKeystore("tenant-b", "token missing")
    error = await refusal(agent, BOB, "Encrypt", KeyId=key_id, Plaintext=b"x")
    assert isinstance(error, errors.ServiceUnavailableError)
    assert error.http_status == 503
    error = await refusal(agent, ALICE, "Encrypt", KeyId=key_id, Plaintext=b"x")
    assert isinstance(error, errors.NoPermissionError)


async def test_healthy_keystore_still_serves(agent):
    """The other keystore keeps working while one is unavailable."""
    key_id = await agent.new_key(ALICE)
    agent.keystores["tenant-b"] = UnavailableKeystore("tenant-b", "bad PIN")
    assert await agent.encrypt(key_id, ALICE)


# --- key policies ------------------------------------------------------------------


async def test_key_policy_grants_action(agent):
    """A key policy Allow grants its actions without a config grant."""
    key_id = await agent.new_key()
    await agent.call(ADMIN, "SetKeyPolicy", KeyId=key_id, PolicyName="default",
                     Policy=policy(allow("carol", "kms:Encrypt")))
    assert await agent.encrypt(key_id, CAROL)
    error = await refusal(agent, CAROL, "GenerateDataKey", KeyId=key_id)
    assert isinstance(error, errors.NoPermissionError)


async def test_key_policy_deny_wins(agent):
    """A key policy Deny overrides a configured Allow."""
    key_id = await agent.new_key(ALICE)
    await agent.call(ADMIN, "SetKeyPolicy", KeyId=key_id,
                     Policy=policy(allow("alice", "kms:*", effect="Deny")))
    error = await refusal(agent, ALICE, "Encrypt", KeyId=key_id, Plaintext=b"x")
    assert isinstance(error, errors.NoPermissionError)


async def test_key_policy_stays_in_keystore(agent):
    """A key policy cannot open a key to a principal of another keystore."""
    key_id = await agent.new_key(ALICE)
    await agent.call(ALICE, "SetKeyPolicy", KeyId=key_id,
                     Policy=policy(allow("bob", "kms:*")))
    error = await refusal(agent, BOB, "Encrypt", KeyId=key_id, Plaintext=b"x")
    assert isinstance(error, errors.NoPermissionError)


async def test_key_policy_context_condition(agent):
    """A StringEquals condition on the context limits the Allow."""
    key_id = await agent.new_key()
    condition = {"StringEquals": {"kms:EncryptionContext:app": "billing"}}
    await agent.call(ADMIN, "SetKeyPolicy", KeyId=key_id,
                     Policy=policy(allow("carol", "kms:Encrypt", Condition=condition)))
    assert await agent.encrypt(key_id, CAROL,
                               EncryptionContext={"app": "billing"})
    error = await refusal(agent, CAROL, "Encrypt", KeyId=key_id, Plaintext=b"x",
                          EncryptionContext={"app": "other"})
    assert isinstance(error, errors.NoPermissionError)
    error = await refusal(agent, CAROL, "Encrypt", KeyId=key_id, Plaintext=b"x")
    assert isinstance(error, errors.NoPermissionError)


async def test_reencrypt_policy_actions(agent):
    """ReEncryptFrom on the source and ReEncryptTo on the destination."""
    source = await agent.new_key()
    destination = await agent.new_key()
    await agent.call(ADMIN, "SetKeyPolicy", KeyId=source,
                     Policy=policy(allow("carol", "kms:ReEncryptFrom")))
    blob = await agent.encrypt(source)
    error = await refusal(agent, CAROL, "ReEncrypt", CiphertextBlob=blob,
                          DestinationKeyId=destination)
    assert isinstance(error, errors.NoPermissionError)
    await agent.call(ADMIN, "SetKeyPolicy", KeyId=destination,
                     Policy=policy(allow("carol", "kms:ReEncryptTo")))
    reply = await agent.call(CAROL, "ReEncrypt", CiphertextBlob=blob,
                             DestinationKeyId=destination)
    assert reply["KeyId"] == destination


async def test_key_policy_round_trip(agent):
    """GetKeyPolicy returns the stored document, or an empty one."""
    key_id = await agent.new_key()
    empty = await agent.call(ADMIN, "GetKeyPolicy", KeyId=key_id)
    assert json.loads(empty["Policy"]) == {"Version": "1", "Statement": []}
    document = policy(allow("carol", "kms:Encrypt"))
    await agent.call(ADMIN, "SetKeyPolicy", KeyId=key_id, Policy=document)
    reply = await agent.call(ADMIN, "GetKeyPolicy", KeyId=key_id,
                             PolicyName="default")
    assert reply["Policy"] == document


@pytest.mark.parametrize("document, problem", [
    (policy(allow("nobody", "kms:Encrypt")), "unknown principal"),
    (policy(allow("carol", "kms:Fly")), "kms:Fly"),
    (json.dumps({"Version": "2", "Statement": []}), "Version"),
    (policy({**allow("carol", "kms:Encrypt"), "Resource": ["key/x"]}), "Resource"),
    (policy(allow("carol", "kms:Encrypt",
                  Condition={"IpAddress": {"acs:SourceIp": "1.2.3.4"}})),
     "StringEquals"),
    ("{not json", "JSON"),
    (json.dumps({"Version": "1", "Statement": [], "Pad": "x" * 40000}), "32768"),
])
async def test_bad_key_policy_rejected(agent, document, problem):
    """SetKeyPolicy rejects a document that names anything unknown."""
    key_id = await agent.new_key()
    error = await refusal(agent, ADMIN, "SetKeyPolicy", KeyId=key_id, Policy=document)
    assert isinstance(error, errors.InvalidParameterError)
    assert problem in error.message


async def test_policy_name_must_be_default(agent):
    """PolicyName other than default is invalid."""
    key_id = await agent.new_key()
    error = await refusal(agent, ADMIN, "GetKeyPolicy", KeyId=key_id,
                          PolicyName="other")
    assert isinstance(error, errors.InvalidParameterError)


async def test_secret_policy_round_trip(agent):
    """Get/SetSecretPolicy store a policy on a secret."""
    await agent.call(ALICE, "CreateSecret", SecretName="a/db", VersionId="v1",
                     SecretData="pw")
    document = policy(allow("carol", "kms:GetSecretValue"))
    await agent.call(ALICE, "SetSecretPolicy", SecretName="a/db", Policy=document)
    assert (await agent.call(ALICE, "GetSecretPolicy",
                             SecretName="a/db"))["Policy"] == document
    reply = await agent.call(CAROL, "GetSecretValue", SecretName="a/db")
    assert reply["SecretData"] == "pw"


# --- secrets -------------------------------------------------------------------------


async def test_secret_user_reads_only(agent):
    """secret-user reads values but cannot write them."""
    agent.policies["carol-read"] = {"principals": ["carol"],
                                    "permissions": ["secret-user"],
                                    "resources": ["secret/*"]}
    agent.control.reload()
    await agent.call(ALICE, "CreateSecret", SecretName="a/db", VersionId="v1",
                     SecretData="pw")
    reply = await agent.call(CAROL, "GetSecretValue", SecretName="a/db")
    assert reply["SecretData"] == "pw"
    assert await agent.call(CAROL, "DescribeSecret", SecretName="a/db")
    error = await refusal(agent, CAROL, "PutSecretValue", SecretName="a/db",
                          VersionId="v2", SecretData="new")
    assert isinstance(error, errors.NoPermissionError)


async def test_batch_get_refuses_each_secret(agent):
    """A listed secret the caller may not read fails alone, like a missing one."""
    await agent.call(ALICE, "CreateSecret", SecretName="a/one", VersionId="v1",
                     SecretData="x")
    bob_key = await agent.new_key(BOB, "tenant-b")
    await agent.call(BOB, "CreateSecret", SecretName="b/one", VersionId="v1",
                     SecretData="y", EncryptionKeyId=bob_key)
    reply = await agent.call(ALICE, "BatchGetSecretValue", SecretsList=[
        {"SecretName": "a/one"}, {"SecretName": "b/one"}, {"SecretName": "b/none"}])
    assert [value["SecretData"] for value in reply["SecretValues"]] == ["x"]
    failed = {entry["SecretName"]: entry for entry in reply["Errors"]}
    assert set(failed) == {"b/one", "b/none"}
    # Another tenant's secret and a missing one read the same.
    for name in ("b/one", "b/none"):
        assert failed[name]["Code"] == errors.NoPermissionError.code
        assert failed[name]["HttpStatus"] == errors.NoPermissionError.http_status
    assert failed["b/one"]["Message"].replace("b/one", "X") == \
        failed["b/none"]["Message"].replace("b/none", "X")


async def test_create_secret_checks_key(agent):
    """CreateSecret under another tenant's key is refused."""
    bob_key = await agent.new_key(BOB, "tenant-b")
    error = await refusal(agent, ALICE, "CreateSecret", SecretName="a/x",
                          VersionId="v1", SecretData="x", EncryptionKeyId=bob_key)
    assert isinstance(error, errors.NoPermissionError)


# --- the rest ------------------------------------------------------------------------


async def test_random_password_needs_grant(agent):
    """GetRandomPassword needs some template; GenerateRandom its keystore."""
    assert (await agent.call(ALICE, "GetRandomPassword"))["RandomPassword"]
    error = await refusal(agent, ALICE, "GenerateRandom", Length=8,
                          DKMSInstanceId="tenant-b")
    assert isinstance(error, errors.NoPermissionError)
    assert len((await agent.call(ALICE, "GenerateRandom", Length=8))["Random"]) == 8


async def test_resolved_key_id_pinned(agent):
    """The stage replaces an alias by the key id it authorized."""
    key_id = await agent.new_key(ALICE)
    await agent.call(ALICE, "CreateAlias", AliasName="alias/pin", KeyId=key_id)
    values = {"KeyId": "alias/pin", "Plaintext": b"x"}
    operation = next(op for op in all_operations() if op.name == "Encrypt")
    ctx = RequestContext.new("Encrypt", Peer(ALICE, ALICE, 1))
    await agent.stage.before(ctx, operation, values)
    assert values["KeyId"] == key_id
    assert ctx.principal == "alice"


async def test_reload_applies_to_next_request(agent):
    """A reloaded policy applies to the next request of a known caller."""
    key_id = await agent.new_key(ALICE)
    await agent.encrypt(key_id, ALICE)
    del agent.policies["alice-tenant"]
    await agent.call(ADMIN, "ReloadPolicies")
    error = await refusal(agent, ALICE, "Encrypt", KeyId=key_id, Plaintext=b"x")
    assert isinstance(error, errors.NoPermissionError)


async def test_bad_reload_keeps_old(agent):
    """A reload that fails leaves the old policies in force."""
    key_id = await agent.new_key(ALICE)
    agent.policies["broken"] = {"principals": ["alice"], "permissions": ["root"],
                                "resources": ["key/*"]}
    error = await refusal(agent, ADMIN, "ReloadPolicies")
    assert isinstance(error, errors.InvalidConfigurationError)
    assert "root" in error.message
    assert await agent.encrypt(key_id, ALICE)


async def test_reload_needs_agent_admin(agent):
    """ReloadPolicies and client keys need administrator on agent."""
    for op, params in [("ReloadPolicies", {}), ("ListClientKeys", {}),
                       ("CreateClientKey", {"Principal": "keyed"})]:
        error = await refusal(agent, ALICE, op, **params)
        assert isinstance(error, errors.NoPermissionError), op
