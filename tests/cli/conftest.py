"""Fixtures for the kmsctl and envelope tests: an in-process fake agent.

``FakeKms`` serves ``GenerateDataKey`` and ``Decrypt`` like the agent,
sealing data keys under one AES-GCM master key with the encryption
context as AAD, so a wrong context or a changed blob fails as it would
against the daemon.
"""

from __future__ import annotations

import base64
import json
import os
from typing import Any

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from client.errors import InvalidCiphertextError, KmsError

FAKE_VERSION_ID = "00000000-0000-4000-8000-000000000001"


class FakeKms:
    """A stand-in for ``KmsClient`` that records every call it serves.

    ``base64_plaintext`` makes ``Decrypt`` return the Base64 text of the
    data key, as the cloud API does. ``fail_with`` makes every call raise
    that error. ``fixed_data_key`` makes every data key the same.
    """

    def __init__(self, *, base64_plaintext: bool = False,
                 fail_with: KmsError | None = None,
                 fixed_data_key: bytes | None = None):
        self._master = AESGCM(AESGCM.generate_key(256))
        self.base64_plaintext = base64_plaintext
        self.fail_with = fail_with
        self.fixed_data_key = fixed_data_key
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.data_keys: list[bytes] = []
        self.closed = False

    def call(self, operation: str, **params: Any) -> dict[str, Any]:
        self.calls.append((operation, params))
        if self.fail_with is not None:
            raise self.fail_with
        if operation == "GenerateDataKey":
            return self._generate_data_key(**params)
        if operation == "Decrypt":
            return self._decrypt(**params)
        return {"RequestId": "fake-request", "Operation": operation, **params}

    def close(self) -> None:
        self.closed = True

    def _generate_data_key(self, KeyId: str, NumberOfBytes: int = 32,
                           EncryptionContext: dict[str, str] | None = None) -> dict:
        key = self.fixed_data_key or os.urandom(NumberOfBytes)
        self.data_keys.append(key)
        nonce = os.urandom(12)
        sealed = self._master.encrypt(nonce, key, _aad(EncryptionContext))
        return {
            "KeyId": KeyId,
            "KeyVersionId": FAKE_VERSION_ID,
            "CiphertextBlob": FAKE_VERSION_ID.encode() + nonce + sealed,
            "Plaintext": key,
            "RequestId": "fake-request",
        }

    def _decrypt(self, CiphertextBlob: bytes,
                 EncryptionContext: dict[str, str] | None = None) -> dict:
        nonce, sealed = CiphertextBlob[36:48], CiphertextBlob[48:]
        try:
            key = self._master.decrypt(nonce, sealed, _aad(EncryptionContext))
        except (InvalidTag, ValueError):
            raise InvalidCiphertextError(request_id="fake-request") from None
        if self.base64_plaintext:
            key = base64.b64encode(key)
        return {"KeyId": "key-1", "KeyVersionId": FAKE_VERSION_ID, "Plaintext": key}


def _aad(context: dict[str, str] | None) -> bytes:
    return json.dumps(context or {}, sort_keys=True).encode()


@pytest.fixture
def fake_kms() -> FakeKms:
    return FakeKms()


@pytest.fixture
def make_fake_kms() -> type[FakeKms]:
    return FakeKms
