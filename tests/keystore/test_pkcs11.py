"""The PKCS#11 keystore on a real SoftHSM2 token."""

from __future__ import annotations

import dataclasses
import os

import pkcs11
import pytest
import trio
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass

from agent.keystore import (
    HSM,
    SOFTWARE,
    DecryptionFailed,
    KeyMaterial,
    KeystoreUnavailable,
    open_keystore,
)
from agent.keystore import pkcs11 as backend

pytestmark = pytest.mark.hsm

LEVELS = [
    ("Aliyun_AES_256", HSM),
    ("Aliyun_AES_192", HSM),
    ("Aliyun_AES_128", HSM),
    ("Aliyun_AES_256", SOFTWARE),
    ("Aliyun_AES_192", SOFTWARE),
    ("Aliyun_AES_128", SOFTWARE),
    ("Aliyun_SM4", SOFTWARE),
]


@pytest.fixture
async def keystore(hsm_settings):
    opened = await open_keystore(hsm_settings())
    yield opened
    await opened.aclose()


def seal_known_key(keystore, version_id: str, raw: bytes, level: str) -> KeyMaterial:
    """Seal a key of known bytes the way the keystore seals its own keys."""
    slot = keystore._slots[0]
    spec = f"Aliyun_AES_{len(raw) * 8}"
    if level == SOFTWARE:
        return KeyMaterial(version_id, spec, SOFTWARE, 2,
                           backend._seal(slot, version_id, raw))
    key = slot.session.create_object({
        Attribute.CLASS: ObjectClass.SECRET_KEY,
        Attribute.KEY_TYPE: KeyType.AES,
        Attribute.VALUE: raw,
        Attribute.TOKEN: False,
        Attribute.SENSITIVE: True,
        Attribute.EXTRACTABLE: True,
    })
    wrapped = slot.domain_key.wrap_key(key, mechanism=Mechanism.AES_KEY_WRAP_PAD)
    key.destroy()
    sealed = backend._seal(slot, version_id, wrapped)
    return KeyMaterial(version_id, spec, HSM, 1, sealed)


def token_objects(keystore) -> list:
    session = keystore._slots[0].session
    return list(session.get_objects({Attribute.TOKEN: True}))


@pytest.mark.parametrize("spec,level", LEVELS)
async def test_round_trip_per_spec(keystore, spec, level):
    """Each spec and protection level encrypts and decrypts."""
    material = await keystore.generate(f"rt-{spec}-{level}", spec, level)
    iv, ciphertext = await keystore.encrypt(material, b"plain text", b"ctx")
    assert material.wrap_format == (1 if level == HSM else 2)
    assert len(iv) == 12
    assert len(ciphertext) == len(b"plain text") + 16
    assert await keystore.decrypt(material, iv, ciphertext, b"ctx") == b"plain text"


@pytest.mark.parametrize("level", [HSM, SOFTWARE])
async def test_interop_with_aesgcm(keystore, level):
    """Ciphertext passes between the keystore and AESGCM both ways."""
    raw = os.urandom(32)
    material = seal_known_key(keystore, f"interop-{level}", raw, level)
    iv, ciphertext = await keystore.encrypt(material, b"from keystore", b"aad")
    assert AESGCM(raw).decrypt(iv, ciphertext, b"aad") == b"from keystore"
    iv = os.urandom(12)
    theirs = AESGCM(raw).encrypt(iv, b"from aesgcm", b"aad")
    assert await keystore.decrypt(material, iv, theirs, b"aad") == b"from aesgcm"


async def test_empty_plaintext_and_aad(keystore):
    """An empty plaintext with an empty AAD round-trips in the token."""
    material = await keystore.generate("empty", "Aliyun_AES_256", HSM)
    iv, ciphertext = await keystore.encrypt(material, b"", b"")
    assert len(ciphertext) == 16
    assert await keystore.decrypt(material, iv, ciphertext, b"") == b""


