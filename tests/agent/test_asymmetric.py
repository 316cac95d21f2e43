"""Asymmetric key operations through the dispatcher, on a software keystore.

These run the real schemas, handlers, Key Service and SQLite store with
the real SoftwareKeystore (domain key in tmp_path), so every signature
and ciphertext is checked against cryptography or tongsuopy in both
directions. HSM keys are covered in tests/keystore and tests/integration.
"""

from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from tongsuopy.crypto import hashes as sm_hashes
from tongsuopy.crypto import serialization as sm_serialization
from tongsuopy.crypto.asymciphers import ec as sm_ec

from agent.context import FakeClock, Peer, RequestContext
from agent.daemon import Services, all_operations
from agent.keys import asymmetric, byok, export, mac
from agent.keys.service import KeyService
from agent.keystore import KeystoreSettings, open_keystore
from agent.rpc.dispatch import Dispatcher
from agent.store.sqlite import SqliteStore
from client import errors
from tests.keystore.test_asymmetric_sm2 import reference_encrypt, z_a_digest

DIGEST = hashlib.sha256(b"the message").digest()
PSS = padding.PSS(padding.MGF1(hashes.SHA256()), 32)
PREHASHED = utils.Prehashed(hashes.SHA256())


class Agent:
    """A dispatcher over a fresh store and a software keystore."""

    def __init__(self, store: SqliteStore, keystore, clock: FakeClock):
        self.clock = clock
        self.store = store
        self.keystore = keystore
        self.keys = KeyService(store, {"default": keystore}, "default", clock, "local")
        # The tables are named as well as taken from the daemon's list, so
        # these tests run whether or not the daemon registers them.
        operations = [*all_operations(), *asymmetric.OPERATIONS, *mac.OPERATIONS,
                      *byok.OPERATIONS, *export.OPERATIONS]
        self.dispatcher = Dispatcher(operations, Services(keys=self.keys))

    async def call(self, op, **params):
        ctx = RequestContext.new(op, Peer(1000, 1000, 42))
        return await self.dispatcher.handle(ctx, params)

    async def new_key(self, **params) -> tuple[str, str]:
        """Create a key; return its id and primary version id."""
        meta = (await self.call("CreateKey", **params))["KeyMetadata"]
        return meta["KeyId"], meta["PrimaryKeyVersion"]

    async def public_key(self, key_id: str, version_id: str):
        reply = await self.call("GetPublicKey", KeyId=key_id, KeyVersionId=version_id)
        return serialization.load_pem_public_key(reply["PublicKey"].encode())

    async def snapshot(self, key_id: str) -> tuple:
        """Return what a failed call must leave unchanged."""
        key = await self.store.get_key(key_id)
        versions = await self.store.list_versions(key_id)
        return key, [(v.version_id, v.wrapped, v.public_key) for v in versions]


async def make_agent(tmp_path) -> Agent:
    keystore = await open_keystore(KeystoreSettings(
        name="default", type="software", domain_key_file=tmp_path / "domain.key"))
    return Agent(SqliteStore(tmp_path / "data"), keystore, FakeClock())


@pytest.fixture
async def agent(tmp_path):
    instance = await make_agent(tmp_path)
    yield instance
    await instance.keystore.aclose()
    await instance.store.aclose()


def sm2_public_key(pem: str):
    return sm_serialization.load_pem_public_key(pem.encode())


# --- CreateKey ---------------------------------------------------------------


async def test_asymmetric_key_defaults(agent):
    """An RSA key defaults to SIGN/VERIFY and SOFTWARE on this keystore."""
    meta = (await agent.call("CreateKey", KeySpec="RSA_2048"))["KeyMetadata"]
    assert meta["KeyUsage"] == "SIGN/VERIFY"
    assert meta["ProtectionLevel"] == "SOFTWARE"
    assert meta["KeyState"] == "Enabled"
    assert meta["PrimaryKeyVersion"]


@pytest.mark.parametrize("spec", ["EC_P256", "EC_P256K"])
async def test_ec_key_cannot_encrypt(agent, spec):
    """EC_P256 and EC_P256K keys can only sign."""
    with pytest.raises(errors.InvalidParameterError) as caught:
        await agent.call("CreateKey", KeySpec=spec, KeyUsage="ENCRYPT/DECRYPT")
    assert "SIGN/VERIFY" in caught.value.message


