"""The DescribeCertificate, GetCertificate and ListCertificates replies.

Fields follow the Certificates Manager API. A PENDING certificate shows
the subject and alternative names it was requested with. An uploaded one
shows those of its certificate, with its issuer, serial number and
validity. ``ValidityStatus`` (an agent field) is VALID, EXPIRED or
NOT_YET_VALID for the certificate and its issuers at the service clock's
time, and ``ValidityMessage`` names the certificate outside its period.
``SignatureAlgorithm`` names how the certificate's key signs: its
requests, and CertificatePrivateKeySign by default.
"""

from __future__ import annotations

from typing import Any

from asn1crypto import keys as asn1_keys
from cryptography import x509

from agent.certificates import chain, csr
from agent.certificates.service import CertificateService, leaf_alternative_names
from agent.keystore import asymmetric
from agent.store.certificates import CertificateRecord
from agent.store.records import format_time


def _key_identifier(record: CertificateRecord,
                    leaf: x509.Certificate | None) -> str:
    if leaf is not None:
        try:
            extension = leaf.extensions.get_extension_for_class(
                x509.SubjectKeyIdentifier)
            return extension.value.digest.hex()
        except x509.ExtensionNotFound:
            pass
    # RFC 5280 method 1: SHA-1 of the subjectPublicKey bit string.
    return asn1_keys.PublicKeyInfo.load(record.public_key).sha1.hex()


def _certificate_fields(service: CertificateService, record: CertificateRecord,
                        path: list[x509.Certificate]) -> dict[str, Any]:
    leaf = path[0]
    status, message = chain.validity(path, service.clock.now())
    fields: dict[str, Any] = {
        "Subject": leaf.subject.rfc4514_string(),
        "Issuer": leaf.issuer.rfc4514_string(),
        "SubjectAlternativeNames": leaf_alternative_names(leaf),
        "NotBefore": format_time(leaf.not_valid_before_utc),
        "NotAfter": format_time(leaf.not_valid_after_utc),
        "Serial": format(leaf.serial_number, "x"),
        "ValidityStatus": status,
    }
    if message is not None:
        fields["ValidityMessage"] = message
    return fields


def describe(service: CertificateService, record: CertificateRecord,
             tags: dict[str, str]) -> dict[str, Any]:
    """Return the DescribeCertificate reply for a certificate."""
    path = service.path(record)
    reply: dict[str, Any] = {
        "CertificateId": record.certificate_id, "Arn": service.arn(record),
        "Subject": record.subject,
        "SubjectAlternativeNames": list(record.subject_alternative_names),
        "SubjectKeyIdentifier": _key_identifier(record, path[0] if path else None),
        "SubjectPublicKey": asymmetric.public_key_pem(record.public_key),
        "KeySpec": record.key_spec, "ProtectionLevel": record.protection_level,
        "SignatureAlgorithm": csr.SIGNATURES[record.key_spec].name,
        "Status": record.status, "ExportablePrivateKey": record.exportable,
        "CreatedAt": record.created_at, "UpdatedAt": record.updated_at,
        "DKMSInstanceId": record.keystore,
        "Tags": {"Tag": [{"TagKey": k, "TagValue": v} for k, v in tags.items()]},
    }
    if path:
        reply.update(_certificate_fields(service, record, path))
    return reply


def get_reply(record: CertificateRecord, path: list[x509.Certificate]
              ) -> dict[str, Any]:
    """Return the GetCertificate reply: the certificate, its chain and request."""
    return {
        "CertificateId": record.certificate_id,
        "Certificate": chain.to_pem(path[:1]),
        "CertificateChain": chain.to_pem(path[1:]),
        "Csr": record.csr,
    }


def list_entry(service: CertificateService, record: CertificateRecord
               ) -> dict[str, Any]:
    """Return one entry of the ListCertificates reply."""
    return {"CertificateId": record.certificate_id, "Arn": service.arn(record),
            "Subject": record.subject, "KeySpec": record.key_spec,
            "Status": record.status}
