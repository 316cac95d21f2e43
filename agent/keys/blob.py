"""The ciphertext blob and the canonical encryption context.

A blob is what Encrypt and GenerateDataKey return and Decrypt takes::

    key version id   36 bytes, ASCII UUID text
    format           1 byte: 1 = opaque plaintext, 2 = data key
    IV               12 bytes, random per encryption
    ciphertext+tag   plaintext length + 16 bytes (AES-GCM or SM4-GCM)

The key version id comes first, as in Alibaba Cloud KMS, so Decrypt
needs no KeyId. The AAD is the first 37 bytes followed by the canonical
encryption context, so every byte of the blob and every character of the
context is authenticated. Any parse failure raises ``InvalidCiphertext``
with no detail, like a failed tag check.
"""

from __future__ import annotations

import dataclasses
import json
import uuid

from agent.keystore.base import GCM_IV_BYTES, GCM_TAG_BYTES
from client.errors import InvalidCiphertextError, InvalidParameterError

VERSION_ID_BYTES = 36
FORMAT_PLAINTEXT = 1
FORMAT_DATA_KEY = 2
FORMATS = (FORMAT_PLAINTEXT, FORMAT_DATA_KEY)
HEADER_BYTES = VERSION_ID_BYTES + 1
MIN_BLOB_BYTES = HEADER_BYTES + GCM_IV_BYTES + GCM_TAG_BYTES
MAX_CONTEXT_CHARS = 8192


@dataclasses.dataclass(frozen=True)
class Blob:
    """A parsed ciphertext blob."""

    version_id: str
    format: int
    iv: bytes
    ciphertext: bytes

    def header(self) -> bytes:
        """Return the authenticated header bytes."""
        return self.version_id.encode("ascii") + bytes([self.format])

    def to_bytes(self) -> bytes:
        """Serialize the blob."""
        return self.header() + self.iv + self.ciphertext


def blob_header(version_id: str, blob_format: int) -> bytes:
    """Return the header for a new blob of ``version_id``."""
    return version_id.encode("ascii") + bytes([blob_format])


def parse_blob(data: bytes) -> Blob:
    """Split a blob into its parts.

    Raises:
        InvalidCiphertextError: the blob is too short or malformed.
    """
    if len(data) < MIN_BLOB_BYTES or data[VERSION_ID_BYTES] not in FORMATS:
        raise InvalidCiphertextError()
    try:
        version_id = data[:VERSION_ID_BYTES].decode("ascii")
        if str(uuid.UUID(version_id)) != version_id:
            raise ValueError(version_id)
    except ValueError:
        raise InvalidCiphertextError() from None
    return Blob(
        version_id=version_id,
        format=data[VERSION_ID_BYTES],
        iv=bytes(data[HEADER_BYTES:HEADER_BYTES + GCM_IV_BYTES]),
        ciphertext=bytes(data[HEADER_BYTES + GCM_IV_BYTES:]),
    )


def canonical_context(context: dict[str, str] | None) -> bytes:
    """Return the canonical bytes of an encryption context.

    Keys are sorted, so their order does not matter; keys and values are
    compared exactly, with no Unicode normalisation. An empty map equals
    no context.

    Raises:
        InvalidParameterError: the context is not a map of strings, a key
            is empty, or it is longer than 8,192 characters in total.
    """
    if not context:
        return b""
    if not isinstance(context, dict):
        raise InvalidParameterError("EncryptionContext must be a map of strings.")
    total = 0
    for key, value in context.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise InvalidParameterError(
                "EncryptionContext keys and values must be strings.")
        if not key:
            raise InvalidParameterError("EncryptionContext keys must not be empty.")
        total += len(key) + len(value)
    if total > MAX_CONTEXT_CHARS:
        raise InvalidParameterError(
            f"EncryptionContext is {total} characters long; the maximum is "
            f"{MAX_CONTEXT_CHARS}.")
    text = json.dumps(context, sort_keys=True, ensure_ascii=False,
                      separators=(",", ":"))
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidParameterError(
            "EncryptionContext contains text that is not valid Unicode.") from None
