"""Python client of kms-agent, the local key management service.

``KmsClient`` is the blocking client and ``AsyncKmsClient`` the trio one.
Both speak the Alibaba Cloud KMS API (operation names, PascalCase
parameters and error codes) over the agent's Unix socket. Errors are
``KmsError`` subclasses from ``client.errors``. ``AsyncKmsClient`` is
imported on first use, so the blocking client never loads trio. This
package never imports the agent, so applications never load python-pkcs11.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from client.errors import (
    AliasAlreadyExistsError,
    AliasNotFoundError,
    AuditUnavailableError,
    CallerError,
    CertificateChainIncompleteError,
    CertificateChainInvalidError,
    CertificateKeyMismatchError,
    CertificateMalformedError,
    CertificateNotExportableError,
    CertificateNotFoundError,
    CertificateOutsideValidityError,
    CertificateStatusError,
    ClientKeyExpiredError,
    ClientKeyInvalidError,
    ClientKeyRevokedError,
    DeletionProtectedError,
    ExpiredImportTokenError,
    IllegalTimestampError,
    IncompleteSignatureError,
    InternalFailureError,
    InvalidAccessKeyIdError,
    InvalidApiNameError,
    InvalidApiVersionError,
    InvalidCiphertextError,
    InvalidConfigurationError,
    InvalidImportTokenError,
    InvalidKeyMaterialError,
    InvalidParameterError,
    KeyDisabledError,
    KeyEnabledError,
    KeyNotFoundError,
    KeyPendingDeletionError,
    KeyPendingImportError,
    KeyVersionNotFoundError,
    KmsError,
    LimitExceededError,
    MissingParameterError,
    NoPermissionError,
    ParseRequestError,
    ReadTimeoutError,
    RequestTimeTooSkewedError,
    RequestTooLargeError,
    ResourceExistError,
    ResourceInDeleteWindowError,
    ResourceNotFoundError,
    RotationFailedError,
    ServerUnreachableError,
    ServiceError,
    ServiceUnavailableError,
    SignatureNonceUsedError,
    StateModifiedFailedError,
    ThrottlingError,
    UnauthorizedError,
    UnknownCallerError,
    UnknownError,
    UnsupportedAliasError,
    UnsupportedHttpMethodError,
    UnsupportedOperationError,
    UnsupportedOriginError,
    UnsupportedProtectionLevelError,
    error_from_wire,
)
from client.sync import KmsClient

if TYPE_CHECKING:
    from client.aio import AsyncKmsClient

__all__ = [
    "AliasAlreadyExistsError",
    "AliasNotFoundError",
    "AsyncKmsClient",
    "AuditUnavailableError",
    "CallerError",
    "CertificateChainIncompleteError",
    "CertificateChainInvalidError",
    "CertificateKeyMismatchError",
    "CertificateMalformedError",
    "CertificateNotExportableError",
    "CertificateNotFoundError",
    "CertificateOutsideValidityError",
    "CertificateStatusError",
    "ClientKeyExpiredError",
    "ClientKeyInvalidError",
    "ClientKeyRevokedError",
    "DeletionProtectedError",
    "ExpiredImportTokenError",
    "IllegalTimestampError",
    "IncompleteSignatureError",
    "InternalFailureError",
    "InvalidAccessKeyIdError",
    "InvalidApiNameError",
    "InvalidApiVersionError",
    "InvalidCiphertextError",
    "InvalidConfigurationError",
    "InvalidImportTokenError",
    "InvalidKeyMaterialError",
    "InvalidParameterError",
    "KeyDisabledError",
    "KeyEnabledError",
    "KeyNotFoundError",
    "KeyPendingDeletionError",
    "KeyPendingImportError",
    "KeyVersionNotFoundError",
    "KmsClient",
    "KmsError",
    "LimitExceededError",
    "MissingParameterError",
    "NoPermissionError",
    "ParseRequestError",
    "ReadTimeoutError",
    "RequestTimeTooSkewedError",
    "RequestTooLargeError",
    "ResourceExistError",
    "ResourceInDeleteWindowError",
    "ResourceNotFoundError",
    "RotationFailedError",
    "ServerUnreachableError",
    "ServiceError",
    "ServiceUnavailableError",
    "SignatureNonceUsedError",
    "StateModifiedFailedError",
    "ThrottlingError",
    "UnauthorizedError",
    "UnknownCallerError",
    "UnknownError",
    "UnsupportedAliasError",
    "UnsupportedHttpMethodError",
    "UnsupportedOperationError",
    "UnsupportedOriginError",
    "UnsupportedProtectionLevelError",
    "error_from_wire",
]


def __getattr__(name: str) -> Any:
    if name == "AsyncKmsClient":
        from client.aio import AsyncKmsClient

        return AsyncKmsClient
    raise AttributeError(f"module 'client' has no attribute {name!r}")
