"""Envelope encryption of secret values under a Key Service key.

Each version gets a fresh 256-bit data key from ``generate_data_key``,
whose encryption context binds the secret name and version id. The value
is sealed with AES-GCM under that data key in the agent, and only the
data key blob, the IV and the ciphertext are stored. The AAD repeats
the name, version id, data type and format, so a row copied to another
secret or version does not open. Format 1 is this layout.
"""

from __future__ import annotations

import dataclasses
import json
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from agent.keys.service import KeyService
from client.errors import InternalFailureError, InvalidCiphertextError

VALUE_FORMAT = 1
DATA_KEY_BYTES = 32
IV_BYTES = 12
CONTEXT_NAME = "SecretName"
CONTEXT_VERSION = "SecretVersionId"


@dataclasses.dataclass(frozen=True)
class SealedValue:
    """A value sealed under a data key, as a version record stores it."""

    key_id: str
    data_key_blob: bytes = dataclasses.field(repr=False)
    iv: bytes = dataclasses.field(repr=False)
    ciphertext: bytes = dataclasses.field(repr=False)


def encryption_context(secret_name: str, version_id: str) -> dict[str, str]:
    """Return the Key Service encryption context of a version's data key."""
    return {CONTEXT_NAME: secret_name, CONTEXT_VERSION: version_id}


def _aad(secret_name: str, version_id: str, data_type: str) -> bytes:
    header = [VALUE_FORMAT, secret_name, version_id, data_type]
    return json.dumps(header, separators=(",", ":")).encode("utf-8")


async def seal(keys: KeyService, key_ref: str, secret_name: str, version_id: str,
               data_type: str, value: bytes) -> SealedValue:
    """Encrypt ``value`` for one version under the key ``key_ref``.

    Raises:
        KeyNotFoundError, KeyDisabledError ...: the key cannot be used.
    """
    data_key = await keys.generate_data_key(
        key_ref, DATA_KEY_BYTES, None, encryption_context(secret_name, version_id))
    iv = os.urandom(IV_BYTES)
    ciphertext = AESGCM(data_key.plaintext).encrypt(
        iv, value, _aad(secret_name, version_id, data_type))
    return SealedValue(data_key.key.key_id, data_key.blob, iv, ciphertext)


async def open_value(keys: KeyService, secret_name: str, version_id: str,
                     data_type: str, value_format: int, data_key_blob: bytes,
                     iv: bytes, ciphertext: bytes) -> bytes:
    """Decrypt a stored value.

    Raises:
        InternalFailureError: the stored envelope does not authenticate.
        KeyDisabledError ...: the key's state forbids decryption.
    """
    if value_format != VALUE_FORMAT:
        raise InternalFailureError()
    try:
        data_key = await keys.decrypt(
            data_key_blob, encryption_context(secret_name, version_id))
    except InvalidCiphertextError:
        # A stored blob that fails is the agent's fault, not the caller's.
        raise InternalFailureError() from None
    try:
        return AESGCM(data_key.plaintext).decrypt(
            iv, ciphertext, _aad(secret_name, version_id, data_type))
    except (InvalidTag, ValueError):
        raise InternalFailureError() from None
