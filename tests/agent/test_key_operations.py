"""Key Service operations through the dispatcher, on a fake keystore.

These run the real parameter schemas, handlers, domain service and SQLite
store; only the keystore is a fake and the clock is a FakeClock.
"""

from __future__ import annotations

import pytest

from agent.context import FakeClock, Peer, RequestContext
from agent.daemon import Services, all_operations
from agent.keys.service import KeyService
from agent.rpc.dispatch import Dispatcher
from agent.store.sqlite import SqliteStore
from client import errors
from tests.fakes import FakeKeystore


class Agent:
    """A dispatcher over a fresh store, called like the wire would."""

    def __init__(self, tmp_path):
        self.clock = FakeClock()
        self.store = SqliteStore(tmp_path / "data")
        self.keys = KeyService(self.store, {"default": FakeKeystore()}, "default",
                               self.clock, "local")
        self.dispatcher = Dispatcher(all_operations(), Services(keys=self.keys))

    async def call(self, op, **params):
        ctx = RequestContext.new(op, Peer(1000, 1000, 42))
        return await self.dispatcher.handle(ctx, params)

    async def new_key(self, **params):
        reply = await self.call("CreateKey", **params)
        return reply["KeyMetadata"]["KeyId"]


@pytest.fixture
async def agent(tmp_path):
    instance = Agent(tmp_path)
    yield instance
    await instance.store.aclose()


async def test_create_key_defaults(agent):
    """CreateKey with no parameters makes an enabled AES-256 HSM key."""
    meta = (await agent.call("CreateKey"))["KeyMetadata"]
    assert meta["KeySpec"] == "Aliyun_AES_256"
    assert meta["KeyState"] == "Enabled"
    assert meta["KeyUsage"] == "ENCRYPT/DECRYPT"
    assert meta["ProtectionLevel"] == "HSM"
    assert meta["Arn"] == f"acs:kms:local:default:key/{meta['KeyId']}"
    assert meta["PrimaryKeyVersion"]


async def test_encrypt_decrypt_round_trip(agent):
    """Decrypt needs no KeyId and returns the key and version used."""
    key_id = await agent.new_key()
    enc = await agent.call("Encrypt", KeyId=key_id, Plaintext=b"hello",
                           EncryptionContext={"app": "x"})
    dec = await agent.call("Decrypt", CiphertextBlob=enc["CiphertextBlob"],
                           EncryptionContext={"app": "x"})
    assert dec["Plaintext"] == b"hello"
    assert dec["KeyId"] == key_id
    assert dec["KeyVersionId"] == enc["KeyVersionId"]
    assert enc["CiphertextBlob"][:36].decode() == enc["KeyVersionId"]


async def test_encrypt_accepts_text_plaintext(agent):
    """A string Plaintext is encrypted as its UTF-8 bytes."""
    key_id = await agent.new_key()
    enc = await agent.call("Encrypt", KeyId=key_id, Plaintext="héllo")
    dec = await agent.call("Decrypt", CiphertextBlob=enc["CiphertextBlob"])
    assert dec["Plaintext"] == "héllo".encode()


async def test_context_order_does_not_matter(agent):
    """Encryption context maps compare by content, not key order."""
    key_id = await agent.new_key()
    enc = await agent.call("Encrypt", KeyId=key_id, Plaintext=b"p",
                           EncryptionContext={"a": "1", "b": "2"})
    dec = await agent.call("Decrypt", CiphertextBlob=enc["CiphertextBlob"],
                           EncryptionContext={"b": "2", "a": "1"})
    assert dec["Plaintext"] == b"p"


@pytest.mark.parametrize("context", [
    None, {}, {"app": "y"}, {"app": "x", "extra": "1"}, {"App": "x"},
    {"app": "x\u0301"}, {"app": "X"},
])
async def test_wrong_context_is_opaque(agent, context):
    """Every context other than the exact one fails with InvalidCiphertext."""
    key_id = await agent.new_key()
    enc = await agent.call("Encrypt", KeyId=key_id, Plaintext=b"p",
                           EncryptionContext={"app": "x"})
    params = {"CiphertextBlob": enc["CiphertextBlob"]}
    if context is not None:
        params["EncryptionContext"] = context
    with pytest.raises(errors.InvalidCiphertextError) as caught:
        await agent.call("Decrypt", **params)
    assert caught.value.message == errors.InvalidCiphertextError.default_message


async def test_unicode_context_normalisation_matters(agent):
    """Composed and decomposed forms of a character are different contexts."""
    key_id = await agent.new_key()
    enc = await agent.call("Encrypt", KeyId=key_id, Plaintext=b"p",
                           EncryptionContext={"name": "\u00e9"})
    with pytest.raises(errors.InvalidCiphertextError):
        await agent.call("Decrypt", CiphertextBlob=enc["CiphertextBlob"],
                         EncryptionContext={"name": "e\u0301"})


