"""PKCS#12 and PEM forms of a certificate with its private key.

``export_pem`` writes the private key as PKCS#8 PEM. A passphrase, when
given, encrypts it with cryptography's or Tongsuo's best available PBES2
scheme. ``export_pkcs12`` writes a PKCS#12 file with the key, the
certificate and its issuers, encrypted with the passphrase, and
``open_pkcs12`` reads such a file for ImportCertificate.
cryptography 50 has no SM2 curve, so EC_SM2 keys export as PEM only and
cannot be imported from PKCS#12.
"""

from __future__ import annotations

import dataclasses

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from tongsuopy.crypto import serialization as sm_serialization

from client.errors import CertificateMalformedError, UnsupportedOperationError

PEM = "PEM"
PKCS12 = "PKCS12"
EXPORT_FORMATS = (PEM, PKCS12)


@dataclasses.dataclass(frozen=True)
class Pkcs12Contents:
    """The key pair and certificates of a PKCS#12 file, for ImportCertificate."""

    key_spec: str
    pkcs8: bytes = dataclasses.field(repr=False)
    certificate: x509.Certificate
    additional: list[x509.Certificate]


def export_pem(key_spec: str, pkcs8: bytes, passphrase: str | None) -> str:
    """Return the private key as PKCS#8 PEM, encrypted if ``passphrase`` is set."""
    if key_spec == "EC_SM2":
        key = sm_serialization.load_der_private_key(pkcs8, None)
        encryption = (sm_serialization.BestAvailableEncryption(passphrase.encode())
                      if passphrase else sm_serialization.NoEncryption())
        return key.private_bytes(sm_serialization.Encoding.PEM,
                                 sm_serialization.PrivateFormat.PKCS8,
                                 encryption).decode("ascii")
    key = serialization.load_der_private_key(pkcs8, None)
    encryption = (serialization.BestAvailableEncryption(passphrase.encode())
                  if passphrase else serialization.NoEncryption())
    return key.private_bytes(serialization.Encoding.PEM,
                             serialization.PrivateFormat.PKCS8,
                             encryption).decode("ascii")


def export_pkcs12(key_spec: str, pkcs8: bytes, path: list[x509.Certificate],
                  passphrase: str, friendly_name: str) -> bytes:
    """Return a PKCS#12 file of the key, ``path[0]`` and its issuers.

    Raises:
        UnsupportedOperationError: the key is EC_SM2.
    """
    if key_spec == "EC_SM2":
        raise UnsupportedOperationError(
            "EC_SM2 certificates export as PEM only; use ExportFormat PEM.")
    key = serialization.load_der_private_key(pkcs8, None)
    return pkcs12.serialize_key_and_certificates(
        friendly_name.encode("utf-8"), key, path[0], path[1:] or None,
        serialization.BestAvailableEncryption(passphrase.encode("utf-8")))


def open_pkcs12(blob: bytes, passphrase: str | None) -> Pkcs12Contents:
    """Read the key, certificate and other certificates of a PKCS#12 file.

    Raises:
        CertificateMalformedError: the file does not open, with this
            passphrase or at all, or lacks a key or a certificate.
        UnsupportedOperationError: the key is not RSA 2048 or EC P-256.
    """
    password = passphrase.encode("utf-8") if passphrase else None
    try:
        key, certificate, additional = pkcs12.load_key_and_certificates(blob, password)
    except (ValueError, TypeError):
        raise CertificateMalformedError(
            "PKCS12Blob cannot be opened: it is not PKCS#12, or the Passphrase "
            "is wrong.") from None
    if key is None or certificate is None:
        raise CertificateMalformedError(
            "PKCS12Blob must hold a private key and its certificate.")
    pkcs8 = key.private_bytes(serialization.Encoding.DER,
                              serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption())
    return Pkcs12Contents(_key_spec(key), pkcs8, certificate, list(additional))


def _key_spec(key) -> str:
    if isinstance(key, rsa.RSAPrivateKey) and key.key_size == 2048:
        return "RSA_2048"
    if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve,
                                                                  ec.SECP256R1):
        return "EC_P256"
    raise UnsupportedOperationError(
        "ImportCertificate takes RSA 2048-bit and EC P-256 keys; the PKCS#12 "
        "file holds another kind of key.")
