"""Negative vectors for RSA-OAEP decryption and ECDSA verification.

The vectors in tests/vectors/wycheproof/ (see generate.py there) run
through every decryption path the agent has. SOFTWARE keys decrypt with
cryptography. HSM keys decrypt in the token: SHA-1 with CKM_RSA_PKCS_OAEP,
SHA-256 as raw RSA plus ``oaep_decode``. And ``oaep_decode`` also runs
alone after a raw RSA computed here. ECDSA vectors run through the agent's verify.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass

from agent.keystore import HSM, DecryptionFailed, KeyMaterial, open_keystore
from agent.keystore import asymmetric
from agent.keystore import pkcs11 as backend

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "wycheproof"
OAEP = json.loads((VECTORS / "rsa_oaep_2048.json").read_text())
ECDSA = json.loads((VECTORS / "ecdsa_sha256.json").read_text())
PKCS8 = bytes.fromhex(OAEP["privateKeyPkcs8"])
OAEP_CASES = [(group["algorithm"], case) for group in OAEP["testGroups"]
              for case in group["tests"]]
ECDSA_CASES = [(group, case) for group in ECDSA["testGroups"]
               for case in group["tests"]]


OAEP_IDS = [f"{algorithm}-{case['tcId']}" for algorithm, case in OAEP_CASES]
ECDSA_IDS = [f"{group['keySpec']}-{case['tcId']}" for group, case in ECDSA_CASES]


def expected(case: dict) -> bytes | None:
    return bytes.fromhex(case["msg"]) if case["result"] == "valid" else None


def attempt(decrypt, algorithm: str, case: dict) -> bytes | None:
    try:
        return decrypt(algorithm, bytes.fromhex(case["ct"]))
    except DecryptionFailed:
        return None


@pytest.mark.parametrize("algorithm,case", OAEP_CASES, ids=OAEP_IDS)
def test_oaep_software_key(algorithm, case):
    """SOFTWARE keys decrypt valid vectors and reject invalid ones."""
    pair = asymmetric.SoftwareKeyPair("RSA_2048", PKCS8)
    assert attempt(pair.decrypt, algorithm, case) == expected(case)


@pytest.mark.parametrize("algorithm,case", OAEP_CASES, ids=OAEP_IDS)
def test_oaep_decode_after_raw_rsa(algorithm, case):
    """``oaep_decode`` after a raw RSA decryption matches every vector."""
    numbers = serialization.load_der_private_key(PKCS8, None).private_numbers()
    modulus = numbers.public_numbers.n

    def decrypt(name: str, ciphertext: bytes) -> bytes:
        value = int.from_bytes(ciphertext, "big")
        if len(ciphertext) != 256 or value >= modulus:
            raise DecryptionFailed()
        block = pow(value, numbers.d, modulus).to_bytes(256, "big")
        return asymmetric.oaep_decode(block, name)

    assert attempt(decrypt, algorithm, case) == expected(case)


def seal_known_rsa_key(keystore) -> KeyMaterial:
    """Seal the vectors' RSA key as HSM material, as generated keys are."""
    numbers = serialization.load_der_private_key(PKCS8, None).private_numbers()
    slot = keystore._slots[0]

    def raw(value: int) -> bytes:
        return value.to_bytes((value.bit_length() + 7) // 8, "big")

    key = slot.session.create_object({
        Attribute.CLASS: ObjectClass.PRIVATE_KEY, Attribute.KEY_TYPE: KeyType.RSA,
        Attribute.MODULUS: raw(numbers.public_numbers.n),
        Attribute.PUBLIC_EXPONENT: raw(numbers.public_numbers.e),
        Attribute.PRIVATE_EXPONENT: raw(numbers.d), Attribute.PRIME_1: raw(numbers.p),
        Attribute.PRIME_2: raw(numbers.q), Attribute.EXPONENT_1: raw(numbers.dmp1),
        Attribute.EXPONENT_2: raw(numbers.dmq1),
        Attribute.COEFFICIENT: raw(numbers.iqmp), Attribute.TOKEN: False,
        Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: True,
        Attribute.DECRYPT: True,
    })
    wrapped = slot.domain_key.wrap_key(key, mechanism=Mechanism.AES_KEY_WRAP_PAD)
    key.destroy()
    sealed = backend._seal(slot, "vectors", wrapped)
    return KeyMaterial("vectors", "RSA_2048", HSM, 1, sealed)


@pytest.mark.hsm
async def test_oaep_hsm_key(hsm_settings):
    """HSM keys decrypt valid vectors and reject invalid ones."""
    keystore = await open_keystore(hsm_settings())
    try:
        material = seal_known_rsa_key(keystore)
        for algorithm, case in OAEP_CASES:
            try:
                result = await keystore.asymmetric_decrypt(
                    material, algorithm, bytes.fromhex(case["ct"]))
            except DecryptionFailed:
                result = None
            assert result == expected(case), case["comment"]
    finally:
        await keystore.aclose()


@pytest.mark.parametrize("group,case", ECDSA_CASES, ids=ECDSA_IDS)
def test_ecdsa_vector(group, case):
    """ECDSA verify accepts valid vectors and returns false for the rest."""
    valid = asymmetric.verify(group["keySpec"], bytes.fromhex(group["publicKeySpki"]),
                              "ECDSA_SHA_256", bytes.fromhex(group["digest"]),
                              bytes.fromhex(case["sig"]))
    assert valid is (case["result"] == "valid")
