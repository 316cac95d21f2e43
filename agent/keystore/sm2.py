"""SM2 signatures (SM2DSA) and public-key encryption (SM2PKE), in software.

The engine is tongsuopy 1.0.1, which bundles the Tongsuo C library (an
OpenSSL 1.1.1 fork with SM2); it installs as a wheel here. The other
candidate, gmssl 3.2.2, is pure Python: it computes with the private
key in Python integers, whose timing depends on the key, and is far
slower. SoftHSM2 has no SM2 mechanism, so EC_SM2 keys are SOFTWARE keys.

tongsuopy's public API signs messages only and has no encryption, so
this module calls ``EVP_PKEY_sign``, ``verify``, ``encrypt`` and
``decrypt`` through tongsuopy's own cffi binding (``backend._lib``), as
its public methods do internally. A digest here is e = SM3(Z_A || M),
where Z_A = SM3(ENTL || ID || a || b || xG || yG || xA || yA) (GB/T
32918.2) with the default ID ``1234567812345678``; ``message_digest``
computes it. Ciphertext is the DER SEQUENCE {x, y, C3 hash, C2} of
GM/T 0009, as Tongsuo writes it. Signatures are DER SEQUENCE {r, s}.
"""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes
from tongsuopy.backends.tongsuo import backend
from tongsuopy.crypto import serialization
from tongsuopy.crypto.asymciphers import ec

from agent.keystore.base import DecryptionFailed

DIGEST_BYTES = 32
DEFAULT_USER_ID = b"1234567812345678"
# SM2 encrypts at most this much, as Alibaba Cloud KMS allows for SM2PKE.
MAX_PLAINTEXT_BYTES = 6047
# NOTE: Alibaba Cloud KMS gives 6,144 bytes as the longest SM2PKE
# ciphertext, which is the raw 04 || C1 || C3 || C2 form of 6,047 bytes.
# This agent writes the DER form, which is up to 6,159 bytes long.
MAX_CIPHERTEXT_BYTES = 6160

# The SM2 curve parameters of GB/T 32918.5.
_P = 0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFF
_A = _P - 3
_B = 0x28E9FA9E9D9F5E344D5A9E4BCF6509A7F39789F515AB8F92DDBCBD414D940E93
_GX = 0x32C4AE2C1F1981195F9904466A39C9948FE30BBFF2660BE1715A4589334C74C7
_GY = 0xBC3736A2F4F6779C59BDCEE36B692153D0A9877CC62A474002DF32E52139F0A0

_lib = backend._lib
_ffi = backend._ffi


def generate() -> tuple[bytes, bytes]:
    """Generate an SM2 key pair.

    Returns:
        ``(pkcs8_der, spki_der)``: the private key as unencrypted PKCS#8
        DER and the public key as SubjectPublicKeyInfo DER.
    """
    private_key = ec.generate_private_key(ec.SM2())
    pkcs8 = private_key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption())
    return pkcs8, public_key_der(private_key.public_key())


def public_key_der(public_key) -> bytes:
    """Return a tongsuopy public key as SubjectPublicKeyInfo DER."""
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def load_public_key(spki: bytes, pem: bool = False):
    """Load an SM2 public key from SubjectPublicKeyInfo DER or PEM.

    Raises:
        ValueError: the bytes are not an SM2 public key.
    """
    try:
        if pem:
            key = serialization.load_pem_public_key(spki)
        else:
            key = serialization.load_der_public_key(spki)
    except Exception:
        # tongsuopy raises ValueError, UnsupportedAlgorithm or its own
        # binding errors for other curves and malformed input.
        backend._consume_errors()
        raise ValueError("the public key is not an SM2 public key") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "SM2":
        raise ValueError("the public key is not an SM2 public key")
    return key


def message_digest(spki: bytes, message: bytes,
                   user_id: bytes = DEFAULT_USER_ID) -> bytes:
    """Return e = SM3(Z_A || message), the digest that SM2DSA signs."""
    numbers = load_public_key(spki).public_numbers()
    fields = (_A, _B, _GX, _GY, numbers.x, numbers.y)
    z_a = _sm3((len(user_id) * 8).to_bytes(2, "big") + user_id
               + b"".join(value.to_bytes(32, "big") for value in fields))
    return _sm3(z_a + message)


