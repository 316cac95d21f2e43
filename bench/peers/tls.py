"""Throwaway TLS certificates for the PyKMIP server and its clients.

One run makes a CA, a server certificate for 127.0.0.1 and a client
certificate, all with P-256 keys, valid for one day, written unencrypted
into the run's temporary directory and removed with it.
"""

from __future__ import annotations

import dataclasses
import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = datetime.timedelta(days=1)
# Tolerates a small clock difference between issuing and checking.
BACKDATE = datetime.timedelta(minutes=5)


@dataclasses.dataclass(frozen=True)
class Certificates:
    """Paths of the PEM files of one run."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def make_certificates(directory: Path) -> Certificates:
    """Write a CA and a server and a client certificate into ``directory``."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("kms-bench CA")
    ca = (_builder(ca_name, ca_name, ca_key)
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .sign(ca_key, hashes.SHA256()))
    _write_pem(directory / "ca.crt", ca.public_bytes(serialization.Encoding.PEM))
    paths = {}
    for role, usage in (("server", ExtendedKeyUsageOID.SERVER_AUTH),
                        ("client", ExtendedKeyUsageOID.CLIENT_AUTH)):
        paths[role] = _issue(directory, role, usage, ca, ca_key)
    return Certificates(directory / "ca.crt", *paths["server"], *paths["client"])


def _issue(directory: Path, role: str, usage, ca: x509.Certificate,
           ca_key: ec.EllipticCurvePrivateKey) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    loopback = x509.IPAddress(ipaddress.ip_address("127.0.0.1"))
    certificate = (_builder(_name(f"kms-bench {role}"), ca.subject, key)
                   .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
                   .add_extension(x509.SubjectAlternativeName([loopback]),
                                  critical=False)
                   .sign(ca_key, hashes.SHA256()))
    cert_path, key_path = directory / f"{role}.crt", directory / f"{role}.key"
    _write_pem(cert_path, certificate.public_bytes(serialization.Encoding.PEM))
    _write_pem(key_path, key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    return cert_path, key_path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _builder(subject: x509.Name, issuer: x509.Name,
             key: ec.EllipticCurvePrivateKey) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.timezone.utc)
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE).not_valid_after(now + VALIDITY))


def _write_pem(path: Path, data: bytes) -> None:
    path.touch(mode=0o600)
    path.write_bytes(data)
