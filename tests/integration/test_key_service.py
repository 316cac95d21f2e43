"""The Key Service end to end: client library, real daemon, real token."""

from __future__ import annotations

import threading
import time

import pytest
import trio

from client import AsyncKmsClient, KmsClient, errors

pytestmark = pytest.mark.hsm


@pytest.fixture
def client(shared_agent):
    with KmsClient(shared_agent.socket) as instance:
        yield instance


def new_key(client, **params) -> str:
    return client.call("CreateKey", **params)["KeyMetadata"]["KeyId"]


@pytest.mark.parametrize("spec, level", [
    ("Aliyun_AES_256", "HSM"), ("Aliyun_AES_128", "HSM"), ("Aliyun_AES_192", "HSM"),
    ("Aliyun_AES_256", "SOFTWARE"), ("Aliyun_SM4", "SOFTWARE"),
])
def test_round_trip_per_spec(client, spec, level):
    """Every supported spec and protection level encrypts and decrypts."""
    key_id = new_key(client, KeySpec=spec, ProtectionLevel=level)
    meta = client.describe_key(key_id)["KeyMetadata"]
    assert meta["ProtectionLevel"] == level
    blob = client.encrypt(key_id, b"payload", {"tenant": "a"})["CiphertextBlob"]
    reply = client.decrypt(blob, {"tenant": "a"})
    assert reply["Plaintext"] == b"payload"
    assert reply["KeyId"] == key_id


def test_max_plaintext_round_trip(client):
    """A 6 KiB plaintext is accepted and round trips."""
    key_id = new_key(client)
    plaintext = bytes(range(256)) * 24
    blob = client.encrypt(key_id, plaintext)["CiphertextBlob"]
    assert client.decrypt(blob)["Plaintext"] == plaintext


def test_envelope_with_data_key(client):
    """A data key decrypts back to the same bytes under its context."""
    key_id = new_key(client)
    reply = client.generate_data_key(key_id, encryption_context={"file": "a"})
    assert len(reply["Plaintext"]) == 32
    again = client.decrypt(reply["CiphertextBlob"], {"file": "a"})
    assert again["Plaintext"] == reply["Plaintext"]


def test_key_states_reject_use(client):
    """Disabled and PendingDeletion keys reject crypto with 409 codes."""
    key_id = new_key(client)
    blob = client.encrypt(key_id, b"x")["CiphertextBlob"]
    client.disable_key(key_id)
    with pytest.raises(errors.KeyDisabledError) as caught:
        client.encrypt(key_id, b"x")
    assert caught.value.http_status == 409
    with pytest.raises(errors.KeyDisabledError):
        client.decrypt(blob)
    client.schedule_key_deletion(key_id, 7)
    with pytest.raises(errors.KeyPendingDeletionError):
        client.decrypt(blob)
    with pytest.raises(errors.StateModifiedFailedError):
        client.enable_key(key_id)
    client.cancel_key_deletion(key_id)
    assert client.describe_key(key_id)["KeyMetadata"]["KeyState"] == "Enabled"
    assert client.decrypt(blob)["Plaintext"] == b"x"


def test_deletion_protection_blocks_schedule(client):
    """A protected key cannot be scheduled for deletion."""
    key_id = new_key(client)
    arn = client.describe_key(key_id)["KeyMetadata"]["Arn"]
    client.call("SetDeletionProtection", ProtectedResourceArn=arn,
                EnableDeletionProtection=True,
                DeletionProtectionDescription="prod")
    with pytest.raises(errors.DeletionProtectedError):
        client.schedule_key_deletion(key_id, 7)
    client.call("SetDeletionProtection", ProtectedResourceArn=arn,
                EnableDeletionProtection=False)
    client.schedule_key_deletion(key_id, 30)
    meta = client.describe_key(key_id)["KeyMetadata"]
    assert meta["KeyState"] == "PendingDeletion"
    assert meta["DeleteDate"]


