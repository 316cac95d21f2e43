"""Client keys: an Ed25519 private key the agent issued to one principal.

``CreateClientKey`` returns ``ClientKeyId`` and ``PrivateKeyData`` (a
PKCS#8 PEM); saved as a JSON file they form a client key file, which
``ClientKey.from_file`` loads (``KeyId`` is accepted in place of
``ClientKeyId``, as in Alibaba Cloud client key files). The file must
not be readable by group or others. Clients pick the file up from
``$KMS_AGENT_CLIENT_KEY`` unless given a key, and prove possession at
handshake by signing the agent's nonce; the private key never leaves
the process. ``cryptography`` is imported only when a key is loaded.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from client.errors import InvalidParameterError
from client.wire import MAX_CLIENT_KEY_ID, client_key_proof_message

CLIENT_KEY_ENV = "KMS_AGENT_CLIENT_KEY"


class ClientKey:
    """A client key id with its private key; the repr names only the id."""

    def __init__(self, client_key_id: str, private_key: Any):
        self.client_key_id = client_key_id
        self._private_key = private_key

    def __repr__(self) -> str:
        return f"ClientKey({self.client_key_id!r})"

    def sign_challenge(self, nonce: bytes) -> bytes:
        """Return the proof signature over the agent's ``nonce``."""
        return self._private_key.sign(
            client_key_proof_message(self.client_key_id, nonce))

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> "ClientKey":
        """Build a key from a parsed client key file.

        Raises:
            InvalidParameterError: a field is missing, the key id is not 1
                to ``MAX_CLIENT_KEY_ID`` printable ASCII characters (the
                limit of the handshake), or the private key is not an
                unencrypted Ed25519 PKCS#8 PEM.
        """
        from cryptography.hazmat.primitives.asymmetric.ed25519 import (
            Ed25519PrivateKey,
        )
        from cryptography.hazmat.primitives.serialization import load_pem_private_key

        key_id = document.get("ClientKeyId", document.get("KeyId"))
        pem = document.get("PrivateKeyData")
        if not isinstance(key_id, str) or not isinstance(pem, str):
            raise InvalidParameterError(
                "A client key file needs the strings ClientKeyId (or KeyId) and "
                "PrivateKeyData.")
        _check_key_id(key_id)
        try:
            private_key = load_pem_private_key(pem.encode("ascii"), password=None)
        except (ValueError, TypeError, UnicodeEncodeError):
            private_key = None
        if not isinstance(private_key, Ed25519PrivateKey):
            raise InvalidParameterError(
                f"PrivateKeyData of client key {key_id} is not an unencrypted "
                "Ed25519 private key in PEM form.")
        return cls(key_id, private_key)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> "ClientKey":
        """Load a client key file.

        Raises:
            InvalidParameterError: the file cannot be read, is readable by
                group or others, or is not a valid client key file; the
                message names the file.
        """
        path = Path(path)
        try:
            with open(path, "rb") as stream:
                mode = os.fstat(stream.fileno()).st_mode & 0o777
                content = stream.read()
        except OSError as exc:
            raise InvalidParameterError(
                f"Cannot read the client key file {path}: {exc.strerror}.") from None
        if mode & 0o077:
            raise InvalidParameterError(
                f"The client key file {path} has mode {mode:04o}; it must not be "
                f"accessible to group or others (chmod 600 {path}).")
        try:
            document = json.loads(content)
        except ValueError:
            document = None
        if not isinstance(document, dict):
            raise InvalidParameterError(
                f"The client key file {path} is not a JSON object.")
        try:
            return cls.from_json(document)
        except InvalidParameterError as error:
            raise InvalidParameterError(
                f"The client key file {path} is invalid: {error.message}") from None


def _check_key_id(key_id: str) -> None:
    # The handshake accepts only these ids, so a longer one or one with a
    # control character would fail later, when the first request is sent.
    # The message does not repeat the id, which may be any text.
    if not 0 < len(key_id) <= MAX_CLIENT_KEY_ID:
        problem = f"it has {len(key_id)}"
    elif not (key_id.isascii() and key_id.isprintable()):
        problem = "it contains a control or non-ASCII character"
    else:
        return
    raise InvalidParameterError(
        f"The ClientKeyId (or KeyId) must be 1 to {MAX_CLIENT_KEY_ID} printable "
        f"ASCII characters, but {problem}.")


def resolve_client_key(client_key: "ClientKey | str | os.PathLike[str] | None"
                       ) -> "ClientKey | None":
    """Return ``client_key``, loading it from a path or ``$KMS_AGENT_CLIENT_KEY``.

    Raises:
        InvalidParameterError: the file cannot be loaded.
    """
    if isinstance(client_key, ClientKey):
        return client_key
    if client_key is None:
        client_key = os.environ.get(CLIENT_KEY_ENV) or None
        if client_key is None:
            return None
    return ClientKey.from_file(client_key)
