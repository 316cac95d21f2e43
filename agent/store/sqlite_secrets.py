"""The secrets tables of the SQLite store, as a mixin of ``SqliteStore``.

Tables (created by the second migration in ``sqlite.MIGRATIONS``):
``secrets`` (one row per secret, with ``revision`` for compare-and-swap),
``secret_versions`` (sealed values) and ``secret_stages`` (one row per
stage, so a stage is on at most one version). Reads that need a
consistent view of several tables run in one read transaction.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from typing import Any, Callable, TypeVar

from agent.store.base import RESOURCE_SECRET, ConflictError, StoreError
from agent.store.limits import SECRETS, ResourceLimits, check_count
from agent.store.lookups import remembered
from agent.store.records import SecretFilter, SecretRecord, SecretVersionRecord

T = TypeVar("T")

SECRETS_MIGRATION = """
    CREATE TABLE secrets (
        secret_name TEXT PRIMARY KEY,
        secret_type TEXT NOT NULL,
        encryption_key_id TEXT NOT NULL,
        keystore TEXT NOT NULL,
        description TEXT NOT NULL,
        creator TEXT NOT NULL,
        create_time TEXT NOT NULL,
        update_time TEXT NOT NULL,
        planned_delete_time TEXT,
        automatic_rotation TEXT NOT NULL,
        rotation_interval INTEGER,
        last_rotation_date TEXT,
        next_rotation_date TEXT,
        last_rotation_error TEXT,
        revision INTEGER NOT NULL,
        seq INTEGER NOT NULL
    );
    CREATE INDEX secrets_by_seq ON secrets (seq);
    CREATE INDEX secrets_by_delete_time ON secrets (planned_delete_time);
    CREATE INDEX secrets_by_rotation ON secrets (automatic_rotation, next_rotation_date);
    CREATE TABLE secret_versions (
        secret_name TEXT NOT NULL REFERENCES secrets (secret_name),
        version_id TEXT NOT NULL,
        create_time TEXT NOT NULL,
        data_type TEXT NOT NULL,
        value_format INTEGER NOT NULL,
        data_key_blob BLOB NOT NULL,
        iv BLOB NOT NULL,
        ciphertext BLOB NOT NULL,
        seq INTEGER NOT NULL,
        PRIMARY KEY (secret_name, version_id)
    );
    CREATE INDEX secret_versions_by_seq ON secret_versions (secret_name, seq);
    CREATE TABLE secret_stages (
        secret_name TEXT NOT NULL,
        stage TEXT NOT NULL,
        version_id TEXT NOT NULL,
        PRIMARY KEY (secret_name, stage),
        FOREIGN KEY (secret_name, version_id)
            REFERENCES secret_versions (secret_name, version_id)
    )
