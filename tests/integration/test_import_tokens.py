"""Import tokens under concurrent use, on the real daemon and token."""

from __future__ import annotations

import os
import threading

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import padding

from client import KmsClient, errors

pytestmark = pytest.mark.hsm


def concurrent_imports(socket, key_id: str, token: str, materials: list[bytes]
                       ) -> list[str]:
    """Send one ImportKeyMaterial per material at once; return the codes."""
    outcomes: list[str] = []
    start = threading.Barrier(len(materials))

    def import_once(material: bytes) -> None:
        with KmsClient(socket, timeout=30) as client:
            start.wait()
            try:
                client.call("ImportKeyMaterial", KeyId=key_id, ImportToken=token,
                            EncryptedKeyMaterial=material)
                outcomes.append("OK")
            except errors.KmsError as error:
                outcomes.append(error.code)

    threads = [threading.Thread(target=import_once, args=(material,))
               for material in materials]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes


@pytest.mark.parametrize("level", ["HSM", "SOFTWARE"])
def test_pkcs1_token_answers_once(shared_agent, level):
    """Concurrent PKCS#1 v1.5 imports with one token get one unwrap result."""
    with KmsClient(shared_agent.socket) as client:
        key_id = client.call("CreateKey", Origin="EXTERNAL", ProtectionLevel=level)[
            "KeyMetadata"]["KeyId"]
        params = client.call("GetParametersForImport", KeyId=key_id,
                             WrappingAlgorithm="RSAES_PKCS1_V1_5",
                             WrappingKeySpec="RSA_2048")
    public_key = serialization.load_der_public_key(params["PublicKey"])
    bad = [public_key.encrypt(os.urandom(20), padding.PKCS1v15()) for _ in range(12)]
    outcomes = concurrent_imports(shared_agent.socket, key_id,
                                  params["ImportToken"], bad)
    assert outcomes.count("InvalidKeyMaterial") == 1
    assert outcomes.count("InvalidImportToken") == 11


def test_pkcs1_token_spent_by_success_race(shared_agent):
    """One good and many bad PKCS#1 v1.5 imports with one token: one unwrap result."""
    with KmsClient(shared_agent.socket) as client:
        key_id = client.call("CreateKey", Origin="EXTERNAL")["KeyMetadata"]["KeyId"]
        params = client.call("GetParametersForImport", KeyId=key_id,
                             WrappingAlgorithm="RSAES_PKCS1_V1_5",
                             WrappingKeySpec="RSA_2048")
        public_key = serialization.load_der_public_key(params["PublicKey"])
        materials = [public_key.encrypt(os.urandom(32), padding.PKCS1v15())
                     for _ in range(6)]
        outcomes = concurrent_imports(shared_agent.socket, key_id,
                                      params["ImportToken"], materials)
        state = client.call("DescribeKey", KeyId=key_id)["KeyMetadata"]["KeyState"]
    assert outcomes.count("InvalidImportToken") == 5
    assert outcomes.count("OK") == 1
    assert state == "Enabled"
