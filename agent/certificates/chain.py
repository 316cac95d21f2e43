"""Parse uploaded certificates and build the chain from leaf to root.

``build_path`` takes the uploaded certificate and a pool of candidate
issuers in any order, drops duplicates and certificates that are not on
the path, and returns the path leaf first, up to a self-signed root. A
missing issuer raises Certificate.ChainIncomplete naming it. Each link
must verify: the issuer's name, its signature over the child (RSA and
ECDSA by cryptography, SM2-with-SM3 by ``keystore.sm2``), its CA flag,
key usage and path length, and the name constraints in ``constraints``.

Validity is no reason to reject a chain. ``validity`` returns whether
every certificate of a path is valid at a given time, so the service
reports it and refuses to sign outside it.
"""

from __future__ import annotations

import datetime

from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from agent.certificates import constraints
from agent.keystore import sm2
from client.errors import (
    CertificateChainIncompleteError, CertificateChainInvalidError,
    CertificateMalformedError,
)

SM2_CURVE = "1.2.156.10197.1.301"
SM2_WITH_SM3 = "1.2.156.10197.1.501"
# A chain longer than this is refused rather than searched.
MAX_PATH_LENGTH = 10
VALID = "VALID"
EXPIRED = "EXPIRED"
NOT_YET_VALID = "NOT_YET_VALID"


def load_certificates(text: str, parameter: str) -> list[x509.Certificate]:
    """Load every certificate of a PEM text.

    Raises:
        CertificateMalformedError: no certificate, or one that does not
            parse; the message names ``parameter``.
    """
    try:
        certificates = x509.load_pem_x509_certificates(text.encode("utf-8"))
    except (ValueError, UnicodeEncodeError) as exc:
        raise CertificateMalformedError(
            f"{parameter} is not PEM certificate text: {exc}") from None
    check_parsed(certificates, parameter)
    return certificates


def load_certificate(text: str, parameter: str) -> x509.Certificate:
    """Load the one certificate of a PEM text."""
    certificates = load_certificates(text, parameter)
    if len(certificates) != 1:
        raise CertificateMalformedError(
            f"{parameter} contains {len(certificates)} certificates; give one, and "
            "its issuers in CertificateChain.")
    return certificates[0]


def check_parsed(certificates: list[x509.Certificate], parameter: str) -> None:
    """Parse every field the agent reads, so a broken certificate fails now.

    cryptography parses names, extensions and dates lazily.

    Raises:
        CertificateMalformedError: a field does not parse; the message
            names ``parameter``.
    """
    for certificate in certificates:
        try:
            certificate.subject.rfc4514_string()
            certificate.issuer.rfc4514_string()
            list(certificate.extensions)
            certificate.not_valid_before_utc
            certificate.not_valid_after_utc
            subject_public_key_info(certificate)
        except (ValueError, x509.DuplicateExtension,
                x509.UnsupportedGeneralNameType) as exc:
            raise CertificateMalformedError(
                f"{parameter} has a certificate that does not parse: {exc}") from None


def to_pem(path: list[x509.Certificate]) -> str:
    """Return certificates as one PEM bundle, in order."""
    return "".join(c.public_bytes(serialization.Encoding.PEM).decode("ascii")
                   for c in path)


def subject_public_key_info(certificate: x509.Certificate) -> bytes:
    """Return the certificate's SubjectPublicKeyInfo DER, whatever its curve."""
    der = certificate.public_bytes(serialization.Encoding.DER)
    parsed = asn1_x509.Certificate.load(der)
    return parsed["tbs_certificate"]["subject_public_key_info"].dump()


def normalized_public_key(spki: bytes) -> bytes:
    """Return SubjectPublicKeyInfo DER re-encoded, so equal keys compare equal.

    Raises:
        ValueError: the bytes are no public key of a supported kind.
    """
    if _is_sm2(spki):
        return sm2.public_key_der(sm2.load_public_key(spki))
    try:
        key = serialization.load_der_public_key(spki)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise ValueError(str(exc)) from None
    return key.public_bytes(serialization.Encoding.DER,
                            serialization.PublicFormat.SubjectPublicKeyInfo)


def _is_sm2(spki: bytes) -> bool:
    algorithm = asn1_x509.PublicKeyInfo.load(spki)["algorithm"]
    return (algorithm["algorithm"].dotted == "1.2.840.10045.2.1"
            and algorithm["parameters"].chosen.dotted == SM2_CURVE)


