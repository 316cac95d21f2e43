"""The key import tables of the SQLite store, as a mixin of ``SqliteStore``.

``IMPORTS_MIGRATION`` (in ``sqlite.MIGRATIONS``) adds the public key
column of key versions, ``import_tokens`` and ``imported_material``.
Both tables cascade on key deletion. An import is one transaction: the
token is consumed with a conditional UPDATE and the key written with a
compare-and-swap, so of two agents importing with one token exactly
one succeeds.
"""

from __future__ import annotations

import dataclasses
import sqlite3

from agent.store.imports import (
    ImportedMaterialRecord, ImportStore, ImportTokenRecord, ImportTokenSpentError,
)
from agent.store.records import KeyRecord, KeyVersionRecord

IMPORTS_MIGRATION = """
    ALTER TABLE key_versions ADD COLUMN public_key BLOB NOT NULL DEFAULT x'';
    CREATE TABLE import_tokens (
        token_hash TEXT PRIMARY KEY,
        key_id TEXT NOT NULL REFERENCES keys (key_id) ON DELETE CASCADE,
        wrapping_algorithm TEXT NOT NULL,
        wrapping_key_spec TEXT NOT NULL,
        protection_level TEXT NOT NULL,
        wrap_format INTEGER NOT NULL,
        wrapped BLOB NOT NULL,
        public_key BLOB NOT NULL,
        creation_date TEXT NOT NULL,
        expire_time TEXT NOT NULL,
        used INTEGER NOT NULL
    );
    CREATE INDEX import_tokens_by_key ON import_tokens (key_id);
    CREATE INDEX import_tokens_by_expiry ON import_tokens (expire_time);
    CREATE TABLE imported_material (
        key_id TEXT PRIMARY KEY REFERENCES keys (key_id) ON DELETE CASCADE,
        version_id TEXT NOT NULL,
        fingerprint BLOB NOT NULL
    );
    CREATE INDEX keys_by_material_expiry ON keys (material_expire_time)
"""

_TOKEN_FIELDS = [f.name for f in dataclasses.fields(ImportTokenRecord)]


def _token_from_row(row: sqlite3.Row) -> ImportTokenRecord:
    values = {name: row[name] for name in _TOKEN_FIELDS}
    values["wrapped"] = bytes(values["wrapped"])
    values["public_key"] = bytes(values["public_key"])
    values["used"] = bool(values["used"])
    return ImportTokenRecord(**values)


class SqliteImportsMixin(ImportStore):
    """``ImportStore`` on the tables above; needs SqliteStore's plumbing."""

    async def insert_import_token(self, token: ImportTokenRecord) -> None:
        def work(conn: sqlite3.Connection) -> None:
            values = dataclasses.asdict(token)
            names = ", ".join(values)
            marks = ", ".join("?" for _ in values)
            conn.execute(f"INSERT INTO import_tokens ({names}) VALUES ({marks})",
                         tuple(values.values()))

        await self._write(work)

    async def get_import_token(self, token_hash: str) -> ImportTokenRecord | None:
        rows = self._read("SELECT * FROM import_tokens WHERE token_hash = ?",
                          (token_hash,))
        return _token_from_row(rows[0]) if rows else None

    async def get_imported_material(self, key_id: str) -> ImportedMaterialRecord | None:
        rows = self._read(
            "SELECT key_id, version_id, fingerprint FROM imported_material "
            "WHERE key_id = ?", (key_id,))
        if not rows:
            return None
        return ImportedMaterialRecord(rows[0][0], rows[0][1], bytes(rows[0][2]))

    async def spend_import_token(self, token_hash: str) -> bool:
        return await self._write(lambda conn: conn.execute(
            "UPDATE import_tokens SET used = 1 WHERE token_hash = ? AND used = 0",
            (token_hash,)).rowcount == 1)

    async def complete_import(self, key: KeyRecord, version: KeyVersionRecord,
                              token_hash: str, fingerprint: bytes,
                              token_spent: bool = False) -> KeyRecord:
        stored = dataclasses.replace(key, revision=key.revision + 1)

        def work(conn: sqlite3.Connection) -> None:
            cursor = conn.execute(
                "UPDATE import_tokens SET used = 1 WHERE token_hash = ? "
                "AND key_id = ? AND used = ?",
                (token_hash, key.key_id, int(token_spent)))
            if cursor.rowcount != 1:
                raise ImportTokenSpentError(f"import token of key {key.key_id} spent")
            self._swap_key(conn, key, stored)
            self._put_imported_version(conn, version)
            conn.execute(
                "INSERT INTO imported_material VALUES (?, ?, ?) "
                "ON CONFLICT (key_id) DO NOTHING",
                (key.key_id, version.version_id, fingerprint))

        await self._write(work)
        return stored

    def _put_imported_version(self, conn: sqlite3.Connection,
                              version: KeyVersionRecord) -> None:
        cursor = conn.execute(
            "UPDATE key_versions SET protection_level = ?, wrap_format = ?, "
            "wrapped = ? WHERE version_id = ? AND key_id = ?",
            (version.protection_level, version.wrap_format, version.wrapped,
             version.version_id, version.key_id))
        if cursor.rowcount == 0:
            self._insert_version(conn, version)

    async def delete_key_material(self, key: KeyRecord) -> KeyRecord:
        stored = dataclasses.replace(key, revision=key.revision + 1)

        def work(conn: sqlite3.Connection) -> None:
            self._swap_key(conn, key, stored)
            conn.execute("UPDATE key_versions SET wrapped = x'' WHERE key_id = ?",
                         (key.key_id,))

        await self._write(work)
        return stored

    async def keys_with_expired_material(self, now: str) -> list[str]:
        rows = self._read(
            "SELECT key_id FROM keys WHERE material_expire_time <= ? "
            "ORDER BY material_expire_time", (now,))
        return [row[0] for row in rows]

    async def delete_import_tokens_before(self, time: str) -> int:
        def work(conn: sqlite3.Connection) -> int:
            cursor = conn.execute("DELETE FROM import_tokens WHERE expire_time < ?",
                                  (time,))
            return cursor.rowcount

        return await self._write(work)

