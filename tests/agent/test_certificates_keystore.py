"""Import and export of certificate key pairs in both keystore backends.

The PKCS#11 cases run on SoftHSM2; the exported PKCS#8 is loaded with
cryptography or tongsuopy, and imported keys are checked by verifying a
signature the keystore made with them.
"""

from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from pkcs11 import Attribute

from agent.keystore import HSM, SOFTWARE, DecryptionFailed, KeystoreSettings
from agent.keystore import asymmetric, open_keystore, sm2
from agent.keystore.key_transfer import der_length, pair_public_key

DIGEST = hashlib.sha256(b"certificate key").digest()
PREHASHED = utils.Prehashed(hashes.SHA256())


def pkcs8_of(key) -> bytes:
    return key.private_bytes(serialization.Encoding.DER,
                             serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def spki_of(key) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


@pytest.fixture
async def token_keystore(hsm_settings):
    opened = await open_keystore(hsm_settings())
    yield opened
    await opened.aclose()


@pytest.fixture
async def file_keystore(tmp_path):
    opened = await open_keystore(KeystoreSettings(
        name="files", type="software", domain_key_file=tmp_path / "domain.key"))
    yield opened
    await opened.aclose()


# --- helpers -----------------------------------------------------------------


def test_der_length_short_and_long():
    """der_length reads short and long length forms and ignores padding."""
    assert der_length(bytes([0x30, 0x03, 1, 2, 3, 0, 0])) == 5
    assert der_length(bytes([0x30, 0x81, 0x02, 1, 2, 0])) == 5


def test_der_length_rejects_truncated():
    """A DER length beyond the input is a ValueError."""
    with pytest.raises(ValueError):
        der_length(bytes([0x30, 0x82, 0x01]))
    with pytest.raises(ValueError):
        der_length(bytes([0x30, 0x05, 1]))


def test_pair_public_key_checks_spec():
    """pair_public_key rejects a key of another spec or size."""
    key = ec.generate_private_key(ec.SECP256R1())
    assert pair_public_key("EC_P256", pkcs8_of(key)) == spki_of(key)
    with pytest.raises(ValueError):
        pair_public_key("EC_P256K", pkcs8_of(key))
    with pytest.raises(ValueError):
        pair_public_key("RSA_2048", pkcs8_of(key))
    with pytest.raises(ValueError):
        pair_public_key("EC_P256", b"not a key")


# --- PKCS#11 -----------------------------------------------------------------


@pytest.mark.hsm
@pytest.mark.parametrize("spec", ["RSA_2048", "EC_P256"])
async def test_token_export_matches_public(token_keystore, spec):
    """An exported HSM private key loads and matches the version's public key."""
    material = await token_keystore.generate_key_pair("v-export-" + spec, spec, HSM)
    pkcs8 = await token_keystore.export_private_key(material)
    key = serialization.load_der_private_key(pkcs8, None)
    assert spki_of(key) == material.public_key


@pytest.mark.hsm
async def test_token_export_leaves_nothing(token_keystore):
    """Export destroys its session objects: the token keeps only its domain key."""
    material = await token_keystore.generate_key_pair("v-clean", "EC_P256", HSM)
    session = token_keystore._slots[0].session
    before = len(list(session.get_objects()))
    await token_keystore.export_private_key(material)
    assert len(list(session.get_objects())) == before
    assert len(list(session.get_objects({Attribute.TOKEN: True}))) == 1


@pytest.mark.hsm
@pytest.mark.parametrize("spec", ["RSA_2048", "EC_P256"])
async def test_token_import_signs(token_keystore, spec):
    """An imported HSM key pair signs, and the signature verifies with its key."""
    key = (rsa.generate_private_key(65537, 2048) if spec == "RSA_2048"
           else ec.generate_private_key(ec.SECP256R1()))
    material = await token_keystore.import_key_pair("v-import-" + spec, spec, HSM,
                                                    pkcs8_of(key))
    assert material.protection_level == HSM
    assert material.public_key == spki_of(key)
    algorithm = "RSA_PKCS1_SHA_256" if spec == "RSA_2048" else "ECDSA_SHA_256"
    signature = await token_keystore.sign(material, algorithm, DIGEST)
    if spec == "RSA_2048":
        key.public_key().verify(signature, DIGEST, padding.PKCS1v15(), PREHASHED)
    else:
        key.public_key().verify(signature, DIGEST, ec.ECDSA(PREHASHED))


@pytest.mark.hsm
async def test_token_import_round_trip(token_keystore):
    """A key imported at HSM level exports to the same private key."""
    key = ec.generate_private_key(ec.SECP256R1())
    material = await token_keystore.import_key_pair("v-round", "EC_P256", HSM,
                                                    pkcs8_of(key))
    exported = await token_keystore.export_private_key(material)
    loaded = serialization.load_der_private_key(exported, None)
    assert loaded.private_numbers() == key.private_numbers()


@pytest.mark.hsm
async def test_token_import_rejects_wrong_spec(token_keystore):
    """A private key of another spec is a ValueError, and nothing is sealed."""
    key = ec.generate_private_key(ec.SECP384R1())
    with pytest.raises(ValueError):
        await token_keystore.import_key_pair("v-wrong", "EC_P256", HSM, pkcs8_of(key))


@pytest.mark.hsm
async def test_token_sm2_software_round_trip(token_keystore):
    """EC_SM2 pairs in a token keystore are SOFTWARE and export their PKCS#8."""
    pkcs8, spki = sm2.generate()
    material = await token_keystore.import_key_pair("v-sm2", "EC_SM2", SOFTWARE, pkcs8)
    assert material.public_key == spki
    assert await token_keystore.export_private_key(material) == pkcs8
    with pytest.raises(ValueError):
        await token_keystore.import_key_pair("v-sm2-hsm", "EC_SM2", HSM, pkcs8)


@pytest.mark.hsm
async def test_token_export_wrong_version(token_keystore):
    """Material renamed to another version id does not unseal."""
    material = await token_keystore.generate_key_pair("v-a", "EC_P256", HSM)
    renamed = type(material)("v-b", material.key_spec, material.protection_level,
                             material.wrap_format, material.wrapped,
                             material.public_key)
    with pytest.raises(DecryptionFailed):
        await token_keystore.export_private_key(renamed)


# --- software keystore -------------------------------------------------------


async def test_file_keystore_round_trip(file_keystore):
    """The software keystore imports, signs with and exports a key pair."""
    key = rsa.generate_private_key(65537, 2048)
    material = await file_keystore.import_key_pair("v-file", "RSA_2048", SOFTWARE,
                                                   pkcs8_of(key))
    signature = await file_keystore.sign(material, asymmetric.RSA_PSS_SHA_256, DIGEST)
    key.public_key().verify(
        signature, DIGEST, padding.PSS(padding.MGF1(hashes.SHA256()), 32), PREHASHED)
    assert await file_keystore.export_private_key(material) == pkcs8_of(key)


async def test_file_keystore_rejects_hsm(file_keystore):
    """The software keystore has no HSM level for imported pairs."""
    key = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(ValueError):
        await file_keystore.import_key_pair("v-hsm", "EC_P256", HSM, pkcs8_of(key))
