"""Key pairs, HMAC keys and imports in the PKCS#11 keystore, on SoftHSM2."""

from __future__ import annotations

import hashlib
import hmac
import os
import threading

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, utils
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass

from agent.keystore import HSM, SOFTWARE, DecryptionFailed, KeyMaterial, open_keystore
from agent.keystore import asymmetric
from agent.keystore import pkcs11 as backend
from agent.keystore import pkcs11_asymmetric
from agent.keystore.base import InvalidImportedMaterial
from agent.keystore.software_asymmetric import key_check_value

pytestmark = pytest.mark.hsm

DIGEST = hashlib.sha256(b"message").digest()
PREHASHED = utils.Prehashed(hashes.SHA256())
CHECK_BLOCK = bytes(range(16))


@pytest.fixture
async def keystore(hsm_settings):
    opened = await open_keystore(hsm_settings())
    yield opened
    await opened.aclose()


def token_objects(keystore) -> list:
    return list(keystore._slots[0].session.get_objects({Attribute.TOKEN: True}))


def oaep(algorithm: str) -> padding.OAEP:
    hash_type = hashes.SHA256 if algorithm == "RSAES_OAEP_SHA_256" else hashes.SHA1
    return padding.OAEP(padding.MGF1(hash_type()), hash_type(), None)


def load(material: KeyMaterial):
    return serialization.load_der_public_key(material.public_key)


def seal_known_secret(keystore, version_id: str, spec: str, raw: bytes) -> KeyMaterial:
    """Seal a generic secret of known bytes as the keystore seals HMAC keys."""
    slot = keystore._slots[0]
    key = slot.session.create_object({
        Attribute.CLASS: ObjectClass.SECRET_KEY,
        Attribute.KEY_TYPE: KeyType.GENERIC_SECRET, Attribute.VALUE: raw,
        Attribute.TOKEN: False, Attribute.SENSITIVE: True,
        Attribute.EXTRACTABLE: True, Attribute.SIGN: True,
    })
    wrapped = slot.domain_key.wrap_key(key, mechanism=Mechanism.AES_KEY_WRAP_PAD)
    key.destroy()
    sealed = backend._seal(slot, version_id, wrapped)
    return KeyMaterial(version_id, spec, HSM, 1, sealed)


@pytest.mark.parametrize("spec,algorithms", [
    ("RSA_2048", ["RSA_PSS_SHA_256", "RSA_PKCS1_SHA_256"]),
    ("EC_P256", ["ECDSA_SHA_256"]),
    ("EC_P256K", ["ECDSA_SHA_256"]),
])
async def test_hsm_signature_verifies(keystore, spec, algorithms):
    """HSM signatures verify in cryptography over the same digest."""
    material = await keystore.generate_key_pair(f"sig-{spec}", spec, HSM)
    public_key = load(material)
    for algorithm in algorithms:
        signature = await keystore.sign(material, algorithm, DIGEST)
        if algorithm == "RSA_PSS_SHA_256":
            public_key.verify(signature, DIGEST,
                              padding.PSS(padding.MGF1(hashes.SHA256()), 32), PREHASHED)
        elif algorithm == "RSA_PKCS1_SHA_256":
            public_key.verify(signature, DIGEST, padding.PKCS1v15(), PREHASHED)
        else:
            public_key.verify(signature, DIGEST, ec.ECDSA(PREHASHED))
    assert material.wrap_format == 1


async def test_hsm_pair_leaves_no_token_object(keystore):
    """Key pair generation leaves only the domain key in the token."""
    before = len(token_objects(keystore))
    await keystore.generate_key_pair("objects", "EC_P256", HSM)
    assert len(token_objects(keystore)) == before


async def test_unwrapped_key_template(keystore):
    """A cached private key is sensitive, non-extractable and sign-only."""
    material = await keystore.generate_key_pair("template", "EC_P256", HSM)
    await keystore.sign(material, "ECDSA_SHA_256", DIGEST)
    handle = keystore._slots[0].keys["template#sign"]
    assert handle[Attribute.SENSITIVE] is True
    assert handle[Attribute.EXTRACTABLE] is False
    assert handle[Attribute.SIGN] is True
    assert handle[Attribute.DECRYPT] is False


async def test_rsa_keygen_in_worker(keystore, monkeypatch):
    """RSA key pairs are generated off the calling (trio) thread."""
    threads = []
    real = pkcs11_asymmetric._generate_pair

    def spy(*args):
        threads.append(threading.get_ident())
        return real(*args)

    monkeypatch.setattr(pkcs11_asymmetric, "_generate_pair", spy)
    await keystore.generate_key_pair("worker", "RSA_2048", HSM)
    assert threads
    assert threads[0] != threading.get_ident()


@pytest.fixture
async def rsa_decrypt_key(keystore):
    return await keystore.generate_key_pair("decrypt", "RSA_2048", HSM)


@pytest.mark.parametrize("algorithm", ["RSAES_OAEP_SHA_256", "RSAES_OAEP_SHA_1"])
async def test_hsm_oaep_decrypt(keystore, rsa_decrypt_key, algorithm):
    """OAEP ciphertext from cryptography decrypts in the token."""
    ciphertext = load(rsa_decrypt_key).encrypt(b"hsm secret", oaep(algorithm))
    plaintext = await keystore.asymmetric_decrypt(rsa_decrypt_key, algorithm,
                                                  ciphertext)
    assert plaintext == b"hsm secret"