def _sm3(data: bytes) -> bytes:
    digest = hashes.Hash(hashes.SM3())
    digest.update(data)
    return digest.finalize()


class Sm2PrivateKey:
    """An SM2 private key in process memory; its repr is redacted."""

    __slots__ = ("_key",)

    def __init__(self, pkcs8: bytes):
        try:
            key = serialization.load_der_private_key(pkcs8, None)
        except Exception:
            backend._consume_errors()
            raise ValueError("the private key is not SM2 PKCS#8 DER") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "SM2":
            raise ValueError("the private key is not an SM2 key")
        self._key = key

    def __repr__(self) -> str:
        return "Sm2PrivateKey(<redacted>)"

    def __reduce__(self):
        raise TypeError("Sm2PrivateKey contains key material and cannot be pickled")

    def public_key_der(self) -> bytes:
        """Return the public key as SubjectPublicKeyInfo DER."""
        return public_key_der(self._key.public_key())

    def sign_digest(self, digest: bytes) -> bytes:
        """Sign a 32-byte digest e = SM3(Z_A || M); return a DER signature."""
        if len(digest) != DIGEST_BYTES:
            raise ValueError(f"an SM2 digest is {DIGEST_BYTES} bytes long")
        context = _context(self._key, _lib.EVP_PKEY_sign_init)
        return _two_pass(_lib.EVP_PKEY_sign, context, digest)

    def decrypt(self, ciphertext: bytes) -> bytes:
        """Decrypt SM2PKE ciphertext.

        Raises:
            DecryptionFailed: the ciphertext is malformed or fails its
                C3 hash check.
        """
        context = _context(self._key, _lib.EVP_PKEY_decrypt_init)
        try:
            return _two_pass(_lib.EVP_PKEY_decrypt, context, ciphertext)
        except ValueError:
            raise DecryptionFailed() from None


def verify_digest(spki: bytes, digest: bytes, signature: bytes) -> bool:
    """Return whether ``signature`` (DER) is valid for a 32-byte digest."""
    if len(digest) != DIGEST_BYTES:
        raise ValueError(f"an SM2 digest is {DIGEST_BYTES} bytes long")
    context = _context(load_public_key(spki), _lib.EVP_PKEY_verify_init)
    result = _lib.EVP_PKEY_verify(context, signature, len(signature), digest,
                                  len(digest))
    # 0 is a wrong signature, a negative value a malformed one.
    backend._consume_errors()
    return result == 1


def encrypt(public_key, plaintext: bytes) -> bytes:
    """Encrypt with SM2PKE under a public key from ``load_public_key``."""
    if not 1 <= len(plaintext) <= MAX_PLAINTEXT_BYTES:
        raise ValueError(f"SM2PKE encrypts 1 to {MAX_PLAINTEXT_BYTES} bytes")
    context = _context(public_key, _lib.EVP_PKEY_encrypt_init)
    return _two_pass(_lib.EVP_PKEY_encrypt, context, plaintext)


def _context(key, init):
    context = _lib.EVP_PKEY_CTX_new(key._evp_pkey, _ffi.NULL)
    if context == _ffi.NULL:
        raise MemoryError("EVP_PKEY_CTX_new failed")
    context = _ffi.gc(context, _lib.EVP_PKEY_CTX_free)
    if init(context) != 1:
        backend._consume_errors()
        raise ValueError("the SM2 operation cannot start with this key")
    return context


def _two_pass(function, context, data: bytes) -> bytes:
    """Call an EVP_PKEY function for the output size, then for the output."""
    length = _ffi.new("size_t *")
    if function(context, _ffi.NULL, length, data, len(data)) != 1:
        backend._consume_errors()
        raise ValueError("the SM2 operation failed")
    output = _ffi.new("unsigned char[]", length[0])
    if function(context, output, length, data, len(data)) != 1:
        backend._consume_errors()
        raise ValueError("the SM2 operation failed")
    return _ffi.buffer(output)[:length[0]]