async def test_sm2_hsm_is_unsupported(agent):
    """EC_SM2 with ProtectionLevel HSM is Unsupported.ProtectionLevel."""
    with pytest.raises(errors.UnsupportedProtectionLevelError):
        await agent.call("CreateKey", KeySpec="EC_SM2", ProtectionLevel="HSM")


async def test_asymmetric_key_cannot_rotate(agent):
    """Automatic rotation is refused for asymmetric keys."""
    with pytest.raises(errors.UnsupportedOperationError):
        await agent.call("CreateKey", KeySpec="EC_P256",
                         EnableAutomaticRotation=True, RotationInterval="30d")


# --- GetPublicKey ------------------------------------------------------------


@pytest.mark.parametrize("spec,check", [
    ("RSA_2048", lambda k: isinstance(k, rsa.RSAPublicKey) and k.key_size == 2048),
    ("EC_P256", lambda k: isinstance(k.curve, ec.SECP256R1)),
    ("EC_P256K", lambda k: isinstance(k.curve, ec.SECP256K1)),
])
async def test_public_key_pem_loads(agent, spec, check):
    """GetPublicKey returns SubjectPublicKeyInfo PEM of the key's type."""
    key_id, version = await agent.new_key(KeySpec=spec)
    assert check(await agent.public_key(key_id, version))


async def test_sm2_public_key_curve(agent):
    """The EC_SM2 public key is on the SM2 curve."""
    key_id, version = await agent.new_key(KeySpec="EC_SM2")
    reply = await agent.call("GetPublicKey", KeyId=key_id, KeyVersionId=version)
    assert sm2_public_key(reply["PublicKey"]).curve.name == "SM2"


# --- sign and verify ---------------------------------------------------------


def cryptography_verify(public_key, algorithm: str, signature: bytes) -> None:
    if algorithm == "RSA_PSS_SHA_256":
        public_key.verify(signature, DIGEST, PSS, PREHASHED)
    elif algorithm == "RSA_PKCS1_SHA_256":
        public_key.verify(signature, DIGEST, padding.PKCS1v15(), PREHASHED)
    else:
        public_key.verify(signature, DIGEST, ec.ECDSA(PREHASHED))


SIGN_CASES = [("RSA_2048", "RSA_PSS_SHA_256"), ("RSA_2048", "RSA_PKCS1_SHA_256"),
              ("EC_P256", "ECDSA_SHA_256"), ("EC_P256K", "ECDSA_SHA_256")]


@pytest.mark.parametrize("spec,algorithm", SIGN_CASES)
async def test_signature_verifies_in_cryptography(agent, spec, algorithm):
    """AsymmetricSign output verifies with cryptography over the same digest."""
    key_id, version = await agent.new_key(KeySpec=spec)
    reply = await agent.call("AsymmetricSign", KeyId=key_id, KeyVersionId=version,
                             Algorithm=algorithm, Digest=DIGEST)
    assert reply["KeyVersionId"] == version
    cryptography_verify(await agent.public_key(key_id, version), algorithm,
                        reply["Value"])


async def test_rsa_4096_software_signs(agent):
    """RSA_4096 keys exist at SOFTWARE level and sign with PSS."""
    key_id, version = await agent.new_key(KeySpec="RSA_4096")
    reply = await agent.call("AsymmetricSign", KeyId=key_id, KeyVersionId=version,
                             Algorithm="RSA_PSS_SHA_256", Digest=DIGEST)
    public_key = await agent.public_key(key_id, version)
    assert public_key.key_size == 4096
    cryptography_verify(public_key, "RSA_PSS_SHA_256", reply["Value"])


async def test_ecdsa_signature_is_der(agent):
    """ECDSA signatures are DER SEQUENCE {r, s}, not raw r || s."""
    key_id, version = await agent.new_key(KeySpec="EC_P256")
    reply = await agent.call("AsymmetricSign", KeyId=key_id, KeyVersionId=version,
                             Algorithm="ECDSA_SHA_256", Digest=DIGEST)
    r, s = utils.decode_dss_signature(reply["Value"])
    assert reply["Value"][0] == 0x30
    assert r > 0
    assert s > 0


async def test_foreign_key_signature_is_false(agent):
    """A valid signature by another key verifies as false."""
    private_key = ec.generate_private_key(ec.SECP256R1())
    key_id, version = await agent.new_key(KeySpec="EC_P256")
    signature = private_key.sign(DIGEST, ec.ECDSA(PREHASHED))
    reply = await agent.call("AsymmetricVerify", KeyId=key_id, KeyVersionId=version,
                             Algorithm="ECDSA_SHA_256", Digest=DIGEST,
                             Value=signature)
    assert reply["Value"] is False


