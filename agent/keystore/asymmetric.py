"""Asymmetric algorithms in software, shared by every keystore backend.

The tables name what each key spec can do, as Alibaba Cloud KMS does.
RSA keys sign with RSA_PSS_SHA_256 or RSA_PKCS1_SHA_256 and encrypt with
RSAES_OAEP_SHA_256 or RSAES_OAEP_SHA_1 (MGF1 with the same hash, empty
label). EC_P256 and EC_P256K sign with ECDSA_SHA_256 only. EC_SM2 signs
with SM2DSA and encrypts with SM2PKE (``sm2``). Every sign algorithm
takes a precomputed 32-byte digest and never hashes it again. PSS uses
a 32-byte salt (the digest length) when signing and accepts any salt
length when verifying. ECDSA signatures are DER SEQUENCE {r, s}.

Public-key operations (verify, encrypt, PEM) run here for every
protection level, since they need no secret. ``SoftwareKeyPair`` holds
a SOFTWARE private key; ``oaep_decode`` removes OAEP padding after a raw
RSA decryption in a token that lacks OAEP with SHA-256.
"""

from __future__ import annotations

import base64
import hmac

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

from agent.keystore import sm2
from agent.keystore.base import (
    EC_CURVE_NAMES, RSA_KEY_BITS, SM2_SPEC, DecryptionFailed,
)

RSA_PSS_SHA_256 = "RSA_PSS_SHA_256"
RSA_PKCS1_SHA_256 = "RSA_PKCS1_SHA_256"
ECDSA_SHA_256 = "ECDSA_SHA_256"
SM2DSA = "SM2DSA"
RSAES_OAEP_SHA_256 = "RSAES_OAEP_SHA_256"
RSAES_OAEP_SHA_1 = "RSAES_OAEP_SHA_1"
SM2PKE = "SM2PKE"
# Only for wrapping imported key material.
RSAES_PKCS1_V1_5 = "RSAES_PKCS1_V1_5"

DIGEST_BYTES = 32
PSS_SALT_BYTES = 32
_RSA_SIGN = (RSA_PSS_SHA_256, RSA_PKCS1_SHA_256)
_RSA_ENCRYPT = (RSAES_OAEP_SHA_256, RSAES_OAEP_SHA_1)
_OAEP_HASHES = {RSAES_OAEP_SHA_256: hashes.SHA256, RSAES_OAEP_SHA_1: hashes.SHA1}
# The DER DigestInfo prefix of a SHA-256 digest (RFC 8017, section 9.2).
SHA256_DIGEST_INFO = bytes.fromhex("3031300d060960864801650304020105000420")

SIGN_ALGORITHMS: dict[str, tuple[str, ...]] = {
    **{spec: _RSA_SIGN for spec in RSA_KEY_BITS},
    **{spec: (ECDSA_SHA_256,) for spec in EC_CURVE_NAMES},
    SM2_SPEC: (SM2DSA,),
}
ENCRYPT_ALGORITHMS: dict[str, tuple[str, ...]] = {
    **{spec: _RSA_ENCRYPT for spec in RSA_KEY_BITS},
    SM2_SPEC: (SM2PKE,),
}
_CURVES = {"EC_P256": ec.SECP256R1, "EC_P256K": ec.SECP256K1}


def max_plaintext(key_spec: str, algorithm: str) -> int:
    """Return the longest plaintext ``algorithm`` encrypts under ``key_spec``.

    RSA-OAEP takes k - 2 * hLen - 2 bytes (RFC 8017): 190 and 214 bytes
    for RSA_2048 with SHA-256 and SHA-1, 318 and 342 for RSA_3072.
    """
    if algorithm == SM2PKE:
        return sm2.MAX_PLAINTEXT_BYTES
    hash_bytes = _OAEP_HASHES[algorithm].digest_size
    return RSA_KEY_BITS[key_spec] // 8 - 2 * hash_bytes - 2


