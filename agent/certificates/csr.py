"""PKCS#10 certificate requests signed by a keystore key pair.

The private key never leaves the keystore, so no library can sign the
request for us: cryptography's builder signs only with a private key
object of its own, and it writes that key's public key into the
request. So the CertificationRequestInfo is assembled with asn1crypto
(the ASN.1 library python-pkcs11 already depends on), with the subject
as cryptography encodes it and the keystore's SubjectPublicKeyInfo as
is. Its DER is hashed once and the digest signed by the keystore:

- RSA_2048: sha256WithRSAEncryption (PKCS#1 v1.5, NULL parameters);
- EC_P256: ecdsa-with-SHA256, DER SEQUENCE {r, s};
- EC_SM2: SM2-with-SM3 (1.2.156.10197.1.501) over e = SM3(Z_A || info)
  with the default user id, as ``keystore.sm2.message_digest`` computes.

Each request is verified before it is returned: cryptography checks the
RSA and ECDSA ones, and the SM2 library the SM2 ones.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib

from asn1crypto import csr as asn1_csr
from asn1crypto import keys as asn1_keys
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from agent.keystore import asymmetric, sm2
from agent.keystore.base import KeyMaterial, Keystore
from client.errors import InternalFailureError


@dataclasses.dataclass(frozen=True)
class RequestSignature:
    """The request signature of a key spec: ASN.1 and keystore algorithms, API name."""

    asn1_algorithm: str
    keystore_algorithm: str
    name: str


SIGNATURES = {
    "RSA_2048": RequestSignature("sha256_rsa", asymmetric.RSA_PKCS1_SHA_256,
                                 "RSA2048-SHA256"),
    "EC_P256": RequestSignature("sha256_ecdsa", asymmetric.ECDSA_SHA_256,
                                "ECDSA-SHA256"),
    "EC_SM2": RequestSignature("1.2.156.10197.1.501", asymmetric.SM2DSA, "SM2-SM3"),
}
KEY_SPECS = tuple(SIGNATURES)


def signing_digest(key_spec: str, spki: bytes, message: bytes) -> bytes:
    """Return the 32-byte digest that the key spec's algorithm signs."""
    if key_spec == "EC_SM2":
        return sm2.message_digest(spki, message)
    return hashlib.sha256(message).digest()


def pem(der: bytes, label: str) -> str:
    """Return DER as PEM text with 64-character lines (RFC 7468)."""
    body = base64.b64encode(der).decode("ascii")
    lines = [body[start:start + 64] for start in range(0, len(body), 64)]
    return "\n".join([f"-----BEGIN {label}-----", *lines, f"-----END {label}-----", ""])


def request_info(subject: x509.Name, spki: bytes,
                 alternative_names: list[x509.GeneralName]) -> bytes:
    """Return the DER of a CertificationRequestInfo (RFC 2986)."""
    attributes = []
    if alternative_names:
        extension_value = x509.SubjectAlternativeName(alternative_names).public_bytes()
        attributes.append({
            "type": "extension_request",
            "values": [[{
                "extn_id": "subject_alt_name", "critical": False,
                "extn_value": asn1_x509.GeneralNames.load(extension_value),
            }]],
        })
    info = asn1_csr.CertificationRequestInfo({
        "version": "v1",
        "subject": asn1_x509.Name.load(subject.public_bytes()),
        "subject_pk_info": asn1_keys.PublicKeyInfo.load(spki),
        "attributes": attributes,
    })
    return info.dump()


async def build_request(keystore: Keystore, material: KeyMaterial, subject: x509.Name,
                        alternative_names: list[x509.GeneralName]) -> str:
    """Return a PEM request for the key pair of ``material``, signed by it.

    Raises:
        InternalFailureError: the signed request does not verify, which
            means the keystore signed wrongly; nothing is returned.
    """
    signature_kind = SIGNATURES[material.key_spec]
    info_der = request_info(subject, material.public_key, alternative_names)
    digest = signing_digest(material.key_spec, material.public_key, info_der)
    signature = await keystore.sign(material, signature_kind.keystore_algorithm, digest)
    request = asn1_csr.CertificationRequest({
        "certification_request_info": asn1_csr.CertificationRequestInfo.load(info_der),
        "signature_algorithm": {"algorithm": signature_kind.asn1_algorithm},
        "signature": signature,
    })
    der = request.dump()
    _check_request(material, der, digest, signature)
    return pem(der, "CERTIFICATE REQUEST")


def _check_request(material: KeyMaterial, der: bytes, digest: bytes,
                   signature: bytes) -> None:
    if material.key_spec == "EC_SM2":
        valid = sm2.verify_digest(material.public_key, digest, signature)
    else:
        loaded = x509.load_der_x509_csr(der)
        expected = serialization.load_der_public_key(material.public_key)
        valid = loaded.is_signature_valid and loaded.public_key() == expected
    if not valid:
        error = InternalFailureError()
        # The detail reaches the operator's log line, never the caller.
        detail = "the keystore signed a certificate request that does not verify"
        error.detail = detail  # type: ignore[attr-defined]
        raise error