@pytest.mark.parametrize("spec,algorithm", SIGN_CASES)
async def test_verify_own_signature(agent, spec, algorithm):
    """AsymmetricVerify accepts the agent's signature and rejects another digest."""
    key_id, version = await agent.new_key(KeySpec=spec)
    signature = (await agent.call(
        "AsymmetricSign", KeyId=key_id, KeyVersionId=version, Algorithm=algorithm,
        Digest=DIGEST))["Value"]
    params = dict(KeyId=key_id, KeyVersionId=version, Algorithm=algorithm,
                  Value=signature)
    good = await agent.call("AsymmetricVerify", Digest=DIGEST, **params)
    bad = await agent.call("AsymmetricVerify", Digest=bytes(32), **params)
    assert good["Value"] is True
    assert bad["Value"] is False


async def test_pss_verify_accepts_any_salt(agent):
    """A PSS signature made elsewhere with the maximum salt length verifies."""
    key_id, version = await agent.new_key(KeySpec="RSA_2048")
    digest = hashlib.sha256(b"other").digest()
    signature = (await agent.call(
        "AsymmetricSign", KeyId=key_id, KeyVersionId=version,
        Algorithm="RSA_PSS_SHA_256", Digest=digest))["Value"]
    public_key = await agent.public_key(key_id, version)
    public_key.verify(signature, digest, padding.PSS(
        padding.MGF1(hashes.SHA256()), padding.PSS.DIGEST_LENGTH), PREHASHED)


async def test_sm2_signature_verifies_in_tongsuopy(agent):
    """An SM2DSA signature of SM3(Z_A || M) verifies as a message signature."""
    key_id, version = await agent.new_key(KeySpec="EC_SM2")
    pem = (await agent.call("GetPublicKey", KeyId=key_id,
                            KeyVersionId=version))["PublicKey"]
    public_key = sm2_public_key(pem)
    digest = z_a_digest(public_key, b"the message")
    reply = await agent.call("AsymmetricSign", KeyId=key_id, KeyVersionId=version,
                             Algorithm="SM2DSA", Digest=digest)
    public_key.verify(reply["Value"], b"the message", sm_ec.ECDSA(sm_hashes.SM3()))


async def test_tongsuopy_sm2_signature_verifies(agent):
    """A tongsuopy message signature verifies through the agent by digest."""
    private_key = sm_ec.generate_private_key(sm_ec.SM2())
    signature = private_key.sign(b"hello", sm_ec.ECDSA(sm_hashes.SM3()))
    key_id, version = await agent.new_key(KeySpec="EC_SM2")
    pem = (await agent.call("GetPublicKey", KeyId=key_id,
                            KeyVersionId=version))["PublicKey"]
    own = sm2_public_key(pem)
    foreign = await agent.call(
        "AsymmetricVerify", KeyId=key_id, KeyVersionId=version, Algorithm="SM2DSA",
        Digest=z_a_digest(private_key.public_key(), b"hello"), Value=signature)
    assert foreign["Value"] is False
    signed = (await agent.call(
        "AsymmetricSign", KeyId=key_id, KeyVersionId=version, Algorithm="SM2DSA",
        Digest=z_a_digest(own, b"hello")))["Value"]
    mine = await agent.call(
        "AsymmetricVerify", KeyId=key_id, KeyVersionId=version, Algorithm="SM2DSA",
        Digest=z_a_digest(own, b"hello"), Value=signed)
    assert mine["Value"] is True


@pytest.mark.parametrize("length", [20, 31, 33, 48, 64])
async def test_wrong_digest_length(agent, length):
    """A digest that is not 32 bytes is InvalidParameter and changes nothing."""
    key_id, version = await agent.new_key(KeySpec="EC_P256")
    before = await agent.snapshot(key_id)
    with pytest.raises(errors.InvalidParameterError) as caught:
        await agent.call("AsymmetricSign", KeyId=key_id, KeyVersionId=version,
                         Algorithm="ECDSA_SHA_256", Digest=bytes(length))
    assert "32-byte digest" in caught.value.message
    assert await agent.snapshot(key_id) == before


