"""Cryptography with a certificate's key pair, and its export.

Algorithms per key spec are those of ``keystore.asymmetric``: RSA_2048
signs with RSA_PKCS1_SHA_256 or RSA_PSS_SHA_256 and encrypts with
RSAES_OAEP_SHA_256 (up to 190 bytes) or RSAES_OAEP_SHA_1 (214 bytes);
EC_P256 signs with ECDSA_SHA_256 and does not encrypt; EC_SM2 signs with
SM2DSA and encrypts with SM2PKE (6,047 bytes). A RAW message (up to
4 KiB) is hashed once here: SHA-256, or for SM2DSA e = SM3(Z_A || M)
with the default user id. A DIGEST message is that 32-byte hash.

Signing, encrypting, decrypting and export need an ACTIVE certificate;
verifying needs ACTIVE or REVOKED. Signing is refused outside the
validity period of the certificate or an issuer, at the service clock's
time, unless the caller passes ``allow_outside_validity``.
"""

from __future__ import annotations

from agent.certificates import bundle, chain, csr
from agent.certificates.service import CertificateService, require_status
from agent.keystore import asymmetric
from agent.keystore.base import DecryptionFailed
from agent.store.certificates import ACTIVE, REVOKED, CertificateRecord
from client.errors import (
    CertificateNotExportableError, CertificateOutsideValidityError,
    InvalidCiphertextError, InvalidParameterError, MissingParameterError,
    UnsupportedOperationError,
)

RAW = "RAW"
DIGEST = "DIGEST"
MESSAGE_TYPES = (RAW, DIGEST)
MAX_RAW_MESSAGE_BYTES = 4096
USE = (ACTIVE,)
VERIFY = (ACTIVE, REVOKED)


def _check_algorithm(record: CertificateRecord, algorithm: str, sign: bool) -> None:
    table = asymmetric.SIGN_ALGORITHMS if sign else asymmetric.ENCRYPT_ALGORITHMS
    allowed = table.get(record.key_spec, ())
    if not allowed:
        raise UnsupportedOperationError(
            f"{record.key_spec} certificates do not encrypt or decrypt.")
    if algorithm not in allowed:
        raise InvalidParameterError(
            f"Algorithm {algorithm} is not valid for a {record.key_spec} "
            f"certificate; use {' or '.join(allowed)}.")


def message_digest(record: CertificateRecord, message: bytes,
                   message_type: str) -> bytes:
    """Return the digest to sign or verify for a RAW or DIGEST message."""
    if message_type == DIGEST:
        if len(message) != asymmetric.DIGEST_BYTES:
            raise InvalidParameterError(
                f"A DIGEST Message is {asymmetric.DIGEST_BYTES} bytes (SHA-256, or "
                f"SM3 with Z_A for SM2DSA), not {len(message)}.")
        return message
    if len(message) > MAX_RAW_MESSAGE_BYTES:
        raise InvalidParameterError(
            f"A RAW Message is at most {MAX_RAW_MESSAGE_BYTES} bytes; hash a longer "
            "one and send its digest with MessageType DIGEST.")
    return csr.signing_digest(record.key_spec, record.public_key, message)


def require_valid(service: CertificateService, record: CertificateRecord) -> None:
    """Raise CertificateOutsideValidityError unless the chain is valid now."""
    status, problem = chain.validity(service.path(record), service.clock.now())
    if status != chain.VALID:
        raise CertificateOutsideValidityError(
            f"{problem} Pass AllowOutsideValidity=true to sign anyway.")


async def sign(service: CertificateService, certificate_id: str, algorithm: str,
               message: bytes, message_type: str,
               allow_outside_validity: bool) -> bytes:
    """CertificatePrivateKeySign: sign in the keystore; return the signature."""
    record = await service.get(certificate_id)
    require_status(record, USE, "CertificatePrivateKeySign")
    _check_algorithm(record, algorithm, sign=True)
    digest = message_digest(record, message, message_type)
    if not allow_outside_validity:
        require_valid(service, record)
    keystore = service.keystore_of(record)
    return await keystore.sign(service.material(record), algorithm, digest)


