"""SM2 in the keystore against an independent reference and tongsuopy.

The reference below implements SM2 public-key encryption and the Z_A
digest from GB/T 32918 in plain Python integers, so the agent's SM2PKE
ciphertext format (DER SEQUENCE {x, y, C3, C2}) and its digest rule are
checked against the standard, not only against the library the agent
uses. Other test modules import ``reference_encrypt`` and ``z_a_digest``.
"""

from __future__ import annotations

import secrets

import pytest
from cryptography.hazmat.primitives import hashes
from tongsuopy.crypto import hashes as sm_hashes
from tongsuopy.crypto import serialization as sm_serialization
from tongsuopy.crypto.asymciphers import ec as sm_ec

from agent.keystore import sm2
from agent.keystore.base import DecryptionFailed

P = 0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFF
A = P - 3
B = 0x28E9FA9E9D9F5E344D5A9E4BCF6509A7F39789F515AB8F92DDBCBD414D940E93
N = 0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFF7203DF6B21C6052B53BBF40939D54123
G = (0x32C4AE2C1F1981195F9904466A39C9948FE30BBFF2660BE1715A4589334C74C7,
     0xBC3736A2F4F6779C59BDCEE36B692153D0A9877CC62A474002DF32E52139F0A0)


def sm3(data: bytes) -> bytes:
    digest = hashes.Hash(hashes.SM3())
    digest.update(data)
    return digest.finalize()


def point_add(left, right):
    if left is None:
        return right
    if right is None:
        return left
    if left[0] == right[0] and (left[1] + right[1]) % P == 0:
        return None
    if left == right:
        slope = (3 * left[0] * left[0] + A) * pow(2 * left[1], -1, P) % P
    else:
        slope = (right[1] - left[1]) * pow(right[0] - left[0], -1, P) % P
    x = (slope * slope - left[0] - right[0]) % P
    return x, (slope * (left[0] - x) - left[1]) % P


def multiply(scalar: int, point):
    result = None
    while scalar:
        if scalar & 1:
            result = point_add(result, point)
        point = point_add(point, point)
        scalar >>= 1
    return result


def kdf(secret: bytes, length: int) -> bytes:
    output = b""
    counter = 1
    while len(output) < length:
        output += sm3(secret + counter.to_bytes(4, "big"))
        counter += 1
    return output[:length]


def der(tag: int, body: bytes) -> bytes:
    if len(body) < 128:
        return bytes([tag, len(body)]) + body
    size = len(body).to_bytes((len(body).bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(size)]) + size + body