@pytest.mark.parametrize("spec,algorithm", [
    ("RSA_2048", "ECDSA_SHA_256"), ("RSA_2048", "SM2DSA"),
    ("EC_P256", "RSA_PSS_SHA_256"), ("EC_P256K", "SM2DSA"),
    ("EC_SM2", "ECDSA_SHA_256"),
])
async def test_wrong_sign_algorithm(agent, spec, algorithm):
    """An algorithm the spec lacks is InvalidParameter."""
    key_id, version = await agent.new_key(KeySpec=spec)
    before = await agent.snapshot(key_id)
    with pytest.raises(errors.InvalidParameterError) as caught:
        await agent.call("AsymmetricSign", KeyId=key_id, KeyVersionId=version,
                         Algorithm=algorithm, Digest=DIGEST)
    assert spec in caught.value.message
    assert await agent.snapshot(key_id) == before


async def test_wrong_encoding_is_false(agent):
    """Signatures in the wrong encoding verify as false, not as an error."""
    key_id, version = await agent.new_key(KeySpec="EC_P256")
    der = (await agent.call("AsymmetricSign", KeyId=key_id, KeyVersionId=version,
                            Algorithm="ECDSA_SHA_256", Digest=DIGEST))["Value"]
    r, s = utils.decode_dss_signature(der)
    raw = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    for signature in (raw, der[:-1], der + b"\x00", b"\x30\x00", b"not a signature"):
        reply = await agent.call("AsymmetricVerify", KeyId=key_id,
                                 KeyVersionId=version, Algorithm="ECDSA_SHA_256",
                                 Digest=DIGEST, Value=signature)
        assert reply["Value"] is False


async def test_rsa_wrong_length_is_false(agent):
    """A truncated or padded RSA signature verifies as false."""
    key_id, version = await agent.new_key(KeySpec="RSA_2048")
    signature = (await agent.call(
        "AsymmetricSign", KeyId=key_id, KeyVersionId=version,
        Algorithm="RSA_PKCS1_SHA_256", Digest=DIGEST))["Value"]
    for value in (signature[1:], b"\x00" + signature, signature[:128]):
        reply = await agent.call("AsymmetricVerify", KeyId=key_id,
                                 KeyVersionId=version,
                                 Algorithm="RSA_PKCS1_SHA_256", Digest=DIGEST,
                                 Value=value)
        assert reply["Value"] is False


async def test_pss_signature_not_pkcs1(agent):
    """A PSS signature does not verify as PKCS#1 v1.5."""
    key_id, version = await agent.new_key(KeySpec="RSA_2048")
    signature = (await agent.call(
        "AsymmetricSign", KeyId=key_id, KeyVersionId=version,
        Algorithm="RSA_PSS_SHA_256", Digest=DIGEST))["Value"]
    reply = await agent.call("AsymmetricVerify", KeyId=key_id, KeyVersionId=version,
                             Algorithm="RSA_PKCS1_SHA_256", Digest=DIGEST,
                             Value=signature)
    assert reply["Value"] is False


# --- encrypt and decrypt -----------------------------------------------------


def oaep(algorithm: str) -> padding.OAEP:
    hash_type = hashes.SHA256 if algorithm == "RSAES_OAEP_SHA_256" else hashes.SHA1
    return padding.OAEP(padding.MGF1(hash_type()), hash_type(), None)


async def encryption_key(agent, spec: str = "RSA_2048") -> tuple[str, str]:
    return await agent.new_key(KeySpec=spec, KeyUsage="ENCRYPT/DECRYPT")


@pytest.mark.parametrize("algorithm", ["RSAES_OAEP_SHA_256", "RSAES_OAEP_SHA_1"])
async def test_cryptography_ciphertext_decrypts(agent, algorithm):
    """OAEP ciphertext made by cryptography decrypts in the agent."""
    key_id, version = await encryption_key(agent)
    public_key = await agent.public_key(key_id, version)
    ciphertext = public_key.encrypt(b"secret", oaep(algorithm))
    reply = await agent.call("AsymmetricDecrypt", KeyId=key_id, KeyVersionId=version,
                             Algorithm=algorithm, CiphertextBlob=ciphertext)
    assert reply["Plaintext"] == b"secret"