def ciphertext_bytes(key_spec: str) -> int | None:
    """Return the exact RSA ciphertext length of a spec, or None for SM2."""
    bits = RSA_KEY_BITS.get(key_spec)
    return None if bits is None else bits // 8


# --- public keys -------------------------------------------------------------


def public_key_pem(spki: bytes) -> str:
    """Return SubjectPublicKeyInfo DER as PEM text (RFC 7468)."""
    body = base64.b64encode(spki).decode("ascii")
    lines = [body[start:start + 64] for start in range(0, len(body), 64)]
    return "\n".join(["-----BEGIN PUBLIC KEY-----", *lines,
                      "-----END PUBLIC KEY-----", ""])


def verify(key_spec: str, spki: bytes, algorithm: str, digest: bytes,
           signature: bytes) -> bool:
    """Return whether ``signature`` is valid for ``digest``.

    A signature in the wrong encoding or of the wrong length is simply
    invalid. The caller has checked the algorithm and the digest length.
    """
    if algorithm == SM2DSA:
        return sm2.verify_digest(spki, digest, signature)
    key = serialization.load_der_public_key(spki)
    prehashed = utils.Prehashed(hashes.SHA256())
    try:
        if algorithm == ECDSA_SHA_256:
            key.verify(signature, digest, ec.ECDSA(prehashed))
        elif algorithm == RSA_PSS_SHA_256:
            key.verify(signature, digest, _pss(padding.PSS.AUTO), prehashed)
        else:
            key.verify(signature, digest, padding.PKCS1v15(), prehashed)
    except (InvalidSignature, ValueError):
        return False
    return True


def encrypt(key_spec: str, spki: bytes, algorithm: str, plaintext: bytes) -> bytes:
    """Encrypt ``plaintext`` under a public key with ``algorithm``."""
    if algorithm == SM2PKE:
        return sm2.encrypt(sm2.load_public_key(spki), plaintext)
    key = serialization.load_der_public_key(spki)
    return key.encrypt(plaintext, _oaep(algorithm))


def _pss(salt_length) -> padding.PSS:
    return padding.PSS(padding.MGF1(hashes.SHA256()), salt_length)


def _oaep(algorithm: str) -> padding.OAEP:
    hash_type = _OAEP_HASHES[algorithm]
    return padding.OAEP(padding.MGF1(hash_type()), hash_type(), None)


def rsa_spki(modulus: bytes, exponent: bytes) -> bytes:
    """Return SubjectPublicKeyInfo DER for an RSA modulus and exponent."""
    numbers = rsa.RSAPublicNumbers(int.from_bytes(exponent, "big"),
                                   int.from_bytes(modulus, "big"))
    return numbers.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def der_ecdsa_signature(raw: bytes) -> bytes:
    """Convert a raw r || s ECDSA signature (PKCS#11 CKM_ECDSA) to DER."""
    half = len(raw) // 2
    return utils.encode_dss_signature(int.from_bytes(raw[:half], "big"),
                                      int.from_bytes(raw[half:], "big"))


# --- private keys in software ------------------------------------------------


def generate_software_pair(key_spec: str) -> tuple[bytes, bytes]:
    """Generate a key pair in process memory.

    Returns:
        ``(pkcs8_der, spki_der)``.
    """
    if key_spec == SM2_SPEC:
        return sm2.generate()
    if key_spec in RSA_KEY_BITS:
        key = rsa.generate_private_key(65537, RSA_KEY_BITS[key_spec])
    else:
        key = ec.generate_private_key(_CURVES[key_spec]())
    pkcs8 = key.private_bytes(serialization.Encoding.DER,
                              serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption())
    spki = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return pkcs8, spki


