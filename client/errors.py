"""The error vocabulary shared by the agent and its clients.

Every error that crosses the wire is a ``KmsError`` subclass with a stable
``code`` (the Alibaba Cloud KMS error code where one exists) and an
HTTP-like ``http_status``. Codes are never renamed or reused; the test
``tests/client/test_errors.py`` pins the whole table against
``tests/vectors/error_codes.json``.

``KmsError`` itself is never raised. ``error_from_wire`` turns an error
map from a reply back into the matching subclass, and unknown codes
become ``UnknownError`` so that a newer agent never breaks an older
client.
"""

from __future__ import annotations

from typing import Any, ClassVar


class KmsError(Exception):
    """Base of every error the agent can return; never raised directly.

    Attributes:
        code: the stable wire code, such as ``Forbidden.KeyNotFound``.
        http_status: the HTTP-like status of the code.
        message: a message that is safe to show to the caller.
        request_id: the id of the request that failed, when known.
    """

    code: ClassVar[str] = ""
    http_status: ClassVar[int] = 500
    default_message: ClassVar[str] = "The request failed."
    retryable: ClassVar[bool] = False

    def __init__(self, message: str | None = None, *, request_id: str | None = None):
        self.message = message or self.default_message
        self.request_id = request_id
        super().__init__(self.message)

    def __str__(self) -> str:
        suffix = f" (RequestId {self.request_id})" if self.request_id else ""
        return f"{self.code}: {self.message}{suffix}"

    def to_wire(self) -> dict[str, Any]:
        """Return the error map sent in a reply."""
        return {
            "Code": self.code,
            "Message": self.message,
            "HttpStatus": self.http_status,
            "RequestId": self.request_id or "",
        }


class CallerError(KmsError):
    """An error caused by the request; its message is safe to show."""

    http_status = 400


class ServiceError(KmsError):
    """An error inside the agent; the caller sees a generic message."""

    http_status = 500
    retryable = True


# --- 400: the request itself is wrong --------------------------------------


class MissingParameterError(CallerError):
    code = "MissingParameter"
    default_message = "A required parameter is missing."


class InvalidParameterError(CallerError):
    code = "InvalidParameter"
    default_message = "A parameter is invalid."


class ParseRequestError(CallerError):
    code = "ParseRequestParameterException"
    default_message = "The request could not be parsed."


class InvalidApiNameError(CallerError):
    code = "InvalidApiName"
    default_message = "The operation is not known to this agent."


class InvalidApiVersionError(CallerError):
    code = "InvalidApiVersion"
    default_message = "The protocol version is not supported by this agent."


class UnsupportedOperationError(CallerError):
    code = "UnsupportedOperation"
    default_message = "The operation is not supported for this resource."


class UnsupportedProtectionLevelError(CallerError):
    code = "Unsupported.ProtectionLevel"
    default_message = "The protection level is not supported for this key spec."


class UnsupportedOriginError(CallerError):
    code = "Unsupported.Origin"
    default_message = "The key origin is not supported for this operation."


class UnsupportedAliasError(CallerError):
    code = "Unsupported.Alias"
    default_message = "The alias name is not allowed."


class AliasAlreadyExistsError(CallerError):
    code = "AliasAlreadyExists"
    default_message = "The alias already exists."


class LimitExceededError(CallerError):
    code = "Rejected.LimitExceeded"
    default_message = "A resource limit was exceeded."


class InvalidCiphertextError(CallerError):
    """Any failure to decrypt a blob, whatever the cause.

    The reference names no code for this case, so the agent uses its own.
    The message is the same for a wrong context, a tampered byte, a blob
    of another agent or a key version that does not exist.
    """

    code = "InvalidCiphertext"
    default_message = (
        "The ciphertext blob cannot be decrypted with the given encryption context."
    )


class InvalidKeyMaterialError(CallerError):
    """Imported key material does not unwrap, has the wrong length, or
    differs from the material imported into the key before."""

    code = "InvalidKeyMaterial"
    default_message = "The key material is invalid."


class InvalidImportTokenError(CallerError):
    """The import token is unknown, used already or issued for another key."""

    code = "InvalidImportToken"
    default_message = "The import token is invalid."


class ExpiredImportTokenError(CallerError):
    code = "ExpiredImportToken"
    default_message = "The import token has expired."


class RequestTooLargeError(CallerError):
    code = "RequestEntityTooLarge"
    http_status = 413
    default_message = "The request frame exceeds the maximum frame size."


# --- 403 and 404: who may do what, and what exists -------------------------


class NoPermissionError(CallerError):
    code = "Forbidden.NoPermission"
    http_status = 403
    default_message = "The caller is not allowed to perform this operation."


class KeyNotFoundError(CallerError):
    code = "Forbidden.KeyNotFound"
    http_status = 404
    default_message = "The specified key is not found."


