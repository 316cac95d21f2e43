"""The dedicated-instance message schemas, as ``protobuf.Message`` tables.

These are the messages of ``dkms.proto`` next to this file, with the
field numbers of the dkms-gcs SDK's ``api.proto``; a test parses the
``.proto`` file and compares. ``REQUESTS`` and ``RESPONSES`` are keyed
by the API name the SDK sends in ``x-kms-apiname``.
"""

from __future__ import annotations

from agent.gateway.protobuf import (
    BOOL, BYTES, INT32, REPEATED_STRING, STRING, Message,
)


def _message(name: str, *fields: tuple[str, str]) -> Message:
    # Fields are numbered 1, 2, ... in the order given, as in api.proto.
    return Message(name, tuple((index, field, kind)
                               for index, (field, kind) in enumerate(fields, 1)))


_ENCRYPT_REQUEST = (("KeyId", STRING), ("Plaintext", BYTES), ("Algorithm", STRING),
                    ("Aad", BYTES), ("Iv", BYTES), ("PaddingMode", STRING))
_ENCRYPT_RESPONSE = (("KeyId", STRING), ("CiphertextBlob", BYTES), ("Iv", BYTES),
                     ("RequestId", STRING), ("Algorithm", STRING),
                     ("PaddingMode", STRING))
_DECRYPT_REQUEST = (("CiphertextBlob", BYTES), ("KeyId", STRING),
                    ("Algorithm", STRING), ("Aad", BYTES), ("Iv", BYTES),
                    ("PaddingMode", STRING))
_DECRYPT_RESPONSE = (("KeyId", STRING), ("Plaintext", BYTES), ("RequestId", STRING),
                     ("Algorithm", STRING), ("PaddingMode", STRING))
_DATA_KEY_RESPONSE = (("KeyId", STRING), ("Iv", BYTES), ("Plaintext", BYTES),
                      ("CiphertextBlob", BYTES), ("RequestId", STRING),
                      ("Algorithm", STRING))
_VERSION = (("KeyVersionId", STRING),)

REQUESTS = {
    "Encrypt": _message("EncryptRequest", *_ENCRYPT_REQUEST),
    "Decrypt": _message("DecryptRequest", *_DECRYPT_REQUEST),
    "AdvanceEncrypt": _message("AdvanceEncryptRequest", *_ENCRYPT_REQUEST),
    "AdvanceDecrypt": _message("AdvanceDecryptRequest", *_DECRYPT_REQUEST),
    "GenerateDataKey": _message(
        "GenerateDataKeyRequest", ("KeyId", STRING), ("Algorithm", STRING),
        ("NumberOfBytes", INT32), ("Aad", BYTES)),
    "AdvanceGenerateDataKey": _message(
        "AdvanceGenerateDataKeyRequest", ("KeyId", STRING), ("NumberOfBytes", INT32),
        ("Aad", BYTES)),
    "Sign": _message(
        "SignRequest", ("KeyId", STRING), ("Digest", BYTES), ("Algorithm", STRING),
        ("Message", BYTES), ("MessageType", STRING)),
    "Verify": _message(
        "VerifyRequest", ("KeyId", STRING), ("Digest", BYTES), ("Signature", BYTES),
        ("Algorithm", STRING), ("Message", BYTES), ("MessageType", STRING)),
    "GetPublicKey": _message("GetPublicKeyRequest", ("KeyId", STRING)),
    "GenerateRandom": _message("GenerateRandomRequest", ("Length", INT32)),
    "GetSecretValue": _message(
        "GetSecretValueRequest", ("SecretName", STRING), ("VersionStage", STRING),
        ("VersionId", STRING), ("FetchExtendedConfig", BOOL)),
}

RESPONSES = {
    "Encrypt": _message("EncryptResponse", *_ENCRYPT_RESPONSE),
    "Decrypt": _message("DecryptResponse", *_DECRYPT_RESPONSE),
    "AdvanceEncrypt": _message("AdvanceEncryptResponse", *_ENCRYPT_RESPONSE,
                               *_VERSION),
    "AdvanceDecrypt": _message("AdvanceDecryptResponse", *_DECRYPT_RESPONSE,
                               *_VERSION),
    "GenerateDataKey": _message("GenerateDataKeyResponse", *_DATA_KEY_RESPONSE),
    "AdvanceGenerateDataKey": _message("AdvanceGenerateDataKeyResponse",
                                       *_DATA_KEY_RESPONSE, *_VERSION),
    "Sign": _message(
        "SignResponse", ("KeyId", STRING), ("Signature", BYTES), ("RequestId", STRING),
        ("Algorithm", STRING), ("MessageType", STRING)),
    "Verify": _message(
        "VerifyResponse", ("KeyId", STRING), ("Value", BOOL), ("RequestId", STRING),
        ("Algorithm", STRING), ("MessageType", STRING)),
    "GetPublicKey": _message(
        "GetPublicKeyResponse", ("KeyId", STRING), ("PublicKey", STRING),
        ("RequestId", STRING)),
    "GenerateRandom": _message(
        "GenerateRandomResponse", ("Random", BYTES), ("RequestId", STRING)),
    "GetSecretValue": _message(
        "GetSecretValueResponse", ("SecretName", STRING), ("SecretType", STRING),
        ("SecretData", STRING), ("SecretDataType", STRING),
        ("VersionStages", REPEATED_STRING), ("VersionId", STRING),
        ("CreateTime", STRING), ("RequestId", STRING), ("LastRotationDate", STRING),
        ("NextRotationDate", STRING), ("ExtendedConfig", STRING),
        ("AutomaticRotation", STRING), ("RotationInterval", STRING)),
}

ERROR = _message("Error", ("StatusCode", INT32), ("ErrorCode", STRING),
                 ("ErrorMessage", STRING), ("RequestId", STRING))