class SoftwareKeyPair:
    """A SOFTWARE private key in process memory; its repr is redacted."""

    __slots__ = ("key_spec", "_key")

    def __init__(self, key_spec: str, pkcs8: bytes):
        self.key_spec = key_spec
        if key_spec == SM2_SPEC:
            self._key = sm2.Sm2PrivateKey(pkcs8)
            return
        key = serialization.load_der_private_key(pkcs8, None)
        if key_spec in RSA_KEY_BITS:
            valid = (isinstance(key, rsa.RSAPrivateKey)
                     and key.key_size == RSA_KEY_BITS[key_spec])
        else:
            valid = (isinstance(key, ec.EllipticCurvePrivateKey)
                     and isinstance(key.curve, _CURVES[key_spec]))
        if not valid:
            raise ValueError(f"the private key does not match {key_spec}")
        self._key = key

    def __repr__(self) -> str:
        return f"SoftwareKeyPair({self.key_spec}, <redacted>)"

    def __reduce__(self):
        raise TypeError("SoftwareKeyPair contains key material and cannot be pickled")

    def sign(self, algorithm: str, digest: bytes) -> bytes:
        """Sign a precomputed 32-byte digest with ``algorithm``."""
        if algorithm == SM2DSA:
            return self._key.sign_digest(digest)
        prehashed = utils.Prehashed(hashes.SHA256())
        if algorithm == ECDSA_SHA_256:
            return self._key.sign(digest, ec.ECDSA(prehashed))
        if algorithm == RSA_PSS_SHA_256:
            return self._key.sign(digest, _pss(PSS_SALT_BYTES), prehashed)
        return self._key.sign(digest, padding.PKCS1v15(), prehashed)

    def decrypt(self, algorithm: str, ciphertext: bytes) -> bytes:
        """Decrypt with ``algorithm``.

        Raises:
            DecryptionFailed: for every failure, whatever the cause.
        """
        if algorithm == SM2PKE:
            return self._key.decrypt(ciphertext)
        scheme = (padding.PKCS1v15() if algorithm == RSAES_PKCS1_V1_5
                  else _oaep(algorithm))
        try:
            return self._key.decrypt(ciphertext, scheme)
        except ValueError:
            raise DecryptionFailed() from None


# --- OAEP decoding after a raw RSA decryption --------------------------------


def _mgf1(seed: bytes, length: int, hash_type) -> bytes:
    output = b""
    counter = 0
    while len(output) < length:
        digest = hashes.Hash(hash_type())
        digest.update(seed + counter.to_bytes(4, "big"))
        output += digest.finalize()
        counter += 1
    return output[:length]


def _xor(left: bytes, right: bytes) -> bytes:
    return (int.from_bytes(left, "big") ^ int.from_bytes(right, "big")).to_bytes(
        len(left), "big")


def oaep_decode(encoded: bytes, algorithm: str) -> bytes:
    """Remove EME-OAEP padding (RFC 8017, 7.1.2) with an empty label.

    ``encoded`` is the k-byte output of a raw RSA decryption. Every check
    runs over the whole block and folds into one flag, so the time taken
    does not tell which check failed (as far as Python integers allow).

    Raises:
        DecryptionFailed: the block is not valid OAEP for ``algorithm``.
    """
    hash_type = _OAEP_HASHES[algorithm]
    h_len = hash_type.digest_size
    if len(encoded) < 2 * h_len + 2:
        raise DecryptionFailed()
    label_hash = hashes.Hash(hash_type())
    label_hash = label_hash.finalize()
    masked_seed = encoded[1:1 + h_len]
    masked_db = encoded[1 + h_len:]
    seed = _xor(masked_seed, _mgf1(masked_db, h_len, hash_type))
    db = _xor(masked_db, _mgf1(seed, len(masked_db), hash_type))
    good = int(hmac.compare_digest(db[:h_len], label_hash)) & int(encoded[0] == 0)
    # Find the 0x01 after the zero padding without branching on secrets.
    looking = 1
    separator = 0
    for index in range(h_len, len(db)):
        byte = db[index]
        is_one = int(byte == 1)
        is_zero = int(byte == 0)
        separator |= index * (looking & is_one)
        good &= 1 - (looking & (1 - is_one) & (1 - is_zero))
        looking &= 1 - is_one
    good &= 1 - looking
    if not good:
        raise DecryptionFailed()
    return db[separator + 1:]