@pytest.mark.parametrize("level", [HSM, SOFTWARE])
async def test_iv_unique_over_calls(keystore, level):
    """Every encrypt call uses a fresh 12-byte IV."""
    material = await keystore.generate(f"iv-{level}", "Aliyun_AES_256", level)
    ivs = [(await keystore.encrypt(material, b"x", b""))[0] for _ in range(3000)]
    assert len(set(ivs)) == len(ivs)
    assert {len(iv) for iv in ivs} == {12}


@pytest.mark.parametrize("level", [HSM, SOFTWARE])
@pytest.mark.parametrize("length", [0, 1, 11, 13, 16])
async def test_bad_iv_rejected(keystore, level, length):
    """Decrypt rejects IVs of any length but 12, though the token takes some."""
    material = await keystore.generate(f"badiv-{level}-{length}", "Aliyun_AES_256",
                                       level)
    iv, ciphertext = await keystore.encrypt(material, b"plain", b"")
    with pytest.raises(DecryptionFailed):
        await keystore.decrypt(material, (iv * 2)[:length], ciphertext, b"")


@pytest.mark.parametrize("level", [HSM, SOFTWARE])
async def test_tampering_fails_opaquely(keystore, level):
    """Tag, body, AAD and length changes all raise a bare DecryptionFailed."""
    material = await keystore.generate(f"tamper-{level}", "Aliyun_AES_128", level)
    iv, ciphertext = await keystore.encrypt(material, b"sixteen bytes!!!", b"ctx")
    flipped_tag = ciphertext[:-1] + bytes([ciphertext[-1] ^ 0x80])
    flipped_body = bytes([ciphertext[0] ^ 1]) + ciphertext[1:]
    cases = {
        "tag": (flipped_tag, b"ctx"),
        "body": (flipped_body, b"ctx"),
        "aad": (ciphertext, b"ctx2"),
        "truncated": (ciphertext[:-1], b"ctx"),
        "short": (ciphertext[:15], b"ctx"),
    }
    for case, (body, aad) in cases.items():
        with pytest.raises(DecryptionFailed) as caught:
            await keystore.decrypt(material, iv, body, aad)
        assert caught.value.args == (), case


@pytest.mark.parametrize("level", [HSM, SOFTWARE])
async def test_material_bound_to_version(keystore, level):
    """Sealed material of one version id fails under another version id."""
    material = await keystore.generate(f"bound-{level}", "Aliyun_AES_256", level)
    moved = dataclasses.replace(material, version_id=f"moved-{level}")
    with pytest.raises(DecryptionFailed):
        await keystore.encrypt(moved, b"plain", b"")


async def test_domain_key_not_extractable(keystore, hsm_settings):
    """The token domain key is sensitive and its value cannot be read."""
    label = hsm_settings().domain_key_label
    session = keystore._slots[0].session
    [domain_key] = backend._domain_keys(session, label)
    assert domain_key[Attribute.TOKEN] is True
    assert domain_key[Attribute.SENSITIVE] is True
    assert domain_key[Attribute.EXTRACTABLE] is False
    with pytest.raises(pkcs11.AttributeSensitive):
        domain_key[Attribute.VALUE]


async def test_unwrapped_key_not_extractable(keystore):
    """A cached HSM key is a sensitive, non-extractable session object."""
    material = await keystore.generate("cached", "Aliyun_AES_256", HSM)
    await keystore.encrypt(material, b"plain", b"")
    key = keystore._slots[0].keys["cached"]
    assert key[Attribute.TOKEN] is False
    assert key[Attribute.EXTRACTABLE] is False
    assert key[Attribute.WRAP] is False
    with pytest.raises(pkcs11.AttributeSensitive):
        key[Attribute.VALUE]


async def test_token_keeps_only_domain_key(keystore):
    """Generating and using HSM keys adds no token objects."""
    before = len(token_objects(keystore))
    for number in range(20):
        material = await keystore.generate(f"count-{number}", "Aliyun_AES_256", HSM)
        await keystore.encrypt(material, b"plain", b"")
    assert len(token_objects(keystore)) == before


