"""The SQLite metadata store.

One database file in the data directory, in WAL mode with
``synchronous=FULL``: a commit is on disk before a write method returns,
and a crash at any point (kill -9 included) leaves the last committed
state. Reads run inline on a connection owned by the trio thread; writes
run one at a time in a worker thread on a second connection, so an
fsync never blocks the event loop. The point lookups a request makes
(key, version, alias, policy, secret) are remembered until the next
commit of any connection, see ``agent.store.lookups``. The schema version lives in
``PRAGMA user_version``; ``MIGRATIONS`` upgrades older files in order.
"""

from __future__ import annotations

import dataclasses
import os
import sqlite3
from pathlib import Path
from typing import Any, Callable, TypeVar

import trio

from agent.store.base import (
    RESOURCE_KEY, RESOURCE_SECRET, ConflictError, DuplicateError, LimitError, Store,
    StoreError, exposed_data_dir,
)
from agent.store.certificates import RESOURCE_CERTIFICATE
from agent.store.limits import (
    ALIASES, KEYS, LIMITS_MIGRATION, ResourceLimits, alias_keystore, check_count,
)
from agent.store.lookups import LookupCache, remembered
from agent.store.sqlite_access import ACCESS_MIGRATION, SqliteAccessMixin
from agent.store.sqlite_certificates import (
    CERTIFICATES_MIGRATION, SqliteCertificatesMixin,
)
from agent.store.sqlite_imports import IMPORTS_MIGRATION, SqliteImportsMixin
from agent.store.sqlite_secrets import SECRETS_MIGRATION, SqliteSecretsMixin
from agent.store.records import (
    ENABLED, PENDING_DELETION, AliasRecord, KeyFilter, KeyRecord, KeyVersionRecord,
)

T = TypeVar("T")
DATABASE_NAME = "kms-agent.db"

MIGRATIONS: list[str] = [
    # 1: keys, versions, aliases, tags.
    """
    CREATE TABLE keys (
        key_id TEXT PRIMARY KEY,
        keystore TEXT NOT NULL,
        key_spec TEXT NOT NULL,
        key_usage TEXT NOT NULL,
        origin TEXT NOT NULL,
        protection_level TEXT NOT NULL,
        description TEXT NOT NULL,
        creator TEXT NOT NULL,
        creation_date TEXT NOT NULL,
        state TEXT NOT NULL,
        primary_version_id TEXT,
        deletion_protection INTEGER NOT NULL,
        deletion_protection_description TEXT NOT NULL,
        delete_date TEXT,
        automatic_rotation TEXT NOT NULL,
        rotation_interval TEXT,
        last_rotation_date TEXT,
        next_rotation_date TEXT,
        material_expire_time TEXT,
        revision INTEGER NOT NULL,
        seq INTEGER NOT NULL
    );
    CREATE INDEX keys_by_seq ON keys (seq);
    CREATE INDEX keys_by_delete_date ON keys (state, delete_date);
    CREATE TABLE key_versions (
        version_id TEXT PRIMARY KEY,
        key_id TEXT NOT NULL REFERENCES keys (key_id),
        creation_date TEXT NOT NULL,
        protection_level TEXT NOT NULL,
        wrap_format INTEGER NOT NULL,
        wrapped BLOB NOT NULL,
        seq INTEGER NOT NULL
    );
    CREATE INDEX key_versions_by_key ON key_versions (key_id, seq);
    CREATE TABLE aliases (
        alias_name TEXT PRIMARY KEY,
        key_id TEXT NOT NULL REFERENCES keys (key_id),
        creation_date TEXT NOT NULL,
        update_date TEXT NOT NULL
    );
    CREATE INDEX aliases_by_key ON aliases (key_id);
    CREATE TABLE tags (
        resource_type TEXT NOT NULL,
        resource_id TEXT NOT NULL,
        tag_key TEXT NOT NULL,
        tag_value TEXT NOT NULL,
        PRIMARY KEY (resource_type, resource_id, tag_key)
    );
    CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
    INSERT INTO counters VALUES ('seq', 0);
    """,
    # 2: secrets, their versions and stages.
    SECRETS_MIGRATION,
    # 3: client keys and resource policies.
    ACCESS_MIGRATION,
    # 4: public keys of versions, import tokens, imported material.
    IMPORTS_MIGRATION,
    # 5: indexes for the resource count limits.
    LIMITS_MIGRATION,
    # 6: certificates and their key pairs.
    CERTIFICATES_MIGRATION,
]

# The row that must exist for a resource to take tags: a secret in its
# recovery window takes none.
_TAGGABLE = {
    RESOURCE_KEY: "SELECT 1 FROM keys WHERE key_id = ?",
    RESOURCE_SECRET: "SELECT 1 FROM secrets WHERE secret_name = ? "
                     "AND planned_delete_time IS NULL",
    RESOURCE_CERTIFICATE: "SELECT 1 FROM certificates WHERE certificate_id = ?",
}