@pytest.mark.parametrize("made,named", [("RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256"),
                                        ("RSAES_OAEP_SHA_256", "RSAES_OAEP_SHA_1")])
async def test_hsm_other_hash_fails(keystore, rsa_decrypt_key, made, named):
    """Ciphertext with the other OAEP hash is DecryptionFailed, never decrypted."""
    ciphertext = load(rsa_decrypt_key).encrypt(b"hsm secret", oaep(made))
    with pytest.raises(DecryptionFailed):
        await keystore.asymmetric_decrypt(rsa_decrypt_key, named, ciphertext)


@pytest.mark.parametrize("spec,level", [("EC_SM2", HSM), ("RSA_4096", HSM),
                                        ("HMAC_SM3", HSM)])
async def test_unsupported_hsm_specs(keystore, spec, level):
    """SoftHSM2 offers no SM2 or SM3, and RSA_4096 is SOFTWARE only."""
    assert keystore.supports_spec(spec, level) is False
    assert keystore.supports_spec(spec, SOFTWARE) is True


async def test_software_sm2_on_token(keystore):
    """EC_SM2 keys are SOFTWARE keys sealed under the token's domain key."""
    material = await keystore.generate_key_pair("sm2", "EC_SM2", SOFTWARE)
    ciphertext = asymmetric.encrypt("EC_SM2", material.public_key, "SM2PKE", b"sm")
    assert material.wrap_format == 2
    assert await keystore.asymmetric_decrypt(material, "SM2PKE", ciphertext) == b"sm"


@pytest.mark.parametrize("spec,hash_name", [("HMAC_SHA_256", "sha256"),
                                            ("HMAC_SHA_384", "sha384"),
                                            ("HMAC_SHA_512", "sha512")])
async def test_hsm_hmac_known_answer(keystore, spec, hash_name):
    """The token's HMAC of a known key equals Python's hmac."""
    raw = bytes(range(len(hashlib.new(hash_name).digest())))
    material = seal_known_secret(keystore, f"kat-{spec}", spec, raw)
    mac = await keystore.mac(material, b"what do ya want for nothing?")
    assert mac == hmac.new(raw, b"what do ya want for nothing?", hash_name).digest()


async def test_generated_hmac_key_works(keystore):
    """A generated HSM HMAC key signs messages deterministically."""
    material = await keystore.generate_mac_key("mac", "HMAC_SHA_256", HSM)
    first = await keystore.mac(material, b"m")
    assert first == await keystore.mac(material, b"m")
    assert len(first) == 32


@pytest.fixture
async def wrapping_key(keystore):
    return await keystore.generate_key_pair("import-token:test", "RSA_2048", HSM)


def wrap(material: KeyMaterial, raw: bytes, algorithm: str) -> bytes:
    if algorithm == "RSAES_PKCS1_V1_5":
        return load(material).encrypt(raw, padding.PKCS1v15())
    return load(material).encrypt(raw, oaep(algorithm))


@pytest.mark.parametrize("algorithm", ["RSAES_PKCS1_V1_5", "RSAES_OAEP_SHA_1",
                                       "RSAES_OAEP_SHA_256"])
async def test_hsm_import(keystore, wrapping_key, algorithm):
    """Imported AES-256 material lands in HSM format and is the key used."""
    raw = os.urandom(32)
    material, fingerprint = await keystore.import_material(
        f"imported-{algorithm}", "Aliyun_AES_256", HSM, wrapping_key, algorithm,
        wrap(wrapping_key, raw, algorithm), CHECK_BLOCK)
    iv, ciphertext = await keystore.encrypt(material, b"payload", b"aad")
    assert material.wrap_format == 1
    assert AESGCM(raw).decrypt(iv, ciphertext, b"aad") == b"payload"
    assert fingerprint == key_check_value("Aliyun_AES_256", raw, CHECK_BLOCK)


@pytest.mark.parametrize("length", [15, 16, 20, 24, 28, 33, 40])
async def test_hsm_import_wrong_length(keystore, wrapping_key, length):
    """Material of any length but 32 bytes fails for AES-256."""
    for algorithm in ("RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256"):
        with pytest.raises(InvalidImportedMaterial):
            await keystore.import_material(
                "wrong", "Aliyun_AES_256", HSM, wrapping_key, algorithm,
                wrap(wrapping_key, os.urandom(length), algorithm), CHECK_BLOCK)


async def test_hsm_import_garbage(keystore, wrapping_key):
    """Random bytes in place of wrapped material fail for every algorithm."""
    for algorithm in ("RSAES_PKCS1_V1_5", "RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256"):
        with pytest.raises(InvalidImportedMaterial):
            await keystore.import_material("garbage", "Aliyun_AES_256", HSM,
                                           wrapping_key, algorithm, os.urandom(256),
                                           CHECK_BLOCK)


async def test_sm4_import_on_token(keystore, wrapping_key):
    """SM4 material imports as SOFTWARE material with an SM4 check value."""
    raw = os.urandom(16)
    material, fingerprint = await keystore.import_material(
        "sm4", "Aliyun_SM4", SOFTWARE, wrapping_key, "RSAES_OAEP_SHA_256",
        wrap(wrapping_key, raw, "RSAES_OAEP_SHA_256"), CHECK_BLOCK)
    encryptor = Cipher(algorithms.SM4(raw), modes.ECB()).encryptor()
    assert material.wrap_format == 2
    assert fingerprint == encryptor.update(CHECK_BLOCK) + encryptor.finalize()
