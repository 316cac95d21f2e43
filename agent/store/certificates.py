"""Records and store interface of the Certificates Manager.

A certificate row carries its key pair the way a key version does: the
private key sealed by the keystore (``wrap_format``, ``wrapped``) and
its public key as SubjectPublicKeyInfo DER. The certificate id is the
version id that the sealing binds. ``chain`` is the uploaded
certificate and its issuers up to a self-signed root, as PEM, leaf
first. Updates are compare-and-swap on ``revision``, as for keys. Tags
use the shared tags table with ``RESOURCE_CERTIFICATE``.
"""

from __future__ import annotations

import abc
import dataclasses

RESOURCE_CERTIFICATE = "certificate"

# Certificate statuses, as the Certificates Manager API names them.
PENDING = "PENDING"
ACTIVE = "ACTIVE"
INACTIVE = "INACTIVE"
REVOKED = "REVOKED"


@dataclasses.dataclass(frozen=True)
class CertificateRecord:
    """A certificate, its key pair and its chain.

    ``subject`` is the RFC 4514 text of the subject, ``csr`` the PEM
    request made at creation (empty for an imported certificate), and
    ``chain`` None until a certificate is uploaded.
    """

    certificate_id: str
    keystore: str
    key_spec: str
    protection_level: str
    wrap_format: int
    wrapped: bytes = dataclasses.field(repr=False)
    public_key: bytes
    subject: str
    subject_alternative_names: tuple[str, ...]
    exportable: bool
    status: str
    csr: str
    chain: str | None
    creator: str
    created_at: str
    updated_at: str
    revision: int = 0


class CertificateStore(abc.ABC):
    """Certificates with their key pairs; see the module docstring."""

    @abc.abstractmethod
    async def insert_certificate(self, certificate: CertificateRecord,
                                 tags: dict[str, str]) -> None:
        """Insert a new certificate with its tags.

        Raises:
            DuplicateError: the certificate id is taken.
        """

    @abc.abstractmethod
    async def update_certificate(self, certificate: CertificateRecord
                                 ) -> CertificateRecord:
        """Write ``certificate`` if the stored revision still matches.

        Returns:
            The stored record, with ``revision`` incremented.
        Raises:
            ConflictError: the certificate changed or vanished since it
                was read.
        """

    @abc.abstractmethod
    async def get_certificate(self, certificate_id: str) -> CertificateRecord | None:
        """Return the certificate or None."""

    @abc.abstractmethod
    async def list_certificates(self, offset: int, limit: int,
                                keystores: tuple[str, ...] = ()
                                ) -> tuple[list[CertificateRecord], int]:
        """Return one page of certificates, oldest first, and the total.

        With ``keystores``, only certificates of those keystores count.
        """

    @abc.abstractmethod
    async def delete_certificate(self, certificate_id: str) -> bool:
        """Delete a certificate, its key pair and its tags at once.

        Returns False if it does not exist.
        """