async def test_every_altered_byte_is_rejected(agent):
    """Flipping any single byte of a blob makes Decrypt fail opaquely."""
    key_id = await agent.new_key()
    blob = (await agent.call("Encrypt", KeyId=key_id, Plaintext=b"secret"))[
        "CiphertextBlob"]
    for index in range(len(blob)):
        altered = bytearray(blob)
        altered[index] ^= 0x01
        with pytest.raises(errors.InvalidCiphertextError):
            await agent.call("Decrypt", CiphertextBlob=bytes(altered))


async def test_truncated_blobs_are_rejected(agent):
    """Every proper prefix of a blob fails with InvalidCiphertext."""
    key_id = await agent.new_key()
    blob = (await agent.call("Encrypt", KeyId=key_id, Plaintext=b"secret"))[
        "CiphertextBlob"]
    for length in range(len(blob)):
        with pytest.raises(errors.InvalidCiphertextError):
            await agent.call("Decrypt", CiphertextBlob=blob[:length])


async def test_blob_of_other_agent_is_opaque(agent, tmp_path):
    """A blob from another agent's store fails like a tampered one."""
    other = Agent(tmp_path / "other")
    key_id = await other.new_key()
    blob = (await other.call("Encrypt", KeyId=key_id, Plaintext=b"x"))[
        "CiphertextBlob"]
    await other.store.aclose()
    with pytest.raises(errors.InvalidCiphertextError):
        await agent.call("Decrypt", CiphertextBlob=blob)


async def test_key_reference_forms(agent):
    """KeyId accepts a key id, an alias and both ARN forms."""
    key_id = await agent.new_key()
    await agent.call("CreateAlias", AliasName="alias/app", KeyId=key_id)
    refs = [key_id, "alias/app", f"acs:kms:local:default:key/{key_id}",
            "acs:kms:local:default:alias/app"]
    for ref in refs:
        meta = (await agent.call("DescribeKey", KeyId=ref))["KeyMetadata"]
        assert meta["KeyId"] == key_id, ref


@pytest.mark.parametrize("ref, error", [
    ("key-doesnotexist", errors.KeyNotFoundError),
    ("alias/missing", errors.AliasNotFoundError),
    ("acs:kms:otherregion:default:key/key-x", errors.KeyNotFoundError),
    ("acs:kms:local:default:secret/x", errors.KeyNotFoundError),
])
async def test_unknown_key_references(agent, ref, error):
    """Unknown ids, aliases and malformed ARNs raise the 404 codes."""
    with pytest.raises(error):
        await agent.call("DescribeKey", KeyId=ref)


async def test_arn_of_other_keystore_not_found(agent):
    """An ARN naming another keystore does not find the key."""
    key_id = await agent.new_key()
    with pytest.raises(errors.KeyNotFoundError):
        await agent.call("DescribeKey", KeyId=f"acs:kms:local:other:key/{key_id}")


async def test_generate_data_key_sizes(agent):
    """NumberOfBytes wins over KeySpec; the default is 32 bytes."""
    key_id = await agent.new_key()
    cases = [({}, 32), ({"KeySpec": "AES_128"}, 16),
             ({"KeySpec": "AES_128", "NumberOfBytes": 64}, 64),
             ({"NumberOfBytes": 1}, 1), ({"NumberOfBytes": 1024}, 1024)]
    for params, size in cases:
        reply = await agent.call("GenerateDataKey", KeyId=key_id, **params)
        assert len(reply["Plaintext"]) == size, params
        dec = await agent.call("Decrypt", CiphertextBlob=reply["CiphertextBlob"])
        assert dec["Plaintext"] == reply["Plaintext"], params


async def test_data_key_without_plaintext(agent):
    """GenerateDataKeyWithoutPlaintext returns only the blob."""
    key_id = await agent.new_key()
    reply = await agent.call("GenerateDataKeyWithoutPlaintext", KeyId=key_id,
                             EncryptionContext={"a": "b"})
    assert "Plaintext" not in reply
    dec = await agent.call("Decrypt", CiphertextBlob=reply["CiphertextBlob"],
                           EncryptionContext={"a": "b"})
    assert len(dec["Plaintext"]) == 32