_KEY_FIELDS = [f.name for f in dataclasses.fields(KeyRecord)]
_VERSION_FIELDS = [f.name for f in dataclasses.fields(KeyVersionRecord)]


def _key_from_row(row: sqlite3.Row) -> KeyRecord:
    values = {name: row[name] for name in _KEY_FIELDS}
    values["deletion_protection"] = bool(values["deletion_protection"])
    return KeyRecord(**values)


def _version_from_row(row: sqlite3.Row) -> KeyVersionRecord:
    values = {name: row[name] for name in _VERSION_FIELDS}
    values["wrapped"] = bytes(values["wrapped"])
    values["public_key"] = bytes(values["public_key"])
    return KeyVersionRecord(**values)


def _connect(path: Path, check_same_thread: bool) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None,
                           check_same_thread=check_same_thread)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=5000")
    return conn


def migrate(conn: sqlite3.Connection) -> int:
    """Apply pending migrations; return the schema version now in force.

    Raises:
        StoreError: the file was written by a newer agent.
    """
    current = conn.execute("PRAGMA user_version").fetchone()[0]
    if current > len(MIGRATIONS):
        raise StoreError(
            f"the store has schema version {current}, newer than this agent "
            f"supports ({len(MIGRATIONS)}); upgrade the agent")
    for number in range(current + 1, len(MIGRATIONS) + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in MIGRATIONS[number - 1].split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {number}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return len(MIGRATIONS)


class SqliteStore(SqliteSecretsMixin, SqliteAccessMixin, SqliteImportsMixin,
                  SqliteCertificatesMixin, Store):
    """A ``Store`` on one SQLite file; see the module docstring."""

    def __init__(self, data_dir: Path, limits: ResourceLimits | None = None):
        # Checked in the insert transactions; see agent.store.limits.
        self.limits = limits or ResourceLimits()
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        problem = exposed_data_dir(data_dir, data_dir.stat().st_mode)
        if problem is not None:
            raise StoreError(problem)
        self.path = data_dir / DATABASE_NAME
        # SQLite gives the -wal and -shm files the mode of the database.
        os.close(os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600))
        self._writer = _connect(self.path, check_same_thread=False)
        migrate(self._writer)
        self._reader = _connect(self.path, check_same_thread=True)
        self.lookups = LookupCache(self._reader)
        self._write_lock = trio.Lock()

    # --- plumbing ----------------------------------------------------------

    async def _write(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work`` in one IMMEDIATE transaction on the writer thread."""
        def run() -> T:
            self._writer.execute("BEGIN IMMEDIATE")
            try:
                result = work(self._writer)
            except BaseException:
                self._writer.execute("ROLLBACK")
                raise
            self._writer.execute("COMMIT")
            return result

        async with self._write_lock:
            try:
                return await trio.to_thread.run_sync(run)
            except sqlite3.IntegrityError as exc:
                raise DuplicateError(str(exc)) from exc
            except sqlite3.Error as exc:
                raise StoreError(f"store write failed: {exc}") from exc
            finally:
                # Also after a failure: the commit may have landed.
                self.lookups.forget()

    def _read(self, sql: str, args: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        try:
            return self._reader.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"store read failed: {exc}") from exc

    @staticmethod
    def _next_seq(conn: sqlite3.Connection) -> int:
        conn.execute("UPDATE counters SET value = value + 1 WHERE name = 'seq'")
        return conn.execute("SELECT value FROM counters WHERE name = 'seq'").fetchone()[0]

    # --- keys --------------------------------------------------------------

    async def insert_key(self, key: KeyRecord, version: KeyVersionRecord | None,
                         tags: dict[str, str]) -> None:
        def work(conn: sqlite3.Connection) -> None:
            check_count(conn, self.limits, KEYS, key.keystore)
            values = dataclasses.asdict(key)
            values["seq"] = self._next_seq(conn)
            names = ", ".join(values)
            marks = ", ".join("?" for _ in values)
            conn.execute(f"INSERT INTO keys ({names}) VALUES ({marks})",
                         tuple(values.values()))
            if version is not None:
                self._insert_version(conn, version)
            for tag_key, tag_value in tags.items():
                conn.execute("INSERT INTO tags VALUES ('key', ?, ?, ?)",
                             (key.key_id, tag_key, tag_value))

        await self._write(work)

    def _insert_version(self, conn: sqlite3.Connection,
                        version: KeyVersionRecord) -> None:
        values = dataclasses.asdict(version)
        values["seq"] = self._next_seq(conn)
        names = ", ".join(values)
        marks = ", ".join("?" for _ in values)
        conn.execute(f"INSERT INTO key_versions ({names}) VALUES ({marks})",
                     tuple(values.values()))

    async def update_key(self, key: KeyRecord) -> KeyRecord:
        stored = dataclasses.replace(key, revision=key.revision + 1)
        await self._write(lambda conn: self._swap_key(conn, key, stored))
        return stored

    async def add_key_version(self, key: KeyRecord,
                              version: KeyVersionRecord) -> KeyRecord:
        stored = dataclasses.replace(key, revision=key.revision + 1)

        def work(conn: sqlite3.Connection) -> None:
            self._swap_key(conn, key, stored)
            self._insert_version(conn, version)

        await self._write(work)
        return stored

    @staticmethod
    def _swap_key(conn: sqlite3.Connection, key: KeyRecord, stored: KeyRecord) -> None:
        values = dataclasses.asdict(stored)
        del values["key_id"]
        assignments = ", ".join(f"{name} = ?" for name in values)
        cursor = conn.execute(
            f"UPDATE keys SET {assignments} WHERE key_id = ? AND revision = ?",
            (*values.values(), key.key_id, key.revision))
        if cursor.rowcount != 1:
            raise ConflictError(f"key {key.key_id} changed concurrently")

    @remembered
    async def get_key(self, key_id: str) -> KeyRecord | None:
        rows = self._read("SELECT * FROM keys WHERE key_id = ?", (key_id,))
        return _key_from_row(rows[0]) if rows else None

    async def list_keys(self, where: KeyFilter, offset: int,
                        limit: int) -> tuple[list[KeyRecord], int]:
        clauses, args = _key_filter_sql(where)
        condition = " AND ".join(clauses) or "1"
        total = self._read(f"SELECT count(*) FROM keys WHERE {condition}", tuple(args))
        rows = self._read(
            f"SELECT * FROM keys WHERE {condition} ORDER BY seq LIMIT ? OFFSET ?",
            (*args, limit, offset))
        return [_key_from_row(row) for row in rows], total[0][0]

    # --- versions ----------------------------------------------------------

    @remembered
    async def get_version(self, version_id: str) -> KeyVersionRecord | None:
        rows = self._read("SELECT * FROM key_versions WHERE version_id = ?",
                          (version_id,))
        return _version_from_row(rows[0]) if rows else None

    async def list_versions(self, key_id: str) -> list[KeyVersionRecord]:
        rows = self._read(
            "SELECT * FROM key_versions WHERE key_id = ? ORDER BY seq", (key_id,))
        return [_version_from_row(row) for row in rows]

    async def keys_due_for_rotation(self, now: str) -> list[str]:
        rows = self._read(
            "SELECT key_id FROM keys WHERE automatic_rotation = 'Enabled' "
            "AND state = ? AND next_rotation_date <= ? ORDER BY next_rotation_date",
            (ENABLED, now))
        return [row[0] for row in rows]

    # --- aliases -----------------------------------------------------------

    async def create_alias(self, alias: AliasRecord) -> None:
        def work(conn: sqlite3.Connection) -> None:
            keystore = alias_keystore(conn, alias.key_id)
            if keystore is not None:
                check_count(conn, self.limits, ALIASES, keystore)
            conn.execute("INSERT INTO aliases VALUES (?, ?, ?, ?)",
                         dataclasses.astuple(alias))

        await self._write(work)

    async def update_alias(self, alias_name: str, key_id: str, now: str) -> bool:
        def work(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute(
                "UPDATE aliases SET key_id = ?, update_date = ? WHERE alias_name = ?",
                (key_id, now, alias_name))
            return cursor.rowcount == 1

        return await self._write(work)

    async def delete_alias(self, alias_name: str) -> bool:
        def work(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute("DELETE FROM aliases WHERE alias_name = ?",
                                  (alias_name,))
            return cursor.rowcount == 1

        return await self._write(work)

    @remembered
    async def get_alias(self, alias_name: str) -> AliasRecord | None:
        rows = self._read("SELECT * FROM aliases WHERE alias_name = ?", (alias_name,))
        return AliasRecord(*rows[0]) if rows else None

    async def list_aliases(self, key_id: str | None, offset: int, limit: int,
                           keystores: tuple[str, ...] = ()
                           ) -> tuple[list[AliasRecord], int]:
        condition, args = ("key_id = ?", (key_id,)) if key_id else ("1", ())
        if keystores:
            marks = ", ".join("?" for _ in keystores)
            condition += (f" AND key_id IN (SELECT key_id FROM keys "
                          f"WHERE keystore IN ({marks}))")
            args = (*args, *keystores)
        total = self._read(f"SELECT count(*) FROM aliases WHERE {condition}", args)
        rows = self._read(
            f"SELECT * FROM aliases WHERE {condition} "
            "ORDER BY creation_date, alias_name LIMIT ? OFFSET ?",
            (*args, limit, offset))
        return [AliasRecord(*row) for row in rows], total[0][0]

    # --- tags --------------------------------------------------------------

    async def set_tags(self, resource_type: str, resource_id: str,
                       tags: dict[str, str], max_tags: int | None = None) -> None:
        def work(conn: sqlite3.Connection) -> None:
            # Checked in the same transaction, so a resource deleted since
            # the caller looked it up gets no orphan tags.
            if conn.execute(_TAGGABLE[resource_type], (resource_id,)).fetchone() is None:
                raise ConflictError(f"{resource_type} {resource_id} is gone")
            conn.executemany(
                "INSERT INTO tags VALUES (?, ?, ?, ?) ON CONFLICT "
                "(resource_type, resource_id, tag_key) DO UPDATE SET "
                "tag_value = excluded.tag_value",
                [(resource_type, resource_id, k, v) for k, v in tags.items()])
            if max_tags is not None:
                count = conn.execute(
                    "SELECT count(*) FROM tags WHERE resource_type = ? "
                    "AND resource_id = ?", (resource_type, resource_id)).fetchone()[0]
                if count > max_tags:
                    raise LimitError(f"{resource_type} {resource_id} would carry "
                                     f"{count} tags")

        await self._write(work)

    async def remove_tags(self, resource_type: str, resource_id: str,
                          tag_keys: list[str]) -> None:
        def work(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "DELETE FROM tags WHERE resource_type = ? AND resource_id = ? "
                "AND tag_key = ?",
                [(resource_type, resource_id, k) for k in tag_keys])

        await self._write(work)

    async def get_tags(self, resource_type: str, resource_id: str) -> dict[str, str]:
        rows = self._read(
            "SELECT tag_key, tag_value FROM tags WHERE resource_type = ? "
            "AND resource_id = ? ORDER BY tag_key", (resource_type, resource_id))
        return {row[0]: row[1] for row in rows}

    # --- deletion ----------------------------------------------------------

    async def keys_due_for_deletion(self, now: str) -> list[str]:
        rows = self._read(
            "SELECT key_id FROM keys WHERE state = ? AND delete_date <= ?",
            (PENDING_DELETION, now))
        return [row[0] for row in rows]

    async def purge_key(self, key_id: str, now: str) -> bool:
        def work(conn: sqlite3.Connection) -> bool:
            due = conn.execute(
                "SELECT 1 FROM keys WHERE key_id = ? AND state = ? "
                "AND delete_date <= ?", (key_id, PENDING_DELETION, now)).fetchone()
            if due is None:
                return False
            conn.execute("DELETE FROM aliases WHERE key_id = ?", (key_id,))
            conn.execute("DELETE FROM tags WHERE resource_type = 'key' "
                         "AND resource_id = ?", (key_id,))
            conn.execute("DELETE FROM key_versions WHERE key_id = ?", (key_id,))
            conn.execute("DELETE FROM keys WHERE key_id = ?", (key_id,))
            return True

        return await self._write(work)

    async def aclose(self) -> None:
        async with self._write_lock:
            self._writer.close()
            self._reader.close()
            # The next lookup reads data_version and fails on the closed
            # connection instead of serving a remembered record.
            self.lookups.forget()


_FILTER_COLUMNS = {
    "key_state": "state",
    "key_spec": "key_spec",
    "key_usage": "key_usage",
    "protection_level": "protection_level",
    "key_id": "key_id",
    "keystore": "keystore",
}


def _key_filter_sql(where: KeyFilter) -> tuple[list[str], list[Any]]:
    clauses: list[str] = []
    args: list[Any] = []

    def any_of(template: str, values: tuple[str, ...]) -> None:
        clauses.append("(" + " OR ".join(template for _ in values) + ")")
        args.extend(values)

    for field, column in _FILTER_COLUMNS.items():
        values = getattr(where, field)
        if values:
            any_of(f"{column} = ?", values)
    if where.creator_type:
        # Every key of a local agent is created by a user, never by a service.
        if "User" not in where.creator_type:
            clauses.append("0")
    if where.alias_name:
        any_of("key_id IN (SELECT key_id FROM aliases WHERE alias_name = ?)",
               where.alias_name)
    if where.tag_key:
        any_of("key_id IN (SELECT resource_id FROM tags WHERE resource_type = 'key' "
               "AND tag_key = ?)", where.tag_key)
    if where.tag_value:
        any_of("key_id IN (SELECT resource_id FROM tags WHERE resource_type = 'key' "
               "AND tag_value = ?)", where.tag_value)
    return clauses, args
