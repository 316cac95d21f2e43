"""The metadata store interface.

Each write method is one transaction that is durable when it returns, so
the agent replies only after its change would survive a crash. Updates
of a key are compare-and-swap on ``KeyRecord.revision``: a stale writer
gets ``ConflictError`` and must reread. Backends: ``sqlite.SqliteStore``.
"""

from __future__ import annotations

import abc

from agent.store.access import AccessStore
from agent.store.certificates import CertificateStore
from agent.store.imports import ImportStore
from agent.store.records import (
    AliasRecord, KeyFilter, KeyRecord, KeyVersionRecord, SecretFilter, SecretRecord,
    SecretVersionRecord,
)

RESOURCE_KEY = "key"
RESOURCE_SECRET = "secret"


def exposed_data_dir(data_dir: object, mode: int) -> str | None:
    """Return why the store rejects a data directory of ``mode``, or None.

    Other users must have no access to it: the database holds sealed key
    material and the audit file sits beside it.
    """
    if mode & 0o007:
        return (f"data directory {data_dir} is accessible by other users; "
                f"run chmod o-rwx {data_dir}")
    return None


class StoreError(Exception):
    """The store failed; the agent answers with an internal error."""


class ConflictError(StoreError):
    """A compare-and-swap lost against a concurrent writer."""


class LimitError(StoreError):
    """A write would take a resource past its count limit."""


class DuplicateError(StoreError):
    """A unique name (such as an alias) is already taken."""


class SecretStore(abc.ABC):
    """Secrets, their versions and stages; tags use ``RESOURCE_SECRET``.

    Every change of a secret (metadata, stages, versions) goes through
    ``write_secret``, a compare-and-swap on ``SecretRecord.revision``, so
    a writer that read a stale stage map gets ``ConflictError``.
    """

    @abc.abstractmethod
    async def insert_secret(self, secret: SecretRecord, version: SecretVersionRecord,
                            tags: dict[str, str]) -> None:
        """Insert a new secret with its first version, stages and tags.

        Raises:
            DuplicateError: a secret of that name exists (in any state).
        """

    @abc.abstractmethod
    async def write_secret(self, secret: SecretRecord,
                           new_version: SecretVersionRecord | None,
                           drop_versions: list[str]) -> SecretRecord:
        """Store ``secret`` and its stage map if the revision still matches.

        Inserts ``new_version`` and deletes ``drop_versions`` in the same
        transaction.

        Returns:
            The stored record, with ``revision`` incremented.
        Raises:
            ConflictError: the secret changed or vanished since it was read.
            DuplicateError: ``new_version`` has a version id already used.
        """

    @abc.abstractmethod
    async def get_secret(self, secret_name: str) -> SecretRecord | None:
        """Return the secret with its stage map, or None."""

    @abc.abstractmethod
    async def read_secret_version(
            self, secret_name: str, version_id: str | None, stage: str | None,
    ) -> tuple[SecretRecord | None, SecretVersionRecord | None]:
        """Return a secret and one version, read in one snapshot.

        The version is ``version_id`` if given, else the one that carries
        ``stage``; it is None if no such version exists.
        """

    @abc.abstractmethod
    async def list_secret_versions(self, secret_name: str) -> list[SecretVersionRecord]:
        """Return the versions of a secret, oldest first."""

    @abc.abstractmethod
    async def list_secrets(self, where: SecretFilter, offset: int,
                           limit: int) -> tuple[list[SecretRecord], int]:
        """Return one page of secrets, oldest first, and the total count."""

    @abc.abstractmethod
    async def delete_secret(self, secret_name: str) -> bool:
        """Delete a secret with its versions and tags at once.

        Returns False if it does not exist.
        """

    @abc.abstractmethod
    async def secrets_due_for_deletion(self, now: str) -> list[str]:
        """Return names of secrets whose recovery window has ended."""

    @abc.abstractmethod
    async def purge_secret(self, secret_name: str, now: str) -> bool:
        """Delete a secret whose recovery window has ended.

        Returns False if another writer did it first, or the secret was
        restored or is not due.
        """

    @abc.abstractmethod
    async def secrets_due_for_rotation(self, now: str) -> list[str]:
        """Return names of secrets with automatic rotation due by ``now``,
        excluding secrets in their recovery window."""