class KeyVersionNotFoundError(CallerError):
    code = "Forbidden.KeyVersionNotFound"
    http_status = 404
    default_message = "The specified key version is not found."


class AliasNotFoundError(CallerError):
    code = "Forbidden.AliasNotFound"
    http_status = 404
    default_message = "The specified alias is not found."


class ResourceNotFoundError(CallerError):
    code = "Forbidden.ResourceNotFound"
    http_status = 404
    default_message = "The specified resource is not found."


class UnknownCallerError(CallerError):
    """The calling process matches no principal; sent instead of a welcome."""

    code = "Forbidden.UnknownCaller"
    http_status = 403
    default_message = (
        "The calling process matches no principal of the agent's access "
        "configuration."
    )


class ClientKeyInvalidError(CallerError):
    """The client key is unknown or its proof does not verify.

    One code covers both cases, so a caller without the private key
    cannot learn which client key ids exist.
    """

    code = "Forbidden.ClientKeyInvalid"
    http_status = 403
    default_message = "The client key is unknown or its proof is invalid."


class ClientKeyExpiredError(CallerError):
    code = "Forbidden.ClientKeyExpired"
    http_status = 403
    default_message = "The client key is expired or not valid yet."


class ClientKeyRevokedError(CallerError):
    code = "Forbidden.ClientKeyRevoked"
    http_status = 403
    default_message = "The client key has been revoked."


class InvalidConfigurationError(CallerError):
    """A configuration reload was refused; the old configuration stays."""

    code = "InvalidConfiguration"
    http_status = 400
    default_message = "The configuration file is invalid and was not loaded."


# --- 409: the resource is in the wrong state --------------------------------


class KeyDisabledError(CallerError):
    code = "Rejected.Disabled"
    http_status = 409
    default_message = "The key is disabled."


class KeyPendingDeletionError(CallerError):
    code = "Rejected.PendingDeletion"
    http_status = 409
    default_message = "The key is pending deletion."


class KeyPendingImportError(CallerError):
    code = "Rejected.PendingImport"
    http_status = 409
    default_message = "The key is waiting for its key material to be imported."


class KeyEnabledError(CallerError):
    code = "Rejected.Enabled"
    http_status = 409
    default_message = "The key is enabled."


class StateModifiedFailedError(CallerError):
    code = "Rejected.StateModifiedFailed"
    http_status = 409
    default_message = "The key state does not allow this change."


class DeletionProtectedError(CallerError):
    """The key has deletion protection; the reference names no code for it."""

    code = "Rejected.DeletionProtection"
    http_status = 409
    default_message = "The key has deletion protection enabled."


class ResourceExistError(CallerError):
    code = "Rejected.ResourceExist"
    http_status = 409
    default_message = "The resource already exists."


class ResourceInDeleteWindowError(CallerError):
    code = "Rejected.ResourceInDeleteWindow"
    http_status = 409
    default_message = "The resource is scheduled for deletion."


# --- 429 and 5xx: try again later -------------------------------------------


class ThrottlingError(CallerError):
    code = "Rejected.Throttling"
    http_status = 429
    default_message = "QPS Limit Exceeded"
    retryable = True


class InternalFailureError(ServiceError):
    code = "InternalFailure"
    http_status = 500
    default_message = "The agent failed to process the request."


class ServiceUnavailableError(ServiceError):
    code = "ServiceUnavailableTemporary"
    http_status = 503
    default_message = "The agent is temporarily unavailable."


class RotationFailedError(ServiceError):
    """The rotator of a secret failed; the current version is unchanged.

    The reference names no code for this case, so the agent uses its own.
    The message names the secret and the cause, never a value or the
    rotator's output. Not retryable: the same rotator usually fails again.
    """

    code = "SecretRotationFailed"
    http_status = 500
    default_message = "The rotation of the secret failed."
    retryable = False


class AuditUnavailableError(ServiceError):
    """The audit trail cannot be written, so the agent refuses changes.

    The reference names no code for this case, so the agent uses its own.
    The agent writes again as soon as the file can be written, so a later
    attempt may succeed.
    """

    code = "AuditUnavailable"
    http_status = 503
    default_message = (
        "The agent cannot write its audit trail, so it refuses changes; "
        "try again later."
    )


# --- 400 to 404: the HTTP gateway refused the request's credentials --------


class IncompleteSignatureError(CallerError):
    """A signed request lacks a signature part, or its signature is wrong."""

    code = "IncompleteSignature"
    default_message = "The request signature is missing, malformed or invalid."


class IllegalTimestampError(CallerError):
    """The signed time of an OpenAPI request is more than 15 minutes off."""

    code = "IllegalTimestamp"
    default_message = (
        "The request time must be within 15 minutes of the agent's clock.")