async def verify(service: CertificateService, certificate_id: str, algorithm: str,
                 message: bytes, message_type: str, signature: bytes) -> bool:
    """CertificatePublicKeyVerify: check a signature with the certificate's key."""
    record = await service.get(certificate_id)
    require_status(record, VERIFY, "CertificatePublicKeyVerify")
    _check_algorithm(record, algorithm, sign=True)
    digest = message_digest(record, message, message_type)
    return asymmetric.verify(record.key_spec, record.public_key, algorithm, digest,
                             signature)


async def encrypt(service: CertificateService, certificate_id: str, algorithm: str,
                  plaintext: bytes) -> bytes:
    """CertificatePublicKeyEncrypt: encrypt to the certificate's public key."""
    record = await service.get(certificate_id)
    require_status(record, USE, "CertificatePublicKeyEncrypt")
    _check_algorithm(record, algorithm, sign=False)
    limit = asymmetric.max_plaintext(record.key_spec, algorithm)
    if not 1 <= len(plaintext) <= limit:
        raise InvalidParameterError(
            f"Plaintext is {len(plaintext)} bytes; {algorithm} with "
            f"{record.key_spec} encrypts 1 to {limit} bytes.")
    return asymmetric.encrypt(record.key_spec, record.public_key, algorithm, plaintext)


async def decrypt(service: CertificateService, certificate_id: str, algorithm: str,
                  ciphertext: bytes) -> bytes:
    """CertificatePrivateKeyDecrypt: decrypt in the keystore.

    Raises:
        InvalidCiphertextError: for every failure to decrypt.
    """
    record = await service.get(certificate_id)
    require_status(record, USE, "CertificatePrivateKeyDecrypt")
    _check_algorithm(record, algorithm, sign=False)
    expected = asymmetric.ciphertext_bytes(record.key_spec)
    if expected is not None and len(ciphertext) != expected:
        raise InvalidCiphertextError()
    keystore = service.keystore_of(record)
    try:
        return await keystore.asymmetric_decrypt(service.material(record), algorithm,
                                                 ciphertext)
    except DecryptionFailed:
        raise InvalidCiphertextError() from None


async def export(service: CertificateService, certificate_id: str,
                 export_format: str, passphrase: str | None) -> dict:
    """ExportCertificate: the certificate, its chain and its private key.

    Returns:
        ``Certificate``, ``CertificateChain`` and ``PrivateKey`` (PKCS#8
        PEM) for PEM, or ``PKCS12Blob`` for PKCS12.
    Raises:
        CertificateNotExportableError: the key was created non-exportable.
        MissingParameterError: PKCS12 without a Passphrase.
    """
    record = await service.get(certificate_id)
    require_status(record, USE, "ExportCertificate")
    # NOTE: only this check keeps a non-exportable key in: its sealed key
    # pair is the same as an exportable one's, and the keystore exports both.
    if not record.exportable:
        raise CertificateNotExportableError(
            f"The private key of the certificate {certificate_id} was created with "
            "ExportablePrivateKey=false and never leaves the keystore.")
    if export_format == bundle.PKCS12 and not passphrase:
        raise MissingParameterError("ExportFormat PKCS12 needs a Passphrase.")
    if export_format == bundle.PKCS12 and record.key_spec == "EC_SM2":
        raise UnsupportedOperationError(
            "EC_SM2 certificates export as PEM only; use ExportFormat PEM.")
    path = service.path(record)
    keystore = service.keystore_of(record)
    pkcs8 = await keystore.export_private_key(service.material(record))
    if export_format == bundle.PKCS12:
        blob = bundle.export_pkcs12(record.key_spec, pkcs8, path, passphrase or "",
                                    record.certificate_id)
        return {"PKCS12Blob": blob}
    return {"Certificate": chain.to_pem(path[:1]),
            "CertificateChain": chain.to_pem(path[1:]),
            "PrivateKey": bundle.export_pem(record.key_spec, pkcs8, passphrase)}
