"""The certificates table of the SQLite store, as a mixin of ``SqliteStore``.

``CERTIFICATES_MIGRATION`` (in ``sqlite.MIGRATIONS``) creates one row per
certificate, with its sealed key pair, and the subject alternative
names as a JSON list. Updates are a conditional UPDATE on ``revision``,
so of two agents changing one certificate exactly one wins.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from typing import Any, Callable

from agent.store.base import ConflictError
from agent.store.certificates import (
    RESOURCE_CERTIFICATE, CertificateRecord, CertificateStore,
)
from agent.store.lookups import remembered

CERTIFICATES_MIGRATION = """
    CREATE TABLE certificates (
        certificate_id TEXT PRIMARY KEY,
        keystore TEXT NOT NULL,
        key_spec TEXT NOT NULL,
        protection_level TEXT NOT NULL,
        wrap_format INTEGER NOT NULL,
        wrapped BLOB NOT NULL,
        public_key BLOB NOT NULL,
        subject TEXT NOT NULL,
        subject_alternative_names TEXT NOT NULL,
        exportable INTEGER NOT NULL,
        status TEXT NOT NULL,
        csr TEXT NOT NULL,
        chain TEXT,
        creator TEXT NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        revision INTEGER NOT NULL,
        seq INTEGER NOT NULL
    );
    CREATE INDEX certificates_by_seq ON certificates (seq);
    CREATE INDEX certificates_by_keystore ON certificates (keystore, seq)
"""

_FIELDS = [f.name for f in dataclasses.fields(CertificateRecord)]


def _from_row(row: sqlite3.Row) -> CertificateRecord:
    values = {name: row[name] for name in _FIELDS}
    values["wrapped"] = bytes(values["wrapped"])
    values["public_key"] = bytes(values["public_key"])
    values["exportable"] = bool(values["exportable"])
    values["subject_alternative_names"] = tuple(
        json.loads(values["subject_alternative_names"]))
    return CertificateRecord(**values)


def _columns(certificate: CertificateRecord) -> dict[str, Any]:
    values = dataclasses.asdict(certificate)
    values["subject_alternative_names"] = json.dumps(
        list(certificate.subject_alternative_names))
    values["exportable"] = int(certificate.exportable)
    return values


class SqliteCertificatesMixin(CertificateStore):
    """``CertificateStore`` on the table above; needs SqliteStore's plumbing."""

    _write: Callable[..., Any]
    _read: Callable[..., list[sqlite3.Row]]
    _next_seq: Callable[[sqlite3.Connection], int]

    async def insert_certificate(self, certificate: CertificateRecord,
                                 tags: dict[str, str]) -> None:
        def work(conn: sqlite3.Connection) -> None:
            values = _columns(certificate)
            values["seq"] = self._next_seq(conn)
            names = ", ".join(values)
            marks = ", ".join("?" for _ in values)
            conn.execute(f"INSERT INTO certificates ({names}) VALUES ({marks})",
                         tuple(values.values()))
            conn.executemany(
                "INSERT INTO tags VALUES (?, ?, ?, ?)",
                [(RESOURCE_CERTIFICATE, certificate.certificate_id, key, value)
                 for key, value in tags.items()])

        await self._write(work)

    async def update_certificate(self, certificate: CertificateRecord
                                 ) -> CertificateRecord:
        stored = dataclasses.replace(certificate, revision=certificate.revision + 1)

        def work(conn: sqlite3.Connection) -> None:
            values = _columns(stored)
            del values["certificate_id"]
            assignments = ", ".join(f"{name} = ?" for name in values)
            cursor = conn.execute(
                f"UPDATE certificates SET {assignments} "
                "WHERE certificate_id = ? AND revision = ?",
                (*values.values(), certificate.certificate_id, certificate.revision))
            if cursor.rowcount != 1:
                raise ConflictError(
                    f"certificate {certificate.certificate_id} changed concurrently")

        await self._write(work)
        return stored

    @remembered
    async def get_certificate(self, certificate_id: str) -> CertificateRecord | None:
        rows = self._read("SELECT * FROM certificates WHERE certificate_id = ?",
                          (certificate_id,))
        return _from_row(rows[0]) if rows else None

    async def list_certificates(self, offset: int, limit: int,
                                keystores: tuple[str, ...] = ()
                                ) -> tuple[list[CertificateRecord], int]:
        condition, args = "1", ()
        if keystores:
            condition = f"keystore IN ({', '.join('?' for _ in keystores)})"
            args = tuple(keystores)
        total = self._read(f"SELECT count(*) FROM certificates WHERE {condition}",
                           args)
        rows = self._read(
            f"SELECT * FROM certificates WHERE {condition} "
            "ORDER BY seq LIMIT ? OFFSET ?", (*args, limit, offset))
        return [_from_row(row) for row in rows], total[0][0]

    async def delete_certificate(self, certificate_id: str) -> bool:
        def work(conn: sqlite3.Connection) -> bool:
            conn.execute("DELETE FROM tags WHERE resource_type = ? AND resource_id = ?",
                         (RESOURCE_CERTIFICATE, certificate_id))
            cursor = conn.execute("DELETE FROM certificates WHERE certificate_id = ?",
                                  (certificate_id,))
            return cursor.rowcount == 1

        return await self._write(work)