@pytest.mark.parametrize("made,named", [
    ("RSAES_OAEP_SHA_256", "RSAES_OAEP_SHA_1"),
    ("RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256"),
])
async def test_other_oaep_hash_fails(agent, made, named):
    """Ciphertext made with the other OAEP hash fails as InvalidCiphertext."""
    key_id, version = await encryption_key(agent)
    public_key = await agent.public_key(key_id, version)
    ciphertext = public_key.encrypt(b"secret", oaep(made))
    before = await agent.snapshot(key_id)
    with pytest.raises(errors.InvalidCiphertextError):
        await agent.call("AsymmetricDecrypt", KeyId=key_id, KeyVersionId=version,
                         Algorithm=named, CiphertextBlob=ciphertext)
    assert await agent.snapshot(key_id) == before


@pytest.mark.parametrize("spec,algorithm", [
    ("RSA_2048", "RSAES_OAEP_SHA_256"), ("RSA_2048", "RSAES_OAEP_SHA_1"),
    ("RSA_3072", "RSAES_OAEP_SHA_256"), ("EC_SM2", "SM2PKE"),
])
async def test_encrypt_decrypt_round_trip(agent, spec, algorithm):
    """AsymmetricEncrypt output decrypts with AsymmetricDecrypt."""
    key_id, version = await encryption_key(agent, spec)
    params = dict(KeyId=key_id, KeyVersionId=version, Algorithm=algorithm)
    encrypted = await agent.call("AsymmetricEncrypt", Plaintext=b"round trip",
                                 **params)
    decrypted = await agent.call("AsymmetricDecrypt",
                                 CiphertextBlob=encrypted["CiphertextBlob"], **params)
    assert decrypted["Plaintext"] == b"round trip"


async def test_reference_sm2_ciphertext_decrypts(agent):
    """SM2PKE ciphertext from an independent implementation decrypts."""
    key_id, version = await encryption_key(agent, "EC_SM2")
    pem = (await agent.call("GetPublicKey", KeyId=key_id,
                            KeyVersionId=version))["PublicKey"]
    ciphertext = reference_encrypt(sm2_public_key(pem), b"from the reference")
    reply = await agent.call("AsymmetricDecrypt", KeyId=key_id, KeyVersionId=version,
                             Algorithm="SM2PKE", CiphertextBlob=ciphertext)
    assert reply["Plaintext"] == b"from the reference"


@pytest.mark.parametrize("spec,algorithm,limit", [
    ("RSA_2048", "RSAES_OAEP_SHA_256", 190), ("RSA_2048", "RSAES_OAEP_SHA_1", 214),
    ("RSA_3072", "RSAES_OAEP_SHA_256", 318), ("RSA_3072", "RSAES_OAEP_SHA_1", 342),
])
async def test_plaintext_limit(agent, spec, algorithm, limit):
    """The limit encrypts; one byte more is InvalidParameter."""
    key_id, version = await encryption_key(agent, spec)
    params = dict(KeyId=key_id, KeyVersionId=version, Algorithm=algorithm)
    reply = await agent.call("AsymmetricEncrypt", Plaintext=bytes(limit), **params)
    with pytest.raises(errors.InvalidParameterError) as caught:
        await agent.call("AsymmetricEncrypt", Plaintext=bytes(limit + 1), **params)
    assert len(reply["CiphertextBlob"]) == int(spec[4:]) // 8
    assert f"1 to {limit} bytes" in caught.value.message


async def test_sm2_plaintext_limit(agent):
    """SM2PKE encrypts at most 6,047 bytes."""
    key_id, version = await encryption_key(agent, "EC_SM2")
    params = dict(KeyId=key_id, KeyVersionId=version, Algorithm="SM2PKE")
    await agent.call("AsymmetricEncrypt", Plaintext=bytes(6047), **params)
    with pytest.raises(errors.InvalidParameterError):
        await agent.call("AsymmetricEncrypt", Plaintext=bytes(6048), **params)


@pytest.mark.parametrize("ciphertext", [b"\x00" * 255, b"\x00" * 257, b"\xff" * 256])
async def test_malformed_rsa_ciphertext(agent, ciphertext):
    """RSA ciphertext of the wrong length or value is InvalidCiphertext."""
    key_id, version = await encryption_key(agent)
    with pytest.raises(errors.InvalidCiphertextError):
        await agent.call("AsymmetricDecrypt", KeyId=key_id, KeyVersionId=version,
                         Algorithm="RSAES_OAEP_SHA_256", CiphertextBlob=ciphertext)


