"""A small certificate authority for tests: a root, an intermediate, leaves.

Certificates are assembled with asn1crypto and signed with cryptography
(RSA, ECDSA P-256) or tongsuopy (SM2 with SM3), so the CA can issue for
an SM2 key that cryptography cannot load, and can itself be SM2. Each
extension value is encoded by cryptography. Nothing here uses agent
code, so the tests check the agent against an independent issuer.
"""

from __future__ import annotations

import datetime
import itertools

from asn1crypto import csr as asn1_csr
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID
from tongsuopy.crypto import hashes as sm_hashes
from tongsuopy.crypto import serialization as sm_serialization
from tongsuopy.crypto.asymciphers import ec as sm_ec

DAY = datetime.timedelta(days=1)
_SERIALS = itertools.count(1000)
_ALGORITHMS = {"rsa": "sha256_rsa", "ec": "sha256_ecdsa",
               "sm2": "1.2.156.10197.1.501"}


def name(common_name: str, organization: str = "Test CA") -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.COUNTRY_NAME, "CN"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ])


class Signer:
    """A CA private key of one kind: rsa, ec or sm2."""

    def __init__(self, kind: str):
        self.kind = kind
        if kind == "rsa":
            self.key = rsa.generate_private_key(65537, 2048)
        elif kind == "ec":
            self.key = ec.generate_private_key(ec.SECP256R1())
        else:
            self.key = sm_ec.generate_private_key(sm_ec.SM2())

    def spki(self) -> bytes:
        module = sm_serialization if self.kind == "sm2" else serialization
        return self.key.public_key().public_bytes(
            module.Encoding.DER, module.PublicFormat.SubjectPublicKeyInfo)

    def sign(self, data: bytes) -> bytes:
        if self.kind == "rsa":
            return self.key.sign(data, padding.PKCS1v15(), hashes.SHA256())
        if self.kind == "ec":
            return self.key.sign(data, ec.ECDSA(hashes.SHA256()))
        return self.key.sign(data, sm_ec.ECDSA(sm_hashes.SM3()))


def _extension(extension_id: str, value: x509.ExtensionType, critical: bool,
               spec) -> dict:
    return {"extn_id": extension_id, "critical": critical,
            "extn_value": spec.load(value.public_bytes())}


def _ca_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=False, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=True,
        crl_sign=True, encipher_only=False, decipher_only=False)


def make_certificate(subject: x509.Name, spki: bytes, issuer: x509.Name,
                     signer: Signer, not_before: datetime.datetime,
                     not_after: datetime.datetime, *, ca: bool = False,
                     path_length: int | None = None, sans=(),
                     constraints: x509.NameConstraints | None = None
                     ) -> x509.Certificate:
    """Return a certificate of ``spki`` signed by ``signer``."""
    extensions = [_extension("basic_constraints",
                             x509.BasicConstraints(ca, path_length if ca else None),
                             True, asn1_x509.BasicConstraints)]
    if ca:
        extensions.append(_extension("key_usage", _ca_usage(), True,
                                     asn1_x509.KeyUsage))
    if sans:
        extensions.append(_extension("subject_alt_name",
                                     x509.SubjectAlternativeName(list(sans)), False,
                                     asn1_x509.GeneralNames))
    if constraints is not None:
        extensions.append(_extension("name_constraints", constraints, True,
                                     asn1_x509.NameConstraints))
    algorithm = {"algorithm": _ALGORITHMS[signer.kind]}
    tbs = asn1_x509.TbsCertificate({
        "version": "v3", "serial_number": next(_SERIALS), "signature": algorithm,
        "issuer": asn1_x509.Name.load(issuer.public_bytes()),
        "validity": {"not_before": asn1_x509.Time({"utc_time": not_before}),
                     "not_after": asn1_x509.Time({"utc_time": not_after})},
        "subject": asn1_x509.Name.load(subject.public_bytes()),
        "subject_public_key_info": asn1_x509.PublicKeyInfo.load(spki),
        "extensions": extensions,
    })
    certificate = asn1_x509.Certificate({
        "tbs_certificate": tbs, "signature_algorithm": algorithm,
        "signature_value": signer.sign(tbs.dump()),
    })
    return x509.load_der_x509_certificate(certificate.dump())


def pem_of(*certificates: x509.Certificate) -> str:
    return "".join(c.public_bytes(serialization.Encoding.PEM).decode()
                   for c in certificates)


class TestAuthority:
    """A root and an intermediate (path length 0) of one key kind."""

    __test__ = False

    def __init__(self, now: datetime.datetime, kind: str = "ec",
                 constraints: x509.NameConstraints | None = None,
                 label: str = "Test"):
        self.now = now
        self.root_signer = Signer(kind)
        self.root_name = name(f"{label} Root")
        self.root = make_certificate(
            self.root_name, self.root_signer.spki(), self.root_name, self.root_signer,
            now - DAY, now + 3650 * DAY, ca=True)
        self.signer = Signer(kind)
        self.intermediate_name = name(f"{label} Intermediate")
        self.intermediate = make_certificate(
            self.intermediate_name, self.signer.spki(), self.root_name,
            self.root_signer, now - DAY, now + 1825 * DAY, ca=True, path_length=0,
            constraints=constraints)

    def chain_pem(self) -> str:
        """Return the intermediate and root as one PEM text."""
        return pem_of(self.intermediate, self.root)

    def issue(self, csr_pem: str, *, days: int = 90, starts: int = -1,
              subject: x509.Name | None = None, sans=None) -> x509.Certificate:
        """Issue a leaf for a PEM request, copying its subject and names.

        ``starts`` is the first valid day relative to ``now``.
        """
        request = asn1_csr.CertificationRequest.load(
            x509.load_pem_x509_csr(csr_pem.encode()).public_bytes(
                serialization.Encoding.DER))
        info = request["certification_request_info"]
        parsed = x509.load_pem_x509_csr(csr_pem.encode())
        if sans is None:
            try:
                sans = parsed.extensions.get_extension_for_class(
                    x509.SubjectAlternativeName).value
            except x509.ExtensionNotFound:
                sans = ()
        return make_certificate(
            subject or parsed.subject, info["subject_pk_info"].dump(),
            self.intermediate_name, self.signer, self.now + starts * DAY,
            self.now + (starts + days) * DAY, sans=sans)