def der_integer(value: int) -> bytes:
    return der(0x02, value.to_bytes(value.bit_length() // 8 + 1, "big"))


def der_items(data: bytes) -> list[bytes]:
    """Return the bodies of the items in a DER SEQUENCE body."""
    items = []
    while data:
        length, offset = data[1], 2
        if length & 0x80:
            count = length & 0x7F
            length = int.from_bytes(data[2:2 + count], "big")
            offset += count
        items.append(data[offset:offset + length])
        data = data[offset + length:]
    return items


def point_of(public_key) -> tuple[int, int]:
    numbers = public_key.public_numbers()
    return numbers.x, numbers.y


def reference_encrypt(public_key, message: bytes) -> bytes:
    """SM2 encryption (GB/T 32918.4) to a tongsuopy public key, as DER."""
    k = secrets.randbelow(N - 1) + 1
    x1, y1 = multiply(k, G)
    x2, y2 = multiply(k, point_of(public_key))
    shared = x2.to_bytes(32, "big") + y2.to_bytes(32, "big")
    mask = kdf(shared, len(message))
    c2 = bytes(a ^ b for a, b in zip(message, mask))
    c3 = sm3(shared[:32] + message + shared[32:])
    body = der_integer(x1) + der_integer(y1) + der(0x04, c3) + der(0x04, c2)
    return der(0x30, body)


def reference_decrypt(private_value: int, ciphertext: bytes) -> bytes:
    """SM2 decryption of DER ciphertext with a private scalar."""
    outer = der_items(ciphertext)[0]
    x1, y1, c3, c2 = der_items(outer)
    point = (int.from_bytes(x1, "big"), int.from_bytes(y1, "big"))
    x2, y2 = multiply(private_value, point)
    shared = x2.to_bytes(32, "big") + y2.to_bytes(32, "big")
    message = bytes(a ^ b for a, b in zip(c2, kdf(shared, len(c2))))
    assert sm3(shared[:32] + message + shared[32:]) == c3
    return message


def z_a_digest(public_key, message: bytes,
               user_id: bytes = b"1234567812345678") -> bytes:
    """e = SM3(Z_A || message) for a tongsuopy public key (GB/T 32918.2)."""
    x, y = point_of(public_key)
    fields = b"".join(v.to_bytes(32, "big") for v in (A, B, *G, x, y))
    z_a = sm3((len(user_id) * 8).to_bytes(2, "big") + user_id + fields)
    return sm3(z_a + message)


@pytest.fixture
def key_pair():
    """A fresh SM2 key pair from the agent: (private key, tongsuopy pair)."""
    pkcs8, _ = sm2.generate()
    pair = sm_serialization.load_der_private_key(pkcs8, None)
    return sm2.Sm2PrivateKey(pkcs8), pair


def test_reference_curve_is_sound():
    """The reference's generator has order N on the SM2 curve."""
    assert (G[1] ** 2 - G[0] ** 3 - A * G[0] - B) % P == 0
    assert multiply(N, G) is None


def test_agent_ciphertext_decrypts_in_reference(key_pair):
    """Agent SM2PKE ciphertext decrypts with the reference and the private key."""
    _, pair = key_pair
    public_key = sm2.load_public_key(sm2.public_key_der(pair.public_key()))
    ciphertext = sm2.encrypt(public_key, b"agent to reference")
    value = pair.private_numbers().private_value
    assert reference_decrypt(value, ciphertext) == b"agent to reference"


def test_reference_ciphertext_decrypts_in_agent(key_pair):
    """Reference SM2 ciphertext decrypts in the agent."""
    private_key, pair = key_pair
    ciphertext = reference_encrypt(pair.public_key(), b"reference to agent")
    assert private_key.decrypt(ciphertext) == b"reference to agent"


def test_long_plaintext_round_trip(key_pair):
    """A 6,047-byte plaintext, the SM2PKE limit, round-trips."""
    private_key, pair = key_pair
    ciphertext = reference_encrypt(pair.public_key(), b"\x5a" * 6047)
    assert len(ciphertext) <= sm2.MAX_CIPHERTEXT_BYTES
    assert private_key.decrypt(ciphertext) == b"\x5a" * 6047


def test_tampered_ciphertext_fails(key_pair):
    """A flipped C2 byte fails the C3 check with DecryptionFailed."""
    private_key, pair = key_pair
    ciphertext = bytearray(reference_encrypt(pair.public_key(), b"payload"))
    ciphertext[-1] ^= 1
    with pytest.raises(DecryptionFailed):
        private_key.decrypt(bytes(ciphertext))


def test_garbage_ciphertext_fails(key_pair):
    """Bytes that are no SM2 ciphertext fail with DecryptionFailed."""
    private_key, _ = key_pair
    with pytest.raises(DecryptionFailed):
        private_key.decrypt(b"\x30\x03\x02\x01\x01")


def test_digest_matches_reference(key_pair):
    """The agent's SM3(Z_A || M) matches the reference computation."""
    _, pair = key_pair
    spki = sm2.public_key_der(pair.public_key())
    assert sm2.message_digest(spki, b"msg") == z_a_digest(pair.public_key(), b"msg")


def test_digest_signature_verifies_message(key_pair):
    """A signature of SM3(Z_A || M) verifies as tongsuopy's signature of M."""
    private_key, pair = key_pair
    signature = private_key.sign_digest(z_a_digest(pair.public_key(), b"data"))
    pair.public_key().verify(signature, b"data", sm_ec.ECDSA(sm_hashes.SM3()))


def test_message_signature_verifies_digest(key_pair):
    """tongsuopy's signature of M verifies on the digest SM3(Z_A || M)."""
    _, pair = key_pair
    signature = pair.sign(b"data", sm_ec.ECDSA(sm_hashes.SM3()))
    spki = sm2.public_key_der(pair.public_key())
    digest = z_a_digest(pair.public_key(), b"data")
    assert sm2.verify_digest(spki, digest, signature) is True
    assert sm2.verify_digest(spki, sm3(b"data"), signature) is False


@pytest.mark.parametrize("signature", [b"", b"\x30\x00", b"\x00" * 64, b"junk"])
def test_malformed_signature_is_false(key_pair, signature):
    """Malformed SM2 signatures verify as false without an error."""
    _, pair = key_pair
    spki = sm2.public_key_der(pair.public_key())
    assert sm2.verify_digest(spki, bytes(32), signature) is False


def test_other_curve_is_not_sm2():
    """A P-256 public key is rejected as an SM2 key."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    spki = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    with pytest.raises(ValueError):
        sm2.load_public_key(spki)


def test_private_key_repr_is_redacted(key_pair):
    """The SM2 private key never shows its value in a repr."""
    private_key, _ = key_pair
    assert repr(private_key) == "Sm2PrivateKey(<redacted>)"