"""

_SECRET_COLUMNS = [f.name for f in dataclasses.fields(SecretRecord)
                   if f.name != "stages"]
_VERSION_COLUMNS = [f.name for f in dataclasses.fields(SecretVersionRecord)]
_BLOB_COLUMNS = ("data_key_blob", "iv", "ciphertext")


def _version_from_row(row: sqlite3.Row) -> SecretVersionRecord:
    values = {name: row[name] for name in _VERSION_COLUMNS}
    for name in _BLOB_COLUMNS:
        values[name] = bytes(values[name])
    return SecretVersionRecord(**values)


def _stages(conn: sqlite3.Connection, secret_name: str) -> dict[str, str]:
    rows = conn.execute(
        "SELECT stage, version_id FROM secret_stages WHERE secret_name = ? "
        "ORDER BY stage", (secret_name,)).fetchall()
    return {row[0]: row[1] for row in rows}


def _secret(conn: sqlite3.Connection, secret_name: str) -> SecretRecord | None:
    row = conn.execute("SELECT * FROM secrets WHERE secret_name = ?",
                       (secret_name,)).fetchone()
    if row is None:
        return None
    values = {name: row[name] for name in _SECRET_COLUMNS}
    return SecretRecord(**values, stages=_stages(conn, secret_name))


def _insert_version(conn: sqlite3.Connection, version: SecretVersionRecord,
                    seq: int) -> None:
    values = dataclasses.asdict(version)
    values["seq"] = seq
    names = ", ".join(values)
    marks = ", ".join("?" for _ in values)
    conn.execute(f"INSERT INTO secret_versions ({names}) VALUES ({marks})",
                 tuple(values.values()))


def _replace_stages(conn: sqlite3.Connection, secret: SecretRecord) -> None:
    conn.execute("DELETE FROM secret_stages WHERE secret_name = ?",
                 (secret.secret_name,))
    conn.executemany(
        "INSERT INTO secret_stages VALUES (?, ?, ?)",
        [(secret.secret_name, stage, version_id)
         for stage, version_id in secret.stages.items()])


def _delete_secret_rows(conn: sqlite3.Connection, secret_name: str) -> None:
    conn.execute("DELETE FROM secret_stages WHERE secret_name = ?", (secret_name,))
    conn.execute("DELETE FROM secret_versions WHERE secret_name = ?", (secret_name,))
    conn.execute("DELETE FROM tags WHERE resource_type = ? AND resource_id = ?",
                 (RESOURCE_SECRET, secret_name))
    conn.execute("DELETE FROM secrets WHERE secret_name = ?", (secret_name,))


class SqliteSecretsMixin:
    """Secret methods of ``SqliteStore``; see the module docstring.

    It relies on ``_write``, ``_read``, ``_next_seq``, ``_reader`` and
    ``limits`` of the class it is mixed into.
    """

    limits: ResourceLimits
    _reader: sqlite3.Connection
    _write: Callable[..., Any]
    _read: Callable[..., list[sqlite3.Row]]
    _next_seq: Callable[[sqlite3.Connection], int]

    def _snapshot(self, work: Callable[[sqlite3.Connection], T]) -> T:
        # No await happens inside, so no other task uses the reader
        # connection until the read transaction ends.
        conn = self._reader
        try:
            conn.execute("BEGIN")
            try:
                return work(conn)
            finally:
                conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StoreError(f"store read failed: {exc}") from exc

    async def insert_secret(self, secret: SecretRecord, version: SecretVersionRecord,
                            tags: dict[str, str]) -> None:
        def work(conn: sqlite3.Connection) -> None:
            check_count(conn, self.limits, SECRETS, secret.keystore)
            values = {name: getattr(secret, name) for name in _SECRET_COLUMNS}
            values["seq"] = self._next_seq(conn)
            names = ", ".join(values)
            marks = ", ".join("?" for _ in values)
            conn.execute(f"INSERT INTO secrets ({names}) VALUES ({marks})",
                         tuple(values.values()))
            _insert_version(conn, version, self._next_seq(conn))
            _replace_stages(conn, secret)
            conn.executemany(
                "INSERT INTO tags VALUES (?, ?, ?, ?)",
                [(RESOURCE_SECRET, secret.secret_name, k, v) for k, v in tags.items()])

        await self._write(work)

    async def write_secret(self, secret: SecretRecord,
                           new_version: SecretVersionRecord | None,
                           drop_versions: list[str]) -> SecretRecord:
        stored = dataclasses.replace(secret, revision=secret.revision + 1)

        def work(conn: sqlite3.Connection) -> None:
            values = {name: getattr(stored, name) for name in _SECRET_COLUMNS
                      if name != "secret_name"}
            assignments = ", ".join(f"{name} = ?" for name in values)
            cursor = conn.execute(
                f"UPDATE secrets SET {assignments} "
                "WHERE secret_name = ? AND revision = ?",
                (*values.values(), secret.secret_name, secret.revision))
            if cursor.rowcount != 1:
                raise ConflictError(f"secret {secret.secret_name} changed concurrently")
            if new_version is not None:
                _insert_version(conn, new_version, self._next_seq(conn))
            _replace_stages(conn, stored)
            conn.executemany(
                "DELETE FROM secret_versions WHERE secret_name = ? AND version_id = ?",
                [(secret.secret_name, version_id) for version_id in drop_versions])

        await self._write(work)
        return stored

    @remembered
    async def get_secret(self, secret_name: str) -> SecretRecord | None:
        return self._snapshot(lambda conn: _secret(conn, secret_name))

    async def read_secret_version(
            self, secret_name: str, version_id: str | None, stage: str | None,
    ) -> tuple[SecretRecord | None, SecretVersionRecord | None]:
        def work(conn: sqlite3.Connection):
            secret = _secret(conn, secret_name)
            if secret is None:
                return None, None
            wanted = version_id if version_id is not None else secret.stages.get(
                stage or "")
            row = conn.execute(
                "SELECT * FROM secret_versions WHERE secret_name = ? "
                "AND version_id = ?", (secret_name, wanted)).fetchone()
            return secret, _version_from_row(row) if row is not None else None

        return self._snapshot(work)

    async def list_secret_versions(self, secret_name: str) -> list[SecretVersionRecord]:
        rows = self._read(
            "SELECT * FROM secret_versions WHERE secret_name = ? ORDER BY seq",
            (secret_name,))
        return [_version_from_row(row) for row in rows]

    async def list_secrets(self, where: SecretFilter, offset: int,
                           limit: int) -> tuple[list[SecretRecord], int]:
        clauses, args = _secret_filter_sql(where)
        condition = " AND ".join(clauses) or "1"

        def work(conn: sqlite3.Connection):
            total = conn.execute(
                f"SELECT count(*) FROM secrets WHERE {condition}", args).fetchone()[0]
            names = conn.execute(
                f"SELECT secret_name FROM secrets WHERE {condition} "
                "ORDER BY seq LIMIT ? OFFSET ?", (*args, limit, offset)).fetchall()
            return [_secret(conn, row[0]) for row in names], total

        return self._snapshot(work)

    async def delete_secret(self, secret_name: str) -> bool:
        def work(conn: sqlite3.Connection) -> bool:
            found = conn.execute("SELECT 1 FROM secrets WHERE secret_name = ?",
                                 (secret_name,)).fetchone()
            if found is not None:
                _delete_secret_rows(conn, secret_name)
            return found is not None

        return await self._write(work)

    async def secrets_due_for_deletion(self, now: str) -> list[str]:
        rows = self._read(
            "SELECT secret_name FROM secrets WHERE planned_delete_time <= ? "
            "ORDER BY planned_delete_time", (now,))
        return [row[0] for row in rows]

    async def purge_secret(self, secret_name: str, now: str) -> bool:
        def work(conn: sqlite3.Connection) -> bool:
            due = conn.execute(
                "SELECT 1 FROM secrets WHERE secret_name = ? "
                "AND planned_delete_time <= ?", (secret_name, now)).fetchone()
            if due is not None:
                _delete_secret_rows(conn, secret_name)
            return due is not None

        return await self._write(work)

    async def secrets_due_for_rotation(self, now: str) -> list[str]:
        rows = self._read(
            "SELECT secret_name FROM secrets WHERE automatic_rotation = 'Enabled' "
            "AND next_rotation_date <= ? AND planned_delete_time IS NULL "
            "ORDER BY next_rotation_date", (now,))
        return [row[0] for row in rows]


_EXACT_COLUMNS = {
    "secret_type": "secret_type",
    "creator": "creator",
    "keystore": "keystore",
}


def _secret_filter_sql(where: SecretFilter) -> tuple[list[str], tuple[Any, ...]]:
    clauses: list[str] = []
    args: list[Any] = []

    def any_of(template: str, values: tuple[str, ...]) -> None:
        clauses.append("(" + " OR ".join(template for _ in values) + ")")
        args.extend(values)

    for field, column in _EXACT_COLUMNS.items():
        if getattr(where, field):
            any_of(f"{column} = ?", getattr(where, field))
    if where.secret_name:
        any_of("instr(secret_name, ?) > 0", where.secret_name)
    if where.description:
        any_of("instr(description, ?) > 0", where.description)
    tag_query = ("secret_name IN (SELECT resource_id FROM tags WHERE "
                 f"resource_type = '{RESOURCE_SECRET}' AND {{}} = ?)")
    if where.tag_key:
        any_of(tag_query.format("tag_key"), where.tag_key)
    if where.tag_value:
        any_of(tag_query.format("tag_value"), where.tag_value)
    return clauses, tuple(args)
