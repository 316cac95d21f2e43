"""The access-control tables of the SQLite store, as a mixin of ``SqliteStore``.

Tables (created by ``ACCESS_MIGRATION`` in ``sqlite.MIGRATIONS``):
``client_keys`` (one row per issued key, kept after revocation) and
``resource_policies`` (one document per resource and policy name).
Revocation is a conditional UPDATE, so several agents on one database
agree on the result.
"""

from __future__ import annotations

import dataclasses
import sqlite3

from agent.store.access import (
    CLIENT_KEY_REVOKED, AccessStore, ClientKeyRecord, ResourcePolicyRecord,
)
from agent.store.lookups import remembered

ACCESS_MIGRATION = """
    CREATE TABLE client_keys (
        client_key_id TEXT PRIMARY KEY,
        principal TEXT NOT NULL,
        algorithm TEXT NOT NULL,
        public_key BLOB NOT NULL,
        not_before TEXT NOT NULL,
        not_after TEXT NOT NULL,
        state TEXT NOT NULL,
        creation_date TEXT NOT NULL,
        revocation_date TEXT,
        seq INTEGER NOT NULL
    );
    CREATE INDEX client_keys_by_principal ON client_keys (principal, seq);
    CREATE TABLE resource_policies (
        resource_type TEXT NOT NULL,
        resource_id TEXT NOT NULL,
        policy_name TEXT NOT NULL,
        document TEXT NOT NULL,
        update_date TEXT NOT NULL,
        PRIMARY KEY (resource_type, resource_id, policy_name)
    )
"""

_CLIENT_KEY_COLUMNS = [f.name for f in dataclasses.fields(ClientKeyRecord)]


def _client_key_from_row(row: sqlite3.Row) -> ClientKeyRecord:
    values = {name: row[name] for name in _CLIENT_KEY_COLUMNS}
    values["public_key"] = bytes(values["public_key"])
    return ClientKeyRecord(**values)


class SqliteAccessMixin(AccessStore):
    """``AccessStore`` on the tables above; needs SqliteStore's plumbing."""

    async def insert_client_key(self, record: ClientKeyRecord) -> None:
        def work(conn: sqlite3.Connection) -> None:
            values = dataclasses.asdict(record)
            values["seq"] = self._next_seq(conn)
            names = ", ".join(values)
            marks = ", ".join("?" for _ in values)
            conn.execute(f"INSERT INTO client_keys ({names}) VALUES ({marks})",
                         tuple(values.values()))

        await self._write(work)

    @remembered
    async def get_client_key(self, client_key_id: str) -> ClientKeyRecord | None:
        rows = self._read("SELECT * FROM client_keys WHERE client_key_id = ?",
                          (client_key_id,))
        return _client_key_from_row(rows[0]) if rows else None

    async def list_client_keys(self, principal: str | None, offset: int,
                               limit: int) -> tuple[list[ClientKeyRecord], int]:
        condition, args = ("principal = ?", (principal,)) if principal else ("1", ())
        total = self._read(f"SELECT count(*) FROM client_keys WHERE {condition}",
                           args)
        rows = self._read(
            f"SELECT * FROM client_keys WHERE {condition} ORDER BY seq "
            "LIMIT ? OFFSET ?", (*args, limit, offset))
        return [_client_key_from_row(row) for row in rows], total[0][0]

    async def revoke_client_key(self, client_key_id: str, now: str) -> bool:
        def work(conn: sqlite3.Connection) -> bool:
            exists = conn.execute(
                "SELECT 1 FROM client_keys WHERE client_key_id = ?",
                (client_key_id,)).fetchone()
            # A second revocation keeps the first date.
            conn.execute(
                "UPDATE client_keys SET state = ?, revocation_date = ? "
                "WHERE client_key_id = ? AND revocation_date IS NULL",
                (CLIENT_KEY_REVOKED, now, client_key_id))
            return exists is not None

        return await self._write(work)

    @remembered
    async def get_resource_policy(self, resource_type: str, resource_id: str,
                                  policy_name: str) -> ResourcePolicyRecord | None:
        rows = self._read(
            "SELECT resource_type, resource_id, policy_name, document, update_date "
            "FROM resource_policies WHERE resource_type = ? AND resource_id = ? "
            "AND policy_name = ?", (resource_type, resource_id, policy_name))
        return ResourcePolicyRecord(*rows[0]) if rows else None

    async def put_resource_policy(self, record: ResourcePolicyRecord) -> None:
        def work(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO resource_policies VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (resource_type, resource_id, policy_name) DO UPDATE "
                "SET document = excluded.document, "
                "update_date = excluded.update_date",
                dataclasses.astuple(record))

        await self._write(work)
