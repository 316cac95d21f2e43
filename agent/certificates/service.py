"""The Certificates Manager: certificates whose key pairs live in a keystore.

CreateCertificate makes a key pair in a keystore, at HSM level wherever
the keystore can (RSA_2048 and EC_P256 in a token; EC_SM2 is always
SOFTWARE), and returns a request signed by it (``csr``). The certificate
starts PENDING; UploadCertificate checks the issued certificate against
the key pair and its chain (``chain``) and makes it ACTIVE. Statuses:
ACTIVE uses the key, INACTIVE does nothing until reactivated, REVOKED is
final and only verifies signatures. ImportCertificate takes a key pair
and chain from PKCS#12 instead. Cryptography with the key is in
``crypto``, the operations in ``ops``.

Pure domain logic: the store, keystores and clock are passed in, errors
are ``client.errors`` types, and writes are compare-and-swap on the
record's revision, retried on a lost race.
"""

from __future__ import annotations

import dataclasses
import uuid
from typing import Callable

from cryptography import x509

from agent.certificates import bundle, chain, csr, names
from agent.context import Clock
from agent.keystore.base import HSM, SOFTWARE, KeyMaterial, Keystore
from agent.keystore.key_transfer import pair_public_key
from agent.keystore.unavailable import UnavailableKeystore
from agent.store.base import ConflictError, Store
from agent.store.certificates import (
    ACTIVE, INACTIVE, PENDING, REVOKED, CertificateRecord,
)
from agent.store.records import format_time
from client.errors import (
    CertificateKeyMismatchError, CertificateNotFoundError, CertificateStatusError,
    InternalFailureError, InvalidParameterError, ServiceUnavailableError,
    UnsupportedOperationError,
)

STATUSES = (ACTIVE, INACTIVE, REVOKED)
UPLOAD_STATUSES = (PENDING, ACTIVE, INACTIVE)
_UPDATE_ATTEMPTS = 5


def require_status(record: CertificateRecord, allowed: tuple[str, ...],
                   operation: str) -> None:
    """Raise CertificateStatusError unless the record's status is allowed."""
    if record.status in allowed:
        return
    hint = {
        PENDING: "upload its certificate first",
        INACTIVE: "set it ACTIVE first",
        REVOKED: "a revoked certificate only verifies signatures",
    }.get(record.status, "")
    raise CertificateStatusError(
        f"The certificate {record.certificate_id} is {record.status}, and "
        f"{operation} needs {' or '.join(allowed)}; {hint}.")


