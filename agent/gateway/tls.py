"""TLS for the gateway: a certificate the agent makes for itself, if asked.

With ``[gateway] tls = true`` and no certificate configured, the agent
creates a self-signed ECDSA P-256 certificate for ``localhost`` and
127.0.0.1 (and ::1) under ``<data_dir>/gateway-tls/`` at its first start
and reuses it afterwards. The private key file is created with mode
0600. Clients trust that certificate as their CA: ``ca`` for the
OpenAPI SDK, ``ca_file_path`` for the dedicated-instance SDK.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

CERT_NAME = "cert.pem"
KEY_NAME = "key.pem"
VALIDITY = datetime.timedelta(days=3650)


def ensure_certificate(directory: Path) -> tuple[Path, Path]:
    """Return the certificate and key paths, creating them if missing.

    Raises:
        OSError: the directory or files cannot be written.
    """
    cert_path, key_path = directory / CERT_NAME, directory / KEY_NAME
    if cert_path.exists() and key_path.exists():
        return cert_path, key_path
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    key_pem = key.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    descriptor = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as stream:
        stream.write(key_pem)
    cert_path.write_bytes(self_signed(key).public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


def self_signed(key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    """Return a self-signed CA certificate for localhost and loopback."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kms-agent gateway")])
    now = datetime.datetime.now(datetime.timezone.utc)
    names = [x509.DNSName("localhost"),
             x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
             x509.IPAddress(ipaddress.ip_address("::1"))]
    return (x509.CertificateBuilder()
            .subject_name(name).issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + VALIDITY)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0),
                           critical=True)
            .sign(key, hashes.SHA256()))


def server_context(cert_path: Path, key_path: Path) -> ssl.SSLContext:
    """Return a TLS 1.2+ server context with the certificate and key.

    Raises:
        OSError, ssl.SSLError: the files cannot be read or do not match.
    """
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_path, key_path)
    return context
