"""Generate the negative test vectors for RSA-OAEP and ECDSA verification.

No package on PyPI ships Project Wycheproof's JSON files, so these are
vectors in the same spirit, derived with cryptography. Each file contains
one key and cases marked valid or invalid, with a comment naming the
flaw. OAEP cases build the encoded block by hand (RFC 8017, 7.1.1) and
encrypt it with raw RSA, so padding faults reach the decoder. Run
``python tests/vectors/wycheproof/generate.py`` to write new files; the
tests read the committed ones.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

HERE = Path(__file__).resolve().parent
HASHES = {"RSAES_OAEP_SHA_256": hashlib.sha256, "RSAES_OAEP_SHA_1": hashlib.sha1}
ORDERS = {
    "EC_P256": 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551,
    "EC_P256K": 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141,
}


def mgf1(seed: bytes, length: int, hash_function) -> bytes:
    output = b""
    counter = 0
    while len(output) < length:
        output += hash_function(seed + counter.to_bytes(4, "big")).digest()
        counter += 1
    return output[:length]


def xor(left: bytes, right: bytes) -> bytes:
    return bytes(a ^ b for a, b in zip(left, right))


def oaep_block(message: bytes, size: int, hash_function, label: bytes = b"",
               first: int = 0, separator: int = 1, label_hash: bytes | None = None
               ) -> bytes:
    h_len = hash_function().digest_size
    l_hash = label_hash if label_hash is not None else hash_function(label).digest()
    padding_length = size - len(message) - 2 * h_len - 2
    db = l_hash + bytes(padding_length) + bytes([separator]) + message
    seed = os.urandom(h_len)
    masked_db = xor(db, mgf1(seed, len(db), hash_function))
    masked_seed = xor(seed, mgf1(masked_db, h_len, hash_function))
    return bytes([first]) + masked_seed + masked_db


def raw_encrypt(public: rsa.RSAPublicNumbers, block: bytes, size: int) -> bytes:
    return pow(int.from_bytes(block, "big"), public.e, public.n).to_bytes(size, "big")


def oaep_cases(key: rsa.RSAPrivateKey, algorithm: str) -> list[dict]:
    hash_function = HASHES[algorithm]
    other = hashlib.sha1 if hash_function is hashlib.sha256 else hashlib.sha256
    public = key.public_key().public_numbers()
    size = key.key_size // 8
    longest = size - 2 * hash_function().digest_size - 2

    def block(message=b"payload", **flaws):
        return raw_encrypt(public, oaep_block(message, size, hash_function, **flaws),
                           size)

    good = block()
    cases = [
        ("valid", "ordinary message", b"payload", good),
        ("valid", "one byte", b"\x01", block(b"\x01")),
        ("valid", "longest message", b"\xaa" * longest, block(b"\xaa" * longest)),
        ("valid", "empty message", b"", block(b"")),
        ("invalid", "first byte of EM is 1", None, block(first=1)),
        ("invalid", "wrong label hash", None, block(label=b"label")),
        ("invalid", "label hash of the other hash", None,
         block(label_hash=other(b"").digest()[:hash_function().digest_size].ljust(
             hash_function().digest_size, b"\x00"))),
        ("invalid", "separator 2 instead of 1", None, block(separator=2)),
        ("invalid", "separator missing", None, block(b"", separator=0)),
        ("invalid", "last ciphertext byte flipped", None,
         good[:-1] + bytes([good[-1] ^ 1])),
        ("invalid", "ciphertext one byte short", None, good[1:]),
        ("invalid", "ciphertext with a leading zero byte", None, b"\x00" + good),
        ("invalid", "ciphertext equal to the modulus", None,
         public.n.to_bytes(size, "big")),
        ("invalid", "ciphertext zero", None, bytes(size)),
    ]
    return [{"tcId": index, "result": result, "comment": comment,
             "msg": None if message is None else message.hex(),
             "ct": ciphertext.hex()}
            for index, (result, comment, message, ciphertext) in enumerate(cases, 1)]


def der_length(length: int) -> bytes:
    if length < 128:
        return bytes([length])
    body = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def der_integer(value: int, extra_zero: bool = False) -> bytes:
    body = value.to_bytes(max(1, (value.bit_length() + 8) // 8), "big")
    if extra_zero:
        body = b"\x00" + body
    return b"\x02" + der_length(len(body)) + body


def der_sequence(body: bytes, long_form: bool = False) -> bytes:
    length = (b"\x81" + bytes([len(body)])) if long_form else der_length(len(body))
    return b"\x30" + length + body


def ecdsa_cases(key: ec.EllipticCurvePrivateKey, spec: str) -> list[dict]:
    order = ORDERS[spec]
    digest = hashlib.sha256(b"wycheproof-style").digest()
    prehashed = ec.ECDSA(utils.Prehashed(hashes.SHA256()))
    r, s = utils.decode_dss_signature(key.sign(digest, prehashed))

    def sig(r_value, s_value):
        return der_sequence(der_integer(r_value) + der_integer(s_value))

    cases = [
        ("valid", "ordinary signature", sig(r, s)),
        ("valid", "high s (n - s), accepted by ECDSA", sig(r, order - s)),
        ("invalid", "r + 1", sig(r + 1, s)),
        ("invalid", "s + 1", sig(r, s + 1)),
        ("invalid", "r and s swapped", sig(s, r)),
        ("invalid", "r = 0", sig(0, s)),
        ("invalid", "s = 0", sig(r, 0)),
        ("invalid", "r = n", sig(order, s)),
        ("invalid", "s = n", sig(r, order)),
        ("invalid", "r + n", sig(r + order, s)),
        ("invalid", "raw r || s instead of DER",
         r.to_bytes(32, "big") + s.to_bytes(32, "big")),
        ("invalid", "trailing zero byte after DER", sig(r, s) + b"\x00"),
        ("invalid", "long-form length (BER)",
         der_sequence(der_integer(r) + der_integer(s), long_form=True)),
        ("invalid", "integer with a redundant leading zero",
         der_sequence(der_integer(r, extra_zero=True) + der_integer(s))),
        ("invalid", "empty SEQUENCE", b"\x30\x00"),
        ("invalid", "signature of another digest",
         key.sign(hashlib.sha256(b"other").digest(), prehashed)),
    ]
    return [{"tcId": index, "result": result, "comment": comment, "sig": value.hex()}
            for index, (result, comment, value) in enumerate(cases, 1)]


def main() -> None:
    rsa_key = rsa.generate_private_key(65537, 2048)
    pkcs8 = rsa_key.private_bytes(serialization.Encoding.DER,
                                  serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption())
    oaep = {"description": __doc__.splitlines()[0], "keySpec": "RSA_2048",
            "privateKeyPkcs8": pkcs8.hex(),
            "testGroups": [{"algorithm": algorithm,
                            "tests": oaep_cases(rsa_key, algorithm)}
                           for algorithm in HASHES]}
    (HERE / "rsa_oaep_2048.json").write_text(json.dumps(oaep, indent=1) + "\n")
    groups = []
    for spec, curve in (("EC_P256", ec.SECP256R1()), ("EC_P256K", ec.SECP256K1())):
        key = ec.generate_private_key(curve)
        spki = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        groups.append({"keySpec": spec, "publicKeySpki": spki.hex(),
                       "digest": hashlib.sha256(b"wycheproof-style").hexdigest(),
                       "tests": ecdsa_cases(key, spec)})
    ecdsa = {"description": __doc__.splitlines()[0], "algorithm": "ECDSA_SHA_256",
             "testGroups": groups}
    (HERE / "ecdsa_sha256.json").write_text(json.dumps(ecdsa, indent=1) + "\n")


if __name__ == "__main__":
    main()
