"""The software engine and the file-backed software keystore."""

from __future__ import annotations

import dataclasses
import os
import pickle

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from agent.keystore import (
    HSM,
    SOFTWARE,
    DecryptionFailed,
    KeystoreSettings,
    KeystoreUnavailable,
    open_keystore,
)
from agent.keystore.base import SYMMETRIC_KEY_BYTES
from agent.keystore.software import SoftwareKey

SPECS = ["Aliyun_AES_256", "Aliyun_AES_192", "Aliyun_AES_128", "Aliyun_SM4"]


def settings_for(path, **overrides) -> KeystoreSettings:
    fields = dict(name="soft", type="software", domain_key_file=path)
    fields.update(overrides)
    return KeystoreSettings(**fields)


@pytest.fixture
async def keystore(tmp_path):
    opened = await open_keystore(settings_for(tmp_path / "domain.key"))
    yield opened
    await opened.aclose()


def test_aes_key_interop_encrypt():
    """SoftwareKey AES output opens with cryptography's AESGCM."""
    raw = os.urandom(32)
    iv, ciphertext = SoftwareKey("Aliyun_AES_256", raw).encrypt(b"data", b"aad")
    assert AESGCM(raw).decrypt(iv, ciphertext, b"aad") == b"data"


def test_aes_key_interop_decrypt():
    """SoftwareKey opens what cryptography's AESGCM sealed."""
    raw = os.urandom(16)
    iv = os.urandom(12)
    ciphertext = AESGCM(raw).encrypt(iv, b"data", b"aad")
    key = SoftwareKey("Aliyun_AES_128", raw)
    assert key.decrypt(iv, ciphertext, b"aad") == b"data"


def test_sm4_key_interop_both_ways():
    """SM4-GCM output matches cryptography's SM4 Cipher in GCM mode."""
    raw = os.urandom(16)
    key = SoftwareKey("Aliyun_SM4", raw)
    iv, ciphertext = key.encrypt(b"data", b"aad")
    decryptor = Cipher(algorithms.SM4(raw), modes.GCM(iv, ciphertext[-16:])).decryptor()
    decryptor.authenticate_additional_data(b"aad")
    assert decryptor.update(ciphertext[:-16]) + decryptor.finalize() == b"data"
    encryptor = Cipher(algorithms.SM4(raw), modes.GCM(iv)).encryptor()
    encryptor.authenticate_additional_data(b"aad")
    theirs = encryptor.update(b"more") + encryptor.finalize() + encryptor.tag
    assert key.decrypt(iv, theirs, b"aad") == b"more"


@pytest.mark.parametrize("spec", SPECS)
def test_software_key_rejects_bad_ivs(spec):
    """Decrypt rejects every IV that is not 12 bytes long."""
    key = SoftwareKey(spec, os.urandom(SYMMETRIC_KEY_BYTES[spec]))
    iv, ciphertext = key.encrypt(b"data", b"")
    for length in (0, 1, 11, 13, 16):
        with pytest.raises(DecryptionFailed):
            key.decrypt(iv[:1] * length, ciphertext, b"")


def test_software_key_repr_redacted():
    """The repr of a SoftwareKey shows the spec and no key bytes."""
    raw = bytes(range(32))
    text = repr(SoftwareKey("Aliyun_AES_256", raw))
    assert "redacted" in text
    assert raw.hex() not in text
    assert str(list(raw)) not in text


def test_software_key_rejects_pickle():
    """Pickling a SoftwareKey raises instead of writing key bytes."""
    with pytest.raises(TypeError):
        pickle.dumps(SoftwareKey("Aliyun_AES_128", os.urandom(16)))


def test_software_key_wrong_length():
    """A key of the wrong length for its spec is rejected."""
    with pytest.raises(ValueError):
        SoftwareKey("Aliyun_AES_256", os.urandom(16))


@pytest.mark.parametrize("spec", SPECS)
async def test_keystore_round_trip(keystore, spec):
    """Every spec encrypts and decrypts through the software keystore."""
    material = await keystore.generate(f"v-{spec}", spec, SOFTWARE)
    iv, ciphertext = await keystore.encrypt(material, b"plain", b"ctx")
    assert material.wrap_format == 2
    assert len(iv) == 12
    assert await keystore.decrypt(material, iv, ciphertext, b"ctx") == b"plain"