@pytest.mark.parametrize("level", [HSM, SOFTWARE])
async def test_reopen_decrypts_old_ciphertext(hsm_settings, level):
    """A new keystore object on the same token opens old ciphertext."""
    first = await open_keystore(hsm_settings())
    material = await first.generate(f"reopen-{level}", "Aliyun_AES_256", level)
    iv, ciphertext = await first.encrypt(material, b"kept", b"")
    await first.aclose()
    second = await open_keystore(hsm_settings())
    assert await second.decrypt(material, iv, ciphertext, b"") == b"kept"
    await second.aclose()


async def test_missing_token_unavailable(hsm_settings, softhsm):
    """A token label that does not exist gives KeystoreUnavailable."""
    with pytest.raises(KeystoreUnavailable) as caught:
        await open_keystore(hsm_settings(token_label="no-such-token"))
    pin = softhsm.token.pin_file.read_text().strip()
    assert "no-such-token" in str(caught.value)
    assert pin not in str(caught.value)


async def test_wrong_pin_unavailable(hsm_settings, make_token, tmp_path):
    """A wrong PIN on a token not yet logged in gives KeystoreUnavailable."""
    token = make_token("wrong-pin")
    pin_file = tmp_path / "pin"
    pin_file.write_text("wrong-pin-1234\n")
    pin_file.chmod(0o600)
    with pytest.raises(KeystoreUnavailable) as caught:
        await open_keystore(hsm_settings(token, pin_file=pin_file))
    assert "wrong-pin-1234" not in str(caught.value)
    assert str(pin_file) in str(caught.value)


async def test_wrong_pin_while_logged_in(keystore, hsm_settings, tmp_path):
    """A wrong PIN is rejected even when the token is already logged in."""
    pin_file = tmp_path / "pin"
    pin_file.write_text("wrong-pin-5678\n")
    pin_file.chmod(0o600)
    with pytest.raises(KeystoreUnavailable) as caught:
        await open_keystore(hsm_settings(pin_file=pin_file))
    assert "wrong-pin-5678" not in str(caught.value)


async def test_other_softhsm_conf_rejected(hsm_settings, tmp_path):
    """A second SoftHSM2 configuration in one process is rejected."""
    with pytest.raises(KeystoreUnavailable) as caught:
        await open_keystore(hsm_settings(softhsm2_conf=tmp_path / "other.conf"))
    assert "one SoftHSM2 configuration" in str(caught.value)


async def test_supports_matrix(keystore):
    """AES specs support both levels; SM4 is SOFTWARE only."""
    assert keystore.supports("Aliyun_AES_192", HSM)
    assert keystore.supports("Aliyun_SM4", SOFTWARE)
    assert not keystore.supports("Aliyun_SM4", HSM)
    assert not keystore.supports("RSA_2048", HSM)


async def test_unsupported_generate_rejected(keystore):
    """Generating SM4 with HSM protection raises ValueError."""
    with pytest.raises(ValueError):
        await keystore.generate("sm4-hsm", "Aliyun_SM4", HSM)


async def test_unknown_wrap_format_rejected(keystore):
    """Material with an unknown wrap format raises ValueError."""
    material = await keystore.generate("format", "Aliyun_AES_256", HSM)
    with pytest.raises(ValueError):
        await keystore.encrypt(dataclasses.replace(material, wrap_format=9), b"x", b"")


async def test_status_counts_cached_handles(keystore):
    """status names the token and counts the unwrapped handles."""
    material = await keystore.generate("status", "Aliyun_AES_256", HSM)
    await keystore.encrypt(material, b"plain", b"")
    status = keystore.status()
    assert status["type"] == "pkcs11"
    assert status["token"] == "kms-test"
    assert status["ready"] is True
    assert status["cached_handles"] == 1


async def test_cache_eviction_keeps_working(hsm_settings):
    """With a tiny cache, evicted keys are unwrapped again on use."""
    keystore = await open_keystore(hsm_settings(cache_size=2))
    materials = [await keystore.generate(f"evict-{n}", "Aliyun_AES_128", HSM)
                 for n in range(6)]
    for _ in range(2):
        for material in materials:
            iv, ciphertext = await keystore.encrypt(material, b"plain", b"")
            assert await keystore.decrypt(material, iv, ciphertext, b"") == b"plain"
    assert keystore.status()["cached_handles"] == 2
    await keystore.aclose()