async def test_tampered_sm2_ciphertext(agent):
    """SM2PKE ciphertext with a flipped byte is InvalidCiphertext."""
    key_id, version = await encryption_key(agent, "EC_SM2")
    params = dict(KeyId=key_id, KeyVersionId=version, Algorithm="SM2PKE")
    sealed = (await agent.call("AsymmetricEncrypt", Plaintext=b"x" * 40,
                               **params))["CiphertextBlob"]
    tampered = sealed[:-1] + bytes([sealed[-1] ^ 1])
    with pytest.raises(errors.InvalidCiphertextError):
        await agent.call("AsymmetricDecrypt", CiphertextBlob=tampered, **params)


# --- usage, versions and states ----------------------------------------------


async def test_sign_key_cannot_encrypt(agent):
    """A SIGN/VERIFY key refuses AsymmetricEncrypt with UnsupportedOperation."""
    key_id, version = await agent.new_key(KeySpec="RSA_2048")
    with pytest.raises(errors.UnsupportedOperationError) as caught:
        await agent.call("AsymmetricEncrypt", KeyId=key_id, KeyVersionId=version,
                         Algorithm="RSAES_OAEP_SHA_256", Plaintext=b"x")
    assert "ENCRYPT/DECRYPT" in caught.value.message


async def test_encrypt_key_cannot_sign(agent):
    """An ENCRYPT/DECRYPT key refuses AsymmetricSign and Verify."""
    key_id, version = await encryption_key(agent)
    params = dict(KeyId=key_id, KeyVersionId=version, Algorithm="RSA_PSS_SHA_256",
                  Digest=DIGEST)
    with pytest.raises(errors.UnsupportedOperationError):
        await agent.call("AsymmetricSign", **params)
    with pytest.raises(errors.UnsupportedOperationError):
        await agent.call("AsymmetricVerify", Value=b"sig", **params)


async def test_symmetric_key_cannot_sign(agent):
    """AsymmetricSign with a symmetric key is UnsupportedOperation."""
    key_id, version = await agent.new_key()
    with pytest.raises(errors.UnsupportedOperationError):
        await agent.call("AsymmetricSign", KeyId=key_id, KeyVersionId=version,
                         Algorithm="RSA_PSS_SHA_256", Digest=DIGEST)


async def test_asymmetric_key_cannot_encrypt_symmetric(agent):
    """Encrypt and GenerateDataKey with an asymmetric key are UnsupportedOperation."""
    key_id, _ = await encryption_key(agent)
    with pytest.raises(errors.UnsupportedOperationError):
        await agent.call("Encrypt", KeyId=key_id, Plaintext=b"x")
    with pytest.raises(errors.UnsupportedOperationError):
        await agent.call("GenerateDataKey", KeyId=key_id)


async def test_version_of_other_key(agent):
    """A version id of another key is Forbidden.KeyVersionNotFound."""
    key_id, _ = await agent.new_key(KeySpec="EC_P256")
    _, other_version = await agent.new_key(KeySpec="EC_P256")
    for op, extra in (("AsymmetricSign", {"Digest": DIGEST}),
                      ("GetPublicKey", {})):
        params = {"Algorithm": "ECDSA_SHA_256", **extra} if extra else {}
        with pytest.raises(errors.KeyVersionNotFoundError):
            await agent.call(op, KeyId=key_id, KeyVersionId=other_version, **params)


async def test_unknown_version(agent):
    """An unknown version id is Forbidden.KeyVersionNotFound."""
    key_id, _ = await agent.new_key(KeySpec="EC_P256")
    with pytest.raises(errors.KeyVersionNotFoundError):
        await agent.call("GetPublicKey", KeyId=key_id, KeyVersionId="nope")


async def test_missing_version_is_rejected(agent):
    """KeyVersionId is required."""
    key_id, _ = await agent.new_key(KeySpec="EC_P256")
    with pytest.raises(errors.MissingParameterError):
        await agent.call("AsymmetricSign", KeyId=key_id, Algorithm="ECDSA_SHA_256",
                         Digest=DIGEST)


@pytest.mark.parametrize("op,params", [
    ("GetPublicKey", {}),
    ("AsymmetricSign", {"Algorithm": "ECDSA_SHA_256", "Digest": DIGEST}),
    ("AsymmetricVerify", {"Algorithm": "ECDSA_SHA_256", "Digest": DIGEST,
                          "Value": b"\x30\x00"}),
])
async def test_disabled_key_is_rejected(agent, op, params):
    """Asymmetric calls on a disabled key are Rejected.Disabled."""
    key_id, version = await agent.new_key(KeySpec="EC_P256")
    await agent.call("DisableKey", KeyId=key_id)
    with pytest.raises(errors.KeyDisabledError):
        await agent.call(op, KeyId=key_id, KeyVersionId=version, **params)


