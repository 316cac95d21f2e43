"""Keystore isolation on two SoftHSM2 tokens.

Each keystore seals key material under the domain key of its own token,
so material, and every blob made with it, is useless in another
keystore: decryption there fails like any other bad ciphertext. The
agent-level test moves a key's record to the other keystore in the
store, as a corrupted or hostile database would, and Decrypt fails.
"""

from __future__ import annotations

import sqlite3
import uuid

import pytest

from agent.keystore import HSM, SOFTWARE, DecryptionFailed, open_keystore
from client import KmsClient, errors
from tests.integration.access_env import keystore_table, make_tokens
from tests.integration.conftest import launch

pytestmark = pytest.mark.hsm

AAD = b"header and context"


@pytest.fixture
async def two_keystores(softhsm, hsm_settings):
    """Open keystores on two fresh tokens of the session's SoftHSM2 directory.

    Both tokens exist before either keystore opens, because SoftHSM2 lists
    its tokens when the module is initialized.
    """
    tokens = [softhsm.make_token("iso"), softhsm.make_token("iso")]
    first = await open_keystore(hsm_settings(tokens[0], name="a"))
    second = await open_keystore(hsm_settings(tokens[1], name="b"))
    yield first, second
    await first.aclose()
    await second.aclose()


@pytest.mark.parametrize("level", [HSM, SOFTWARE])
async def test_material_useless_elsewhere(two_keystores, level):
    """Material sealed by one token does not decrypt in the other."""
    first, second = two_keystores
    material = await first.generate(str(uuid.uuid4()), "Aliyun_AES_256", level)
    iv, sealed = await first.encrypt(material, b"tenant data", AAD)
    assert await first.decrypt(material, iv, sealed, AAD) == b"tenant data"
    with pytest.raises(DecryptionFailed):
        await second.decrypt(material, iv, sealed, AAD)


async def test_other_token_cannot_encrypt(two_keystores):
    """Material of one token cannot be unsealed to encrypt in the other."""
    first, second = two_keystores
    material = await first.generate(str(uuid.uuid4()), "Aliyun_AES_256", HSM)
    with pytest.raises(DecryptionFailed):
        await second.encrypt(material, b"x", AAD)


def test_moved_key_record_fails_decrypt(tmp_path):
    """A blob never decrypts after its key is moved to another keystore."""
    directory = tmp_path / "agent"
    directory.mkdir()
    module, token_a, token_b = make_tokens(directory)
    config = directory / "config.toml"
    config.write_text(
        '[agent]\nsocket = "agent.sock"\ndata_dir = "data"\nsocket_mode = "0600"\n'
        'default_keystore = "tenant-a"\n[log]\nformat = "json"\n'
        + keystore_table("tenant-a", module, token_a)
        + keystore_table("tenant-b", module, token_b))
    agent = launch(config, directory)
    try:
        with KmsClient(agent.socket) as client:
            # tenant-b's own key comes first, so the start-up check that
            # each keystore can unseal its oldest key still passes.
            own_b = client.call("CreateKey", DKMSInstanceId="tenant-b")[
                "KeyMetadata"]["KeyId"]
            key_id = client.create_key()["KeyMetadata"]["KeyId"]
            blob = client.encrypt(key_id, b"tenant a only")["CiphertextBlob"]
    finally:
        agent.stop()
    database = directory / "data" / "kms-agent.db"
    with sqlite3.connect(database) as conn:
        conn.execute("UPDATE keys SET keystore = 'tenant-b' WHERE key_id = ?",
                     (key_id,))
    agent = launch(config, directory)
    try:
        with KmsClient(agent.socket) as client:
            with pytest.raises(errors.InvalidCiphertextError):
                client.decrypt(blob)
            assert client.encrypt(own_b, b"x")["KeyId"] == own_b
    finally:
        agent.stop()