async def test_keystore_large_payload_threads(keystore):
    """A payload over 64 KiB runs in a worker thread and round-trips."""
    material = await keystore.generate("v-large", "Aliyun_AES_256", SOFTWARE)
    plaintext = os.urandom(300_000)
    iv, ciphertext = await keystore.encrypt(material, plaintext, b"")
    assert await keystore.decrypt(material, iv, ciphertext, b"") == plaintext


async def test_keystore_rejects_hsm_level(keystore):
    """The software keystore supports no HSM protection."""
    assert not keystore.supports("Aliyun_AES_256", HSM)
    with pytest.raises(ValueError):
        await keystore.generate("v-hsm", "Aliyun_AES_256", HSM)


async def test_keystore_tampering_fails(keystore):
    """A flipped tag, a wrong AAD and a truncated input fail alike."""
    material = await keystore.generate("v-tamper", "Aliyun_AES_256", SOFTWARE)
    iv, ciphertext = await keystore.encrypt(material, b"plain", b"ctx")
    flipped = ciphertext[:-1] + bytes([ciphertext[-1] ^ 1])
    cases = [(flipped, b"ctx"), (ciphertext, b"other"), (ciphertext[:10], b"ctx")]
    for body, aad in cases:
        with pytest.raises(DecryptionFailed):
            await keystore.decrypt(material, iv, body, aad)


async def test_keystore_binds_version_id(keystore):
    """Material sealed for one version id does not open under another."""
    material = await keystore.generate("v-bound", "Aliyun_AES_256", SOFTWARE)
    moved = dataclasses.replace(material, version_id="v-other")
    with pytest.raises(DecryptionFailed):
        await keystore.encrypt(moved, b"plain", b"")


async def test_keystore_reopen_decrypts(tmp_path):
    """A new keystore on the same domain key file opens old ciphertext."""
    settings = settings_for(tmp_path / "domain.key")
    first = await open_keystore(settings)
    material = await first.generate("v-reopen", "Aliyun_SM4", SOFTWARE)
    iv, ciphertext = await first.encrypt(material, b"plain", b"")
    await first.aclose()
    second = await open_keystore(settings)
    assert await second.decrypt(material, iv, ciphertext, b"") == b"plain"
    await second.aclose()


async def test_domain_key_file_created_private(tmp_path):
    """The domain key file is created with 32 bytes and mode 0600."""
    path = tmp_path / "domain.key"
    keystore = await open_keystore(settings_for(path))
    await keystore.aclose()
    assert path.stat().st_mode & 0o777 == 0o600
    assert len(path.read_bytes()) == 32


async def test_domain_key_loose_mode_rejected(tmp_path):
    """A domain key file readable by others is rejected, naming the mode."""
    path = tmp_path / "domain.key"
    path.write_bytes(os.urandom(32))
    path.chmod(0o644)
    with pytest.raises(KeystoreUnavailable) as caught:
        await open_keystore(settings_for(path))
    assert "0644" in str(caught.value)
    assert str(path) in str(caught.value)


async def test_domain_key_wrong_length_rejected(tmp_path):
    """A domain key file that is not 32 bytes long is rejected."""
    path = tmp_path / "domain.key"
    path.write_bytes(os.urandom(16))
    path.chmod(0o600)
    with pytest.raises(KeystoreUnavailable):
        await open_keystore(settings_for(path))


async def test_keystore_closed_rejects_calls(tmp_path):
    """Calls after aclose raise KeystoreUnavailable."""
    keystore = await open_keystore(settings_for(tmp_path / "domain.key"))
    material = await keystore.generate("v-closed", "Aliyun_AES_128", SOFTWARE)
    await keystore.aclose()
    with pytest.raises(KeystoreUnavailable):
        await keystore.encrypt(material, b"plain", b"")


async def test_keystore_random_lengths(keystore):
    """random_bytes returns exactly the requested number of bytes."""
    for length in (0, 1, 32, 100_000):
        assert len(await keystore.random_bytes(length)) == length


async def test_keystore_status_fields(keystore):
    """status reports the type, name and readiness."""
    status = keystore.status()
    assert status["type"] == "software"
    assert status["name"] == "soft"
    assert status["ready"] is True