def test_aliases_and_tags(client):
    """Aliases resolve everywhere and move between keys; tags round trip."""
    first = new_key(client)
    second = new_key(client)
    alias = f"alias/it/{first[-8:]}"
    client.create_alias(alias, first)
    with pytest.raises(errors.AliasAlreadyExistsError):
        client.create_alias(alias, second)
    assert client.encrypt(alias, b"x")["KeyId"] == first
    client.update_alias(alias, second)
    assert client.encrypt(alias, b"x")["KeyId"] == second
    listed = client.call("ListAliasesByKeyId", KeyId=second)["Aliases"]["Alias"]
    assert [a["AliasName"] for a in listed] == [alias]
    client.delete_alias(alias)
    with pytest.raises(errors.AliasNotFoundError):
        client.encrypt(alias, b"x")
    client.tag_resource(second, {"team": "pay", "env": "prod"})
    client.untag_resource(second, ["env"])
    tags = client.list_resource_tags(second)["Tags"]["Tag"]
    assert tags == [{"KeyId": second, "TagKey": "team", "TagValue": "pay"}]


def test_list_keys_paging_and_filters(client):
    """ListKeys pages and filters by state."""
    disabled = new_key(client)
    client.disable_key(disabled)
    reply = client.call("ListKeys", PageSize=1, PageNumber=1,
                        Filters=[{"Key": "KeyState", "Values": ["Disabled"]}])
    assert reply["TotalCount"] >= 1
    assert len(reply["Keys"]["Key"]) == 1
    ids = set()
    page = 1
    while True:
        entries = client.call("ListKeys", PageSize=100, PageNumber=page,
                              Filters='[{"Key":"KeyState","Values":["Disabled"]}]')
        ids.update(k["KeyId"] for k in entries["Keys"]["Key"])
        if page * 100 >= entries["TotalCount"]:
            break
        page += 1
    assert disabled in ids


def test_purge_after_window(running_agent):
    """A key whose window has passed is purged by the background job."""
    import sqlite3
    with KmsClient(running_agent.socket) as client:
        key_id = new_key(client)
        blob = client.encrypt(key_id, b"x")["CiphertextBlob"]
        client.schedule_key_deletion(key_id, 7)
        # Move the delete date into the past, as if 7 days had gone by.
        db = sqlite3.connect(running_agent.config.parent / "data" / "kms-agent.db")
        db.execute("UPDATE keys SET delete_date = '2000-01-01T00:00:00Z' "
                   "WHERE key_id = ?", (key_id,))
        db.commit()
        db.close()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                client.describe_key(key_id)
            except errors.KeyNotFoundError:
                break
            time.sleep(0.1)
        with pytest.raises(errors.KeyNotFoundError):
            client.describe_key(key_id)
        with pytest.raises(errors.InvalidCiphertextError):
            client.decrypt(blob)
    assert key_id in running_agent.log_text()


def test_threads_share_sync_client(client):
    """One sync client used from several threads returns right results."""
    key_id = new_key(client)
    failures = []

    def work(number):
        for index in range(30):
            text = f"{number}-{index}".encode()
            blob = client.encrypt(key_id, text)["CiphertextBlob"]
            if client.decrypt(blob)["Plaintext"] != text:
                failures.append(text)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []


async def test_async_client_concurrency(shared_agent):
    """Many concurrent requests on one async connection all succeed."""
    async with AsyncKmsClient(shared_agent.socket) as client:
        key_id = (await client.create_key())["KeyMetadata"]["KeyId"]
        results = {}

        async def work(number):
            blob = (await client.encrypt(key_id, str(number)))["CiphertextBlob"]
            results[number] = (await client.decrypt(blob))["Plaintext"]

        async with trio.open_nursery() as nursery:
            for number in range(200):
                nursery.start_soon(work, number)
    assert results == {n: str(n).encode() for n in range(200)}