@pytest.mark.parametrize("inline_crypto", [True, False])
async def test_large_payload_round_trip(hsm_settings, inline_crypto):
    """A 300 kB payload round-trips, inline crypto on or off."""
    keystore = await open_keystore(hsm_settings(inline_crypto=inline_crypto))
    material = await keystore.generate(f"large-{inline_crypto}", "Aliyun_AES_256", HSM)
    plaintext = os.urandom(300_000)
    iv, ciphertext = await keystore.encrypt(material, plaintext, b"")
    assert await keystore.decrypt(material, iv, ciphertext, b"") == plaintext
    await keystore.aclose()


async def test_random_bytes_lengths(keystore):
    """random_bytes returns the requested length, inline and threaded."""
    for length in (0, 1, 32, 100_000):
        assert len(await keystore.random_bytes(length)) == length


async def test_closed_keystore_rejects(hsm_settings):
    """Calls after aclose raise KeystoreUnavailable; aclose is idempotent."""
    keystore = await open_keystore(hsm_settings())
    material = await keystore.generate("closed", "Aliyun_AES_256", HSM)
    await keystore.aclose()
    await keystore.aclose()
    with pytest.raises(KeystoreUnavailable):
        await keystore.encrypt(material, b"plain", b"")


@pytest.mark.parametrize("inline_crypto", [True, False])
async def test_close_during_calls(hsm_settings, inline_crypto):
    """Calls that race aclose end in KeystoreUnavailable and nothing else."""
    keystore = await open_keystore(hsm_settings(inline_crypto=inline_crypto))
    material = await keystore.generate(f"close-{inline_crypto}", "Aliyun_AES_256", HSM)
    stopped = []

    async def encrypt_until_closed():
        try:
            while True:
                await keystore.encrypt(material, b"plain", b"")
        except KeystoreUnavailable as error:
            stopped.append(error)

    async with trio.open_nursery() as nursery:
        for _ in range(4):
            nursery.start_soon(encrypt_until_closed)
        for _ in range(50):
            await trio.lowlevel.checkpoint()
        await keystore.aclose()
    assert len(stopped) == 4


async def test_shared_login_survives_close(hsm_settings):
    """Closing one keystore keeps another on the same token logged in."""
    first = await open_keystore(hsm_settings())
    second = await open_keystore(hsm_settings())
    material = await second.generate("shared", "Aliyun_AES_256", HSM)
    await first.aclose()
    iv, ciphertext = await second.encrypt(material, b"plain", b"")
    assert await second.decrypt(material, iv, ciphertext, b"") == b"plain"
    await second.aclose()


def create_token_key(session, label: str, key_id: bytes, extractable: bool = False):
    return session.generate_key(
        KeyType.AES, 256, id=key_id, label=label, store=True,
        capabilities=backend._DOMAIN_CAPABILITIES,
        template={Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: extractable},
    )


async def test_oldest_domain_key_chosen(hsm_settings, make_token):
    """With two domain keys under one label, the smallest CKA_ID wins."""
    token = make_token("choice")
    setup = await open_keystore(hsm_settings(token, domain_key_label="setup"))
    session = setup._slots[0].session
    create_token_key(session, "shared-label", b"\x02" * 16)
    create_token_key(session, "shared-label", b"\x01" * 16)
    keystore = await open_keystore(hsm_settings(token, domain_key_label="shared-label"))
    assert keystore._slots[0].domain_key[Attribute.ID] == b"\x01" * 16
    assert len(backend._domain_keys(session, "shared-label")) == 2
    await keystore.aclose()
    await setup.aclose()


async def test_extractable_domain_key_rejected(hsm_settings, make_token):
    """A domain key that can be extracted is rejected at open."""
    token = make_token("extractable")
    setup = await open_keystore(hsm_settings(token, domain_key_label="setup"))
    create_token_key(setup._slots[0].session, "loose", b"\x01", extractable=True)
    with pytest.raises(KeystoreUnavailable) as caught:
        await open_keystore(hsm_settings(token, domain_key_label="loose"))
    assert "non-extractable" in str(caught.value)
    await setup.aclose()