async def test_re_encrypt_moves_to_destination(agent):
    """ReEncrypt changes key and context and keeps the plaintext."""
    source = await agent.new_key()
    target = await agent.new_key()
    enc = await agent.call("Encrypt", KeyId=source, Plaintext=b"data",
                           EncryptionContext={"v": "1"})
    moved = await agent.call(
        "ReEncrypt", CiphertextBlob=enc["CiphertextBlob"], DestinationKeyId=target,
        SourceEncryptionContext={"v": "1"}, DestinationEncryptionContext={"v": "2"})
    assert moved["KeyId"] == target
    dec = await agent.call("Decrypt", CiphertextBlob=moved["CiphertextBlob"],
                           EncryptionContext={"v": "2"})
    assert dec["Plaintext"] == b"data"


async def test_re_encrypt_wrong_source_context(agent):
    """ReEncrypt with the wrong source context fails opaquely."""
    source = await agent.new_key()
    enc = await agent.call("Encrypt", KeyId=source, Plaintext=b"data",
                           EncryptionContext={"v": "1"})
    with pytest.raises(errors.InvalidCiphertextError):
        await agent.call("ReEncrypt", CiphertextBlob=enc["CiphertextBlob"],
                         DestinationKeyId=source)


@pytest.mark.parametrize("op, params, error", [
    ("Encrypt", {"KeyId": "k"}, errors.MissingParameterError),
    ("Encrypt", {"KeyId": "k", "Plaintext": b"x" * 6145},
     errors.InvalidParameterError),
    ("Encrypt", {"KeyId": "k", "Plaintext": b""}, errors.InvalidParameterError),
    ("Encrypt", {"KeyId": 5, "Plaintext": b"x"}, errors.InvalidParameterError),
    ("Encrypt", {"KeyId": "k", "Plaintext": b"x", "Extra": 1},
     errors.InvalidParameterError),
    ("Encrypt", {"KeyId": "k", "Plaintext": b"x", "EncryptionContext": {"a": 1}},
     errors.InvalidParameterError),
    ("Encrypt", {"KeyId": "k", "Plaintext": b"x", "EncryptionContext": "{bad"},
     errors.InvalidParameterError),
    ("Decrypt", {"CiphertextBlob": "text"}, errors.InvalidParameterError),
    ("GenerateDataKey", {"KeyId": "k", "NumberOfBytes": 0},
     errors.InvalidParameterError),
    ("GenerateDataKey", {"KeyId": "k", "NumberOfBytes": 1025},
     errors.InvalidParameterError),
    ("GenerateDataKey", {"KeyId": "k", "NumberOfBytes": True},
     errors.InvalidParameterError),
    ("GenerateDataKey", {"KeyId": "k", "KeySpec": "AES_512"},
     errors.InvalidParameterError),
    ("ScheduleKeyDeletion", {"KeyId": "k", "PendingWindowInDays": 6},
     errors.InvalidParameterError),
    ("ScheduleKeyDeletion", {"KeyId": "k", "PendingWindowInDays": 367},
     errors.InvalidParameterError),
    ("CreateKey", {"KeySpec": "Aliyun_AES_512"}, errors.InvalidParameterError),
    ("CreateKey", {"KeySpec": "RSA_2048"}, errors.UnsupportedOperationError),
    ("CreateKey", {"KeyUsage": "SIGN/VERIFY"}, errors.InvalidParameterError),
    ("CreateKey", {"Origin": "Aliyun_Other"}, errors.UnsupportedOriginError),
    ("CreateKey", {"KeySpec": "RSA_2048", "Origin": "EXTERNAL"},
     errors.UnsupportedOriginError),
    ("CreateKey", {"KeySpec": "Aliyun_SM4", "ProtectionLevel": "HSM"},
     errors.UnsupportedProtectionLevelError),
    ("CreateKey", {"DKMSInstanceId": "nope"}, errors.InvalidParameterError),
    ("CreateKey", {"Tags": [{"TagKey": "acs:x", "TagValue": "v"}]},
     errors.InvalidParameterError),
    ("NoSuchOperation", {}, errors.InvalidApiNameError),
    ("SetDeletionProtection",
     {"ProtectedResourceArn": "k", "EnableDeletionProtection": "maybe"},
     errors.InvalidParameterError),
])
async def test_bad_parameters(agent, op, params, error):
    """Each malformed request gets its typed error."""
    with pytest.raises(error):
        await agent.call(op, **params)


async def test_errors_carry_request_id(agent):
    """A caller error carries the id of the failed request."""
    with pytest.raises(errors.KeyNotFoundError) as caught:
        await agent.call("DescribeKey", KeyId="key-missing")
    assert caught.value.request_id