class SignatureNonceUsedError(CallerError):
    """The signature nonce was seen before, so the request is a replay.

    The reference names no code for replays; this is the code Alibaba
    Cloud's OpenAPI gateway uses for a reused SignatureNonce.
    """

    code = "SignatureNonceUsed"
    default_message = "The signature nonce has been used already."


class RequestTimeTooSkewedError(CallerError):
    """The date of a dedicated-instance request is more than 15 minutes off."""

    code = "RequestTimeTooSkewed"
    default_message = (
        "The request date must be within 15 minutes of the agent's clock.")


class UnauthorizedError(CallerError):
    """A dedicated-instance request has no valid client key signature."""

    code = "Unauthorized"
    http_status = 401
    default_message = "The client key is unknown or the signature is invalid."


class UnsupportedHttpMethodError(CallerError):
    code = "UnsupportedHTTPMethod"
    http_status = 403
    default_message = "The HTTP method is not supported; use POST or GET."


class InvalidAccessKeyIdError(CallerError):
    code = "InvalidAccessKeyId.NotFound"
    http_status = 404
    default_message = "The AccessKey ID is not found."


# --- the Certificates Manager -----------------------------------------------


class CertificateNotFoundError(CallerError):
    code = "Certificate.NotFound"
    http_status = 404
    default_message = "The specified certificate is not found."


class CertificateStatusError(CallerError):
    """The certificate's status forbids the operation.

    PENDING certificates have no certificate yet, INACTIVE ones do
    nothing until reactivated, and REVOKED ones only verify signatures.
    """

    code = "Certificate.InvalidStatus"
    http_status = 409
    default_message = "The certificate's status does not allow this operation."


class CertificateMalformedError(CallerError):
    """A certificate, chain or PKCS#12 file cannot be parsed or opened."""

    code = "Certificate.Malformed"
    default_message = "The certificate data cannot be parsed."


class CertificateKeyMismatchError(CallerError):
    """The certificate's public key is not the public key of its key pair."""

    code = "Certificate.KeyMismatch"
    default_message = "The certificate does not match the certificate's key pair."


class CertificateChainIncompleteError(CallerError):
    """The chain lacks the issuer of one of its certificates; the message
    names that issuer."""

    code = "Certificate.ChainIncomplete"
    default_message = "The certificate chain does not lead to a self-signed root."


class CertificateChainInvalidError(CallerError):
    """A chain link fails: a bad signature, an issuer that is no CA, a
    path length or a name constraint that the chain violates."""

    code = "Certificate.ChainInvalid"
    default_message = "The certificate chain is not valid."


class CertificateOutsideValidityError(CallerError):
    """The certificate or one of its issuers is expired or not valid yet."""

    code = "Certificate.OutsideValidity"
    http_status = 409
    default_message = "The certificate is outside its validity period."


class CertificateNotExportableError(CallerError):
    code = "Certificate.NotExportable"
    http_status = 403
    default_message = "The certificate's private key is not exportable."


# --- raised by the client library itself, never sent by the agent -----------


class ServerUnreachableError(ServiceError):
    code = "SDK.ServerUnreachable"
    http_status = 503
    default_message = "The agent socket cannot be reached."


class ReadTimeoutError(ServiceError):
    code = "SDK.ReadTimeout"
    http_status = 504
    default_message = "The agent did not reply in time."


class UnknownError(KmsError):
    """An error code this client does not know; ``code`` is per instance."""

    def __init__(self, code: str, http_status: int, message: str | None = None,
                 *, request_id: str | None = None):
        super().__init__(message, request_id=request_id)
        self.code = code  # type: ignore[misc]
        self.http_status = http_status  # type: ignore[misc]


def _all_subclasses(cls: type) -> list[type]:
    found = []
    for sub in cls.__subclasses__():
        found.append(sub)
        found.extend(_all_subclasses(sub))
    return found


ERRORS_BY_CODE: dict[str, type[KmsError]] = {
    cls.code: cls for cls in _all_subclasses(KmsError) if cls.code
}


def error_from_wire(error: Any) -> KmsError:
    """Build the typed error for an error map received in a reply.

    A map that is not shaped like an error becomes ``UnknownError`` with
    code ``InternalFailure``, so a caller always gets a ``KmsError``.
    """
    if not isinstance(error, dict):
        return UnknownError("InternalFailure", 500, "The agent sent a malformed error.")
    code = error.get("Code")
    message = error.get("Message")
    request_id = error.get("RequestId") or None
    status = error.get("HttpStatus")
    cls = ERRORS_BY_CODE.get(code) if isinstance(code, str) else None
    if cls is not None:
        return cls(message if isinstance(message, str) else None, request_id=request_id)
    return UnknownError(
        code if isinstance(code, str) else "InternalFailure",
        status if isinstance(status, int) else 500,
        message if isinstance(message, str) else None,
        request_id=request_id,
    )