class CertificateService:
    """Certificates over one store and the keystores of the Key Service."""

    def __init__(self, store: Store, keystores: dict[str, Keystore],
                 default_keystore: str, clock: Clock, region: str):
        self.store = store
        self.keystores = keystores
        self.default_keystore = default_keystore
        self.clock = clock
        self.region = region

    @classmethod
    def from_keys(cls, keys) -> CertificateService:
        """Build the service on the store, keystores and clock of a KeyService."""
        return cls(keys.store, keys.keystores, keys.default_keystore, keys.clock,
                   keys.region)

    def now(self) -> str:
        """Return the current time as an API timestamp."""
        return format_time(self.clock.now())

    def arn(self, record: CertificateRecord) -> str:
        """Return acs:kms:<region>:<keystore>:certificate/<id>."""
        return (f"acs:kms:{self.region}:{record.keystore}:certificate/"
                f"{record.certificate_id}")

    # --- lookup and keystores ----------------------------------------------

    async def get(self, certificate_id: str) -> CertificateRecord:
        """Return a certificate by id.

        Raises:
            CertificateNotFoundError: no certificate has that id.
        """
        record = await self.store.get_certificate(certificate_id)
        if record is None:
            raise CertificateNotFoundError(
                f"The certificate {certificate_id!r} is not found.")
        return record

    def keystore_of(self, record: CertificateRecord) -> Keystore:
        """Return the keystore that contains a certificate's key pair."""
        keystore = self.keystores.get(record.keystore)
        if keystore is None:
            raise InternalFailureError()
        if isinstance(keystore, UnavailableKeystore):
            raise ServiceUnavailableError(
                f"The keystore {record.keystore} is unavailable; try again later.")
        return keystore

    @staticmethod
    def material(record: CertificateRecord) -> KeyMaterial:
        """Return the sealed key pair of a certificate for the keystore."""
        return KeyMaterial(record.certificate_id, record.key_spec,
                           record.protection_level, record.wrap_format,
                           record.wrapped, record.public_key)

    @staticmethod
    def path(record: CertificateRecord) -> list[x509.Certificate]:
        """Return the stored certificate and its issuers, leaf first."""
        if record.chain is None:
            return []
        return x509.load_pem_x509_certificates(record.chain.encode("ascii"))

    def _new_pair_keystore(self, name: str | None, key_spec: str
                           ) -> tuple[str, Keystore, str]:
        name = name or self.default_keystore
        keystore = self.keystores.get(name)
        if keystore is None:
            raise InvalidParameterError(f"DKMSInstanceId {name!r} is not a keystore.")
        if isinstance(keystore, UnavailableKeystore):
            raise ServiceUnavailableError(
                f"The keystore {name} is unavailable; try again later.")
        if keystore.supports_spec(key_spec, HSM):
            return name, keystore, HSM
        if keystore.supports_spec(key_spec, SOFTWARE):
            return name, keystore, SOFTWARE
        raise UnsupportedOperationError(
            f"KeySpec {key_spec} is not available in keystore {name}.")

    # --- lifecycle ---------------------------------------------------------

    async def create(self, *, key_spec: str, subject: str, alternative_names: list,
                     exportable: bool, tags: dict[str, str],
                     keystore_name: str | None, creator: str) -> CertificateRecord:
        """CreateCertificate: a new key pair and its signed request, PENDING.

        Raises:
            InvalidParameterError: a bad subject, alternative names or keystore.
            UnsupportedOperationError: the keystore lacks the key spec.
        """
        name = names.parse_subject(subject)
        alternative = names.parse_alternative_names(alternative_names)
        keystore_name, keystore, level = self._new_pair_keystore(keystore_name,
                                                                 key_spec)
        certificate_id = str(uuid.uuid4())
        material = await keystore.generate_key_pair(certificate_id, key_spec, level)
        request = await csr.build_request(keystore, material, name, alternative)
        now = self.now()
        record = CertificateRecord(
            certificate_id=certificate_id, keystore=keystore_name, key_spec=key_spec,
            protection_level=level, wrap_format=material.wrap_format,
            wrapped=material.wrapped, public_key=material.public_key,
            subject=name.rfc4514_string(),
            subject_alternative_names=tuple(
                names.alternative_name_text(n) for n in alternative),
            exportable=exportable, status=PENDING, csr=request, chain=None,
            creator=creator, created_at=now, updated_at=now)
        await self.store.insert_certificate(record, tags)
        return record

    async def upload(self, certificate_id: str, certificate_text: str,
                     chain_text: str | None) -> CertificateRecord:
        """UploadCertificate: store the issued certificate and its chain.

        A PENDING certificate becomes ACTIVE; an ACTIVE or INACTIVE one
        keeps its status and gets the new certificate (a renewal). The
        subject and alternative names become those of the certificate.

        Raises:
            CertificateMalformedError: the PEM text does not parse.
            CertificateKeyMismatchError: the certificate is for another key.
            CertificateChainIncompleteError, CertificateChainInvalidError:
                see ``chain.build_path``.
            CertificateStatusError: the certificate is REVOKED.
        """
        record = await self.get(certificate_id)
        require_status(record, UPLOAD_STATUSES, "UploadCertificate")
        leaf = chain.load_certificate(certificate_text, "Certificate")
        check_key(leaf, record.key_spec, record.public_key)
        path = [leaf]
        if chain_text:
            pool = chain.load_certificates(chain_text, "CertificateChain")
            path = chain.build_path(leaf, pool)
        bundle_text = chain.to_pem(path)
        subject = leaf.subject.rfc4514_string()
        alternative_names = tuple(leaf_alternative_names(leaf))
        now = self.now()

        def mutate(current: CertificateRecord) -> CertificateRecord:
            require_status(current, UPLOAD_STATUSES, "UploadCertificate")
            status = ACTIVE if current.status == PENDING else current.status
            return dataclasses.replace(
                current, chain=bundle_text, status=status, subject=subject,
                subject_alternative_names=alternative_names, updated_at=now)

        return await self.change(certificate_id, mutate)

    async def import_pkcs12(self, *, blob: bytes, passphrase: str | None,
                            exportable: bool, tags: dict[str, str],
                            keystore_name: str | None,
                            creator: str) -> CertificateRecord:
        """ImportCertificate: a key pair and chain from PKCS#12, ACTIVE.

        Raises:
            CertificateMalformedError: the file does not open.
            CertificateKeyMismatchError: its certificate is for another key.
            UnsupportedOperationError: a key other than RSA 2048 or P-256.
            And the chain errors of ``upload``.
        """
        contents = bundle.open_pkcs12(blob, passphrase)
        leaf = contents.certificate
        chain.check_parsed([leaf, *contents.additional], "PKCS12Blob")
        spki = pair_public_key(contents.key_spec, contents.pkcs8)
        check_key(leaf, contents.key_spec, spki)
        path = [leaf]
        if contents.additional:
            path = chain.build_path(leaf, contents.additional)
        keystore_name, keystore, level = self._new_pair_keystore(
            keystore_name, contents.key_spec)
        certificate_id = str(uuid.uuid4())
        material = await keystore.import_key_pair(certificate_id, contents.key_spec,
                                                  level, contents.pkcs8)
        now = self.now()
        record = CertificateRecord(
            certificate_id=certificate_id, keystore=keystore_name,
            key_spec=contents.key_spec, protection_level=level,
            wrap_format=material.wrap_format, wrapped=material.wrapped,
            public_key=material.public_key, subject=leaf.subject.rfc4514_string(),
            subject_alternative_names=tuple(leaf_alternative_names(leaf)),
            exportable=exportable, status=ACTIVE, csr="", chain=chain.to_pem(path),
            creator=creator, created_at=now, updated_at=now)
        await self.store.insert_certificate(record, tags)
        return record

    async def set_status(self, certificate_id: str, status: str) -> CertificateRecord:
        """UpdateCertificateStatus: ACTIVE, INACTIVE or REVOKED.

        Raises:
            CertificateStatusError: the certificate is PENDING, or REVOKED
                (which is final).
        """
        now = self.now()

        def mutate(current: CertificateRecord) -> CertificateRecord:
            require_status(current, (ACTIVE, INACTIVE), "UpdateCertificateStatus")
            return dataclasses.replace(current, status=status, updated_at=now)

        return await self.change(certificate_id, mutate)

    async def delete(self, certificate_id: str) -> None:
        """DeleteCertificate: the certificate, its key pair and chain, at once."""
        if not await self.store.delete_certificate(certificate_id):
            raise CertificateNotFoundError(
                f"The certificate {certificate_id!r} is not found.")

    async def change(self, certificate_id: str,
                     mutate: Callable[[CertificateRecord], CertificateRecord]
                     ) -> CertificateRecord:
        """Apply ``mutate`` to the current record and store it; reread on a race."""
        for _ in range(_UPDATE_ATTEMPTS):
            record = await self.get(certificate_id)
            try:
                return await self.store.update_certificate(mutate(record))
            except ConflictError:
                continue
        raise InternalFailureError()


def check_key(leaf: x509.Certificate, key_spec: str, spki: bytes) -> None:
    """Raise CertificateKeyMismatchError unless ``leaf`` is for the key ``spki``."""
    try:
        theirs = chain.normalized_public_key(chain.subject_public_key_info(leaf))
    except ValueError:
        theirs = None
    if theirs != chain.normalized_public_key(spki):
        raise CertificateKeyMismatchError(
            f"The certificate {leaf.subject.rfc4514_string()!r} is not for this "
            f"certificate's {key_spec} key pair.")


def leaf_alternative_names(leaf: x509.Certificate) -> list[str]:
    """Return the subject alternative names of a certificate as text."""
    try:
        extension = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return [names.alternative_name_text(name) for name in extension.value]