class Store(SecretStore, AccessStore, ImportStore, CertificateStore):
    """Keys, key versions, aliases and tags of every keystore, secrets and
    certificates."""

    @abc.abstractmethod
    async def insert_key(self, key: KeyRecord, version: KeyVersionRecord | None,
                         tags: dict[str, str]) -> None:
        """Insert a new key with its first version (if any) and tags."""

    @abc.abstractmethod
    async def update_key(self, key: KeyRecord) -> KeyRecord:
        """Write ``key`` if the stored revision equals ``key.revision``.

        Returns:
            The stored record, with ``revision`` incremented.
        Raises:
            ConflictError: the key changed or vanished since it was read.
        """

    @abc.abstractmethod
    async def get_key(self, key_id: str) -> KeyRecord | None:
        """Return the key or None."""

    @abc.abstractmethod
    async def list_keys(self, where: KeyFilter, offset: int,
                        limit: int) -> tuple[list[KeyRecord], int]:
        """Return one page of keys, oldest first, and the total count."""

    @abc.abstractmethod
    async def get_version(self, version_id: str) -> KeyVersionRecord | None:
        """Return a key version or None."""

    @abc.abstractmethod
    async def list_versions(self, key_id: str) -> list[KeyVersionRecord]:
        """Return the versions of a key, oldest first."""

    @abc.abstractmethod
    async def add_key_version(self, key: KeyRecord,
                              version: KeyVersionRecord) -> KeyRecord:
        """Insert ``version`` and write ``key`` in one transaction.

        ``key`` is written as by ``update_key``, a compare-and-swap on its
        revision; when that fails, the version is not inserted either.

        Returns:
            The stored key, with ``revision`` incremented.
        Raises:
            ConflictError: the key changed or vanished since it was read.
        """

    @abc.abstractmethod
    async def keys_due_for_rotation(self, now: str) -> list[str]:
        """Return ids of Enabled keys whose automatic rotation is due by ``now``."""

    @abc.abstractmethod
    async def create_alias(self, alias: AliasRecord) -> None:
        """Insert an alias; raise DuplicateError if the name is taken."""

    @abc.abstractmethod
    async def update_alias(self, alias_name: str, key_id: str, now: str) -> bool:
        """Point an alias at another key; return False if it does not exist."""

    @abc.abstractmethod
    async def delete_alias(self, alias_name: str) -> bool:
        """Delete an alias; return False if it does not exist."""

    @abc.abstractmethod
    async def get_alias(self, alias_name: str) -> AliasRecord | None:
        """Return the alias or None."""

    @abc.abstractmethod
    async def list_aliases(self, key_id: str | None, offset: int, limit: int,
                           keystores: tuple[str, ...] = ()
                           ) -> tuple[list[AliasRecord], int]:
        """Return one page of aliases (of one key, or all) and the total.

        With ``keystores``, only aliases of keys in those keystores count.
        """

    @abc.abstractmethod
    async def set_tags(self, resource_type: str, resource_id: str,
                       tags: dict[str, str], max_tags: int | None = None) -> None:
        """Add or overwrite tags on a resource.

        Raises:
            LimitError: the resource would carry more than ``max_tags``
                tags; checked in the same transaction as the write.
        """

    @abc.abstractmethod
    async def remove_tags(self, resource_type: str, resource_id: str,
                          tag_keys: list[str]) -> None:
        """Remove tags by key; missing keys are ignored."""

    @abc.abstractmethod
    async def get_tags(self, resource_type: str, resource_id: str) -> dict[str, str]:
        """Return the tags of a resource."""

    @abc.abstractmethod
    async def keys_due_for_deletion(self, now: str) -> list[str]:
        """Return ids of keys pending deletion whose delete date has passed."""

    @abc.abstractmethod
    async def purge_key(self, key_id: str, now: str) -> bool:
        """Delete a key pending deletion whose date has passed, with its
        versions, aliases and tags. Return False if another writer did it
        first or the key is no longer due."""

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Close connections; pending writes have completed."""
