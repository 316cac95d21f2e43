"""Records and store interface of key material import (BYOK).

An import token is issued by GetParametersForImport for one key: it
carries a fresh RSA_2048 wrapping key pair (the private key sealed by
the keystore), the wrapping algorithm, and a 24-hour lifetime. The
caller keeps the token itself. The store keeps only its SHA-256, and
marks it used by the import that consumes it. The imported material of
a key keeps its version id and key check value after DeleteKeyMaterial,
so only the same material can come back, under the same version id, and
ciphertext made before the deletion decrypts again.
"""

from __future__ import annotations

import abc
import dataclasses

from agent.store.records import KeyRecord, KeyVersionRecord


class ImportTokenSpentError(Exception):
    """The import token was used already, or does not belong to the key."""


@dataclasses.dataclass(frozen=True)
class ImportTokenRecord:
    """An import token, by the hex SHA-256 of the token text."""

    token_hash: str
    key_id: str
    wrapping_algorithm: str
    wrapping_key_spec: str
    protection_level: str
    wrap_format: int
    wrapped: bytes = dataclasses.field(repr=False)
    public_key: bytes
    creation_date: str
    expire_time: str
    used: bool = False


@dataclasses.dataclass(frozen=True)
class ImportedMaterialRecord:
    """The version id and key check value of a key's imported material."""

    key_id: str
    version_id: str
    fingerprint: bytes = dataclasses.field(repr=False)


class ImportStore(abc.ABC):
    """Import tokens and the imported material of EXTERNAL keys."""

    @abc.abstractmethod
    async def insert_import_token(self, token: ImportTokenRecord) -> None:
        """Insert a new import token."""

    @abc.abstractmethod
    async def get_import_token(self, token_hash: str) -> ImportTokenRecord | None:
        """Return the token with that hash, or None."""

    @abc.abstractmethod
    async def spend_import_token(self, token_hash: str) -> bool:
        """Mark an unused token used, so it serves no later call.

        Returns:
            True if this call spent the token, False if it was used already.
        """

    @abc.abstractmethod
    async def get_imported_material(self, key_id: str) -> ImportedMaterialRecord | None:
        """Return what the store keeps of a key's imported material, or None."""

    @abc.abstractmethod
    async def complete_import(self, key: KeyRecord, version: KeyVersionRecord,
                              token_hash: str, fingerprint: bytes,
                              token_spent: bool = False) -> KeyRecord:
        """Store imported material and consume its token in one transaction.

        Marks the token used (or, with ``token_spent``, requires that the
        caller spent it with ``spend_import_token``), writes ``key`` as ``Store.update_key`` does
        (a compare-and-swap on ``key.revision``), inserts ``version`` or
        replaces the material of the version with its id, and records the
        fingerprint on the first import.

        Returns:
            The stored key, with ``revision`` incremented.
        Raises:
            ImportTokenSpentError: the token is used or of another key.
            ConflictError: the key changed since it was read.
        """

    @abc.abstractmethod
    async def delete_key_material(self, key: KeyRecord) -> KeyRecord:
        """Write ``key`` as ``update_key`` does and erase its versions' material.

        The version rows stay, with empty material, so a re-import can
        restore them under the same ids.

        Raises:
            ConflictError: the key changed since it was read.
        """

    @abc.abstractmethod
    async def keys_with_expired_material(self, now: str) -> list[str]:
        """Return ids of keys whose imported material expired by ``now``."""

    @abc.abstractmethod
    async def delete_import_tokens_before(self, time: str) -> int:
        """Delete tokens that expired before ``time``; return how many."""
