"""Typed wrappers of the Certificates Manager operations.

``CertificateOperations`` is a base of ``client.sync.KmsOperations``, so
both clients have these methods. Like the other wrappers they build the
PascalCase parameters, leave out arguments that are None, and return
what ``call`` returns. A certificate chain may be given as one PEM text
or as a list of PEM texts, which are joined in order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Generic, TypeVar

ResultT = TypeVar("ResultT")


def _present(**params: Any) -> dict[str, Any]:
    return {name: value for name, value in params.items() if value is not None}


def _tags(tags: Mapping[str, str] | list[dict[str, str]] | None) -> Any:
    if isinstance(tags, Mapping):
        return [{"TagKey": key, "TagValue": value} for key, value in tags.items()]
    return tags


def join_pem(chain: str | Sequence[str] | None) -> str | None:
    """Return PEM texts joined into one, each ending with a newline."""
    if chain is None or isinstance(chain, str):
        return chain
    return "".join(text if text.endswith("\n") else text + "\n" for text in chain)


class CertificateOperations(Generic[ResultT]):
    """CreateCertificate, UploadCertificate and the other certificate calls."""

    def call(self, operation: str, **params: Any) -> ResultT:
        raise NotImplementedError

    def create_certificate(
            self, key_spec: str, subject: str, *,
            subject_alternative_names: Sequence[str] | None = None,
            exportable_private_key: bool | None = None,
            tags: Mapping[str, str] | list[dict[str, str]] | None = None) -> ResultT:
        """Create a key pair and its request; the result has ``CertificateId``
        and ``Csr``. ``subject`` is RFC 4514 text with CN, C, O and OU."""
        names = (list(subject_alternative_names)
                 if subject_alternative_names is not None else None)
        return self.call("CreateCertificate", **_present(
            KeySpec=key_spec, Subject=subject, SubjectAlternativeNames=names,
            ExportablePrivateKey=exportable_private_key, Tags=_tags(tags)))

    def upload_certificate(self, certificate_id: str, certificate: str,
                           certificate_chain: str | Sequence[str] | None = None
                           ) -> ResultT:
        """Upload the issued certificate (PEM) and its issuers, in any order."""
        return self.call("UploadCertificate", **_present(
            CertificateId=certificate_id, Certificate=certificate,
            CertificateChain=join_pem(certificate_chain)))

    def get_certificate(self, certificate_id: str) -> ResultT:
        """Return ``Certificate``, ``CertificateChain`` and ``Csr`` as PEM."""
        return self.call("GetCertificate", CertificateId=certificate_id)

    def describe_certificate(self, certificate_id: str) -> ResultT:
        """Return the certificate's subject, issuer, validity, status and tags."""
        return self.call("DescribeCertificate", CertificateId=certificate_id)

    def list_certificates(self, *, page_number: int | None = None,
                          page_size: int | None = None) -> ResultT:
        """List certificates, one page at a time."""
        return self.call("ListCertificates", **_present(
            PageNumber=page_number, PageSize=page_size))

    def update_certificate_status(self, certificate_id: str, status: str) -> ResultT:
        """Set ACTIVE, INACTIVE or REVOKED (final: it then only verifies)."""
        return self.call("UpdateCertificateStatus", CertificateId=certificate_id,
                         Status=status)

    def delete_certificate(self, certificate_id: str) -> ResultT:
        """Delete the certificate, its key pair and chain; irreversible."""
        return self.call("DeleteCertificate", CertificateId=certificate_id)

    def certificate_private_key_sign(
            self, certificate_id: str, algorithm: str, message: bytes, *,
            message_type: str | None = None,
            allow_outside_validity: bool | None = None) -> ResultT:
        """Sign a RAW message (up to 4 KiB) or a DIGEST; see ``SignatureValue``."""
        return self.call("CertificatePrivateKeySign", **_present(
            CertificateId=certificate_id, Algorithm=algorithm, Message=message,
            MessageType=message_type, AllowOutsideValidity=allow_outside_validity))

    def certificate_public_key_verify(
            self, certificate_id: str, algorithm: str, message: bytes,
            signature_value: bytes, *, message_type: str | None = None) -> ResultT:
        """Verify a signature; the result's ``SignatureValid`` is a bool."""
        return self.call("CertificatePublicKeyVerify", **_present(
            CertificateId=certificate_id, Algorithm=algorithm, Message=message,
            MessageType=message_type, SignatureValue=signature_value))

    def certificate_public_key_encrypt(self, certificate_id: str, algorithm: str,
                                       plaintext: str | bytes) -> ResultT:
        """Encrypt to the certificate's public key; see ``CiphertextBlob``."""
        return self.call("CertificatePublicKeyEncrypt", CertificateId=certificate_id,
                         Algorithm=algorithm, Plaintext=plaintext)

    def certificate_private_key_decrypt(self, certificate_id: str, algorithm: str,
                                        ciphertext_blob: bytes) -> ResultT:
        """Decrypt with the certificate's private key; see ``Plaintext``."""
        return self.call("CertificatePrivateKeyDecrypt",
                         CertificateId=certificate_id, Algorithm=algorithm,
                         CiphertextBlob=ciphertext_blob)

    def export_certificate(self, certificate_id: str, export_format: str,
                           passphrase: str | None = None) -> ResultT:
        """Export an exportable key with its certificate as PEM or PKCS12."""
        return self.call("ExportCertificate", **_present(
            CertificateId=certificate_id, ExportFormat=export_format,
            Passphrase=passphrase))

    def import_certificate(
            self, pkcs12_blob: bytes, passphrase: str | None = None, *,
            exportable_private_key: bool | None = None,
            tags: Mapping[str, str] | list[dict[str, str]] | None = None) -> ResultT:
        """Import a key pair and chain from PKCS#12; see ``CertificateId``."""
        return self.call("ImportCertificate", **_present(
            PKCS12Blob=pkcs12_blob, Passphrase=passphrase,
            ExportablePrivateKey=exportable_private_key, Tags=_tags(tags)))