async def test_sm4_key_uses_software(agent):
    """An SM4 key defaults to software protection and round trips."""
    meta = (await agent.call("CreateKey", KeySpec="Aliyun_SM4"))["KeyMetadata"]
    assert meta["ProtectionLevel"] == "SOFTWARE"
    enc = await agent.call("Encrypt", KeyId=meta["KeyId"], Plaintext=b"sm4")
    dec = await agent.call("Decrypt", CiphertextBlob=enc["CiphertextBlob"])
    assert dec["Plaintext"] == b"sm4"


async def test_deletion_protection_flag(agent):
    """SetDeletionProtection takes a boolean and shows in DescribeKey."""
    key_id = await agent.new_key()
    await agent.call("SetDeletionProtection", ProtectedResourceArn=key_id,
                     EnableDeletionProtection=True)
    meta = (await agent.call("DescribeKey", KeyId=key_id))["KeyMetadata"]
    assert meta["DeletionProtection"] == "Enabled"
    with pytest.raises(errors.DeletionProtectedError):
        await agent.call("ScheduleKeyDeletion", KeyId=key_id, PendingWindowInDays=7)


async def test_purge_with_fake_clock(agent):
    """A key is purged only after its window ends on the injected clock."""
    key_id = await agent.new_key()
    await agent.call("ScheduleKeyDeletion", KeyId=key_id, PendingWindowInDays=7)
    agent.clock.advance(days=6, hours=23)
    assert await agent.keys.purge_due_keys() == []
    agent.clock.advance(hours=1)
    assert await agent.keys.purge_due_keys() == [key_id]
    with pytest.raises(errors.KeyNotFoundError):
        await agent.call("DescribeKey", KeyId=key_id)


async def test_pending_import_state_rules(agent):
    """PendingImport keys reject crypto and toggling with 409 codes."""
    import dataclasses
    key_id = await agent.new_key()
    key = await agent.store.get_key(key_id)
    await agent.store.update_key(dataclasses.replace(key, state="PendingImport"))
    with pytest.raises(errors.KeyPendingImportError):
        await agent.call("Encrypt", KeyId=key_id, Plaintext=b"x")
    with pytest.raises(errors.StateModifiedFailedError):
        await agent.call("EnableKey", KeyId=key_id)
    with pytest.raises(errors.StateModifiedFailedError):
        await agent.call("CancelKeyDeletion", KeyId=key_id)


async def test_concurrent_tagging_respects_limit(agent):
    """Concurrent TagResource calls never leave more than 20 tags."""
    import trio
    key_id = await agent.new_key()
    outcomes = []

    async def tag(batch):
        tags = [{"TagKey": f"k{batch}-{n}", "TagValue": "v"} for n in range(10)]
        try:
            await agent.call("TagResource", KeyId=key_id, Tags=tags)
            outcomes.append("ok")
        except errors.LimitExceededError:
            outcomes.append("limit")

    async with trio.open_nursery() as nursery:
        for batch in range(4):
            nursery.start_soon(tag, batch)
    tags = (await agent.call("ListResourceTags", KeyId=key_id))["Tags"]["Tag"]
    assert len(tags) == 20
    assert sorted(outcomes) == ["limit", "limit", "ok", "ok"]


@pytest.mark.parametrize("op, params", [
    ("CreateKey", {"Tags": '[{"TagKey": "k", "TagValue": "\\udc80"}]'}),
    ("ListKeys", {"Filters": '[{"Key": "KeyState", "Values": ["\\ud800"]}]'}),
    ("ListKeys", {"Filters": [{"Key": "KeyState", "Values": ["x"] * 101}]}),
    ("DeleteAlias", {"AliasName": "app"}),
])
async def test_malformed_text_parameters(agent, op, params):
    """Lone surrogates, huge filters and bare alias names get InvalidParameter."""
    with pytest.raises(errors.InvalidParameterError):
        await agent.call(op, **params)


async def test_alias_arn_names_key_keystore(tmp_path):
    """ListAliases builds AliasArn from the keystore of the aliased key."""
    instance = Agent(tmp_path)
    instance.keys.keystores["soft"] = FakeKeystore("soft")
    key_id = await instance.new_key(DKMSInstanceId="soft")
    await instance.call("CreateAlias", AliasName="alias/s", KeyId=key_id)
    aliases = (await instance.call("ListAliases"))["Aliases"]["Alias"]
    assert aliases[0]["AliasArn"] == "acs:kms:local:soft:alias/s"
    described = await instance.call("DescribeKey", KeyId=aliases[0]["AliasArn"])
    assert described["KeyMetadata"]["KeyId"] == key_id
    await instance.store.aclose()


async def test_deeply_nested_json_rejected(agent):
    """JSON text nested thousands deep is InvalidParameter, not a crash."""
    with pytest.raises(errors.InvalidParameterError):
        await agent.call("ListKeys", Filters="[" * 5000 + "]" * 5000)
