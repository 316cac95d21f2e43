"""The domain-key ceremony: one domain key imported into two tokens.

The 32-byte domain key is made outside the agent, encrypted to an RSA
transport key that each token generated, and unwrapped into both tokens
as a sensitive, non-extractable key with the same label and CKA_ID. A
store backed up from an agent on the first token, restored next to the
second token, decrypts there. SoftHSM2 plays both HSMs.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap

import pytest

from agent.keystore.softhsm import find_softhsm_module
from client import KmsClient, cli
from tests.integration.conftest import REPO, launch
from tests.integration.ops_support import prepare

pytestmark = pytest.mark.hsm

DOMAIN_KEY_LABEL = "kms-agent-domain-key"

# Runs in a child process, because SoftHSM2 reads SOFTHSM2_CONF once per
# process and each token has its own configuration.
IMPORT_SCRIPT = textwrap.dedent("""
    import json, sys
    import pkcs11
    from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
    from pkcs11.constants import MechanismFlag

    request = json.loads(sys.stdin.read())
    token = pkcs11.lib(request["module"]).get_token(token_label=request["label"])
    with token.open(rw=True, user_pin=request["pin"]) as session:
        # The transport key pair lives only in this session.
        public, private = session.generate_keypair(
            KeyType.RSA, 2048, store=False,
            capabilities=MechanismFlag.ENCRYPT | MechanismFlag.UNWRAP)
        wrapped = public.encrypt(bytes.fromhex(request["value"]),
                                 mechanism=Mechanism.RSA_PKCS_OAEP)
        private.unwrap_key(
            ObjectClass.SECRET_KEY, KeyType.AES, wrapped,
            id=bytes.fromhex(request["id"]), label=request["key_label"], store=True,
            mechanism=Mechanism.RSA_PKCS_OAEP,
            capabilities=(MechanismFlag.ENCRYPT | MechanismFlag.DECRYPT
                          | MechanismFlag.WRAP | MechanismFlag.UNWRAP),
            template={Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False,
                      Attribute.PRIVATE: True})
""")


def import_domain_key(agent_dir, value: bytes, key_id: bytes) -> None:
    """Unwrap ``value`` into the token of ``agent_dir`` as its domain key."""
    token_dir = agent_dir / "token"
    label = next(line.split('"')[1] for line in
                 (agent_dir / "config.toml").read_text().splitlines()
                 if line.startswith("token_label"))
    request = {"module": find_softhsm_module(), "label": label,
               "pin": (token_dir / "pin").read_text().strip(), "value": value.hex(),
               "id": key_id.hex(), "key_label": DOMAIN_KEY_LABEL}
    env = {**os.environ, "SOFTHSM2_CONF": str(token_dir / "softhsm2.conf")}
    result = subprocess.run([sys.executable, "-c", IMPORT_SCRIPT], cwd=REPO,
                            input=json.dumps(request), capture_output=True,
                            text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr


def test_imported_domain_key_moves_store(tmp_path):
    """Keys backed up on one token decrypt on another holding the same domain key."""
    value, key_id = os.urandom(32), os.urandom(16)
    old_config = prepare(tmp_path / "old")
    import_domain_key(old_config.parent, value, key_id)
    old = launch(old_config, old_config.parent)
    try:
        with KmsClient(old.socket) as client:
            key = client.create_key()["KeyMetadata"]["KeyId"]
            blob = client.encrypt(key, b"moved with its HSM")["CiphertextBlob"]
        stdout = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
        status = cli.run(["--socket", str(old.socket), "backup",
                          str(tmp_path / "store.bak")], stdout=stdout,
                         stderr=io.StringIO())
        assert status == 0
    finally:
        old.stop()

    new_config = prepare(tmp_path / "new")
    import_domain_key(new_config.parent, value, key_id)
    restored = subprocess.run(
        [sys.executable, "-m", "agent", "restore", str(tmp_path / "store.bak"),
         str(new_config.parent / "data")], cwd=REPO, capture_output=True, text=True,
        timeout=60)
    assert restored.returncode == 0, restored.stderr
    new = launch(new_config, new_config.parent)
    try:
        with KmsClient(new.socket) as client:
            assert client.decrypt(blob)["Plaintext"] == b"moved with its HSM"
    finally:
        new.stop()