async def test_new_version_is_new_pair(agent):
    """CreateKeyVersion makes a new key pair; the old version still signs."""
    key_id, first = await agent.new_key(KeySpec="EC_P256")
    agent.clock.advance(days=8)
    second = (await agent.call("CreateKeyVersion",
                               KeyId=key_id))["KeyVersion"]["KeyVersionId"]
    first_key = await agent.public_key(key_id, first)
    second_key = await agent.public_key(key_id, second)
    signature = (await agent.call("AsymmetricSign", KeyId=key_id, KeyVersionId=first,
                                  Algorithm="ECDSA_SHA_256", Digest=DIGEST))["Value"]
    assert first_key.public_numbers() != second_key.public_numbers()
    first_key.verify(signature, DIGEST, ec.ECDSA(PREHASHED))


# --- ReEncrypt of asymmetric ciphertext --------------------------------------


async def test_re_encrypt_asymmetric_source(agent):
    """RSA-OAEP ciphertext made by cryptography moves under a symmetric key."""
    source, version = await encryption_key(agent)
    destination, _ = await agent.new_key()
    ciphertext = (await agent.public_key(source, version)).encrypt(
        b"moved secret", oaep("RSAES_OAEP_SHA_256"))
    reply = await agent.call(
        "ReEncrypt", CiphertextBlob=ciphertext, DestinationKeyId=destination,
        DestinationEncryptionContext={"app": "pay"}, SourceKeyId=source,
        SourceKeyVersionId=version, SourceEncryptionAlgorithm="RSAES_OAEP_SHA_256")
    assert reply["KeyId"] == destination
    decrypted = await agent.call("Decrypt", CiphertextBlob=reply["CiphertextBlob"],
                                 EncryptionContext={"app": "pay"})
    assert decrypted["Plaintext"] == b"moved secret"


async def test_re_encrypt_asymmetric_source_errors(agent):
    """Partial source parameters, a source context and bad ciphertext are rejected."""
    source, version = await encryption_key(agent)
    destination, _ = await agent.new_key()
    common = {"DestinationKeyId": destination, "SourceKeyId": source}
    with pytest.raises(errors.MissingParameterError, match="SourceKeyVersionId"):
        await agent.call("ReEncrypt", CiphertextBlob=b"x" * 256, **common)
    full = {**common, "SourceKeyVersionId": version,
            "SourceEncryptionAlgorithm": "RSAES_OAEP_SHA_256"}
    with pytest.raises(errors.InvalidParameterError, match="SourceEncryptionContext"):
        await agent.call("ReEncrypt", CiphertextBlob=b"x" * 256,
                         SourceEncryptionContext={"a": "b"}, **full)
    with pytest.raises(errors.InvalidCiphertextError):
        await agent.call("ReEncrypt", CiphertextBlob=b"x" * 256, **full)
    signing, signing_version = await agent.new_key(KeySpec="RSA_2048",
                                                   KeyUsage="SIGN/VERIFY")
    # A signing key cannot decrypt, as with AsymmetricDecrypt.
    with pytest.raises(errors.UnsupportedOperationError):
        await agent.call("ReEncrypt", CiphertextBlob=b"x" * 256,
                         **{**full, "SourceKeyId": signing,
                            "SourceKeyVersionId": signing_version})


async def test_re_encrypt_checks_destination_first(agent):
    """A disabled destination is reported before the source is decrypted."""
    source, version = await encryption_key(agent)
    destination, _ = await agent.new_key()
    await agent.call("DisableKey", KeyId=destination)
    with pytest.raises(errors.KeyDisabledError):
        await agent.call(
            "ReEncrypt", CiphertextBlob=b"not a ciphertext", DestinationKeyId=destination,
            SourceKeyId=source, SourceKeyVersionId=version,
            SourceEncryptionAlgorithm="RSAES_OAEP_SHA_256")
    blob = (await agent.call("Encrypt", KeyId=(await agent.new_key())[0],
                             Plaintext=b"x"))["CiphertextBlob"]
    with pytest.raises(errors.KeyDisabledError):
        await agent.call("ReEncrypt", CiphertextBlob=blob, DestinationKeyId=destination)