def signed_by(child: x509.Certificate, issuer: x509.Certificate) -> bool:
    """Return whether ``issuer`` is named as and signed ``child``."""
    if child.issuer != issuer.subject:
        return False
    issuer_spki = subject_public_key_info(issuer)
    if _is_sm2(issuer_spki):
        if child.signature_algorithm_oid.dotted_string != SM2_WITH_SM3:
            return False
        digest = sm2.message_digest(issuer_spki, child.tbs_certificate_bytes)
        try:
            return sm2.verify_digest(issuer_spki, digest, child.signature)
        except ValueError:
            return False
    try:
        child.verify_directly_issued_by(issuer)
    except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
        return False
    return True


def is_self_signed(certificate: x509.Certificate) -> bool:
    """Return whether a certificate names and verifies itself as issuer."""
    return signed_by(certificate, certificate)


def build_path(leaf: x509.Certificate,
               pool: list[x509.Certificate]) -> list[x509.Certificate]:
    """Return the path from ``leaf`` to a self-signed root, leaf first.

    Raises:
        CertificateChainIncompleteError: the pool lacks an issuer.
        CertificateChainInvalidError: an issuer's signature does not
            verify, or the path is longer than ``MAX_PATH_LENGTH``.
    """
    remaining = _distinct([c for c in pool if c != leaf])
    path = [leaf]
    current = leaf
    while not is_self_signed(current):
        if len(path) >= MAX_PATH_LENGTH:
            raise CertificateChainInvalidError(
                f"The chain is longer than {MAX_PATH_LENGTH} certificates.")
        named = [c for c in remaining if c.subject == current.issuer]
        issuer = next((c for c in named if signed_by(current, c)), None)
        if issuer is None:
            raise _missing_issuer(current, bool(named))
        path.append(issuer)
        remaining.remove(issuer)
        current = issuer
    check_path(path)
    return path


def _distinct(certificates: list[x509.Certificate]) -> list[x509.Certificate]:
    distinct: list[x509.Certificate] = []
    for certificate in certificates:
        if certificate not in distinct:
            distinct.append(certificate)
    return distinct


def _missing_issuer(child: x509.Certificate, named: bool) -> Exception:
    issuer = child.issuer.rfc4514_string()
    subject = child.subject.rfc4514_string()
    if named:
        return CertificateChainInvalidError(
            f"The chain has a certificate for {issuer!r}, but its key does not "
            f"verify the signature of {subject!r}.")
    return CertificateChainIncompleteError(
        f"The chain has no certificate for the issuer {issuer!r} of {subject!r}; "
        "include every CA certificate up to the self-signed root.")


def check_path(path: list[x509.Certificate]) -> None:
    """Check the CA rules and name constraints of a leaf-first path.

    Raises:
        CertificateChainInvalidError: an issuer is not a CA, may not sign
            certificates, has a path length below the CAs under it, or
            has name constraints that a certificate under it violates.
    """
    for index, issuer in enumerate(path[1:], start=1):
        _check_issuer(issuer, intermediates_below=index - 1)
        problem = constraints.violation(issuer, path[:index])
        if problem is not None:
            raise CertificateChainInvalidError(problem)


def _check_issuer(issuer: x509.Certificate, intermediates_below: int) -> None:
    subject = issuer.subject.rfc4514_string()
    basic = _extension(issuer, x509.BasicConstraints)
    if basic is None and issuer.version == x509.Version.v1 and is_self_signed(issuer):
        return  # an X.509 v1 root has no extensions at all
    if basic is None or not basic.ca:
        raise CertificateChainInvalidError(
            f"The issuer {subject!r} is not a CA certificate (basicConstraints).")
    if basic.path_length is not None and intermediates_below > basic.path_length:
        raise CertificateChainInvalidError(
            f"The issuer {subject!r} allows {basic.path_length} intermediate CAs "
            f"below it; the chain has {intermediates_below}.")
    usage = _extension(issuer, x509.KeyUsage)
    if usage is not None and not usage.key_cert_sign:
        raise CertificateChainInvalidError(
            f"The key usage of the issuer {subject!r} does not allow certificate "
            "signing.")


def _extension(certificate: x509.Certificate, kind):
    try:
        return certificate.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


def validity(path: list[x509.Certificate],
             moment: datetime.datetime) -> tuple[str, str | None]:
    """Return the validity status of a path at ``moment`` and why.

    Returns:
        ``(VALID, None)``, or ``(EXPIRED | NOT_YET_VALID, message)`` for
        the first certificate, leaf first, that is outside its period.
    """
    for certificate in path:
        subject = certificate.subject.rfc4514_string()
        if moment < certificate.not_valid_before_utc:
            return NOT_YET_VALID, (
                f"The certificate {subject!r} is not valid before "
                f"{certificate.not_valid_before_utc.isoformat()}.")
        if moment > certificate.not_valid_after_utc:
            return EXPIRED, (
                f"The certificate {subject!r} expired at "
                f"{certificate.not_valid_after_utc.isoformat()}.")
    return VALID, None

