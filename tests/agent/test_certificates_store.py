"""The certificates table of the SQLite store."""

from __future__ import annotations

import dataclasses

import pytest

from agent.store.base import ConflictError, DuplicateError
from agent.store.certificates import ACTIVE, PENDING, RESOURCE_CERTIFICATE
from agent.store.certificates import CertificateRecord
from agent.store.sqlite import SqliteStore


def record(certificate_id: str = "c-1", keystore: str = "default",
           **changes) -> CertificateRecord:
    base = CertificateRecord(
        certificate_id=certificate_id, keystore=keystore, key_spec="EC_P256",
        protection_level="HSM", wrap_format=1, wrapped=b"sealed", public_key=b"spki",
        subject="CN=a,OU=b,O=c,C=CN", subject_alternative_names=("a.example.com",),
        exportable=True, status=PENDING, csr="-----BEGIN CERTIFICATE REQUEST-----",
        chain=None, creator="1000", created_at="2026-01-01T00:00:00Z",
        updated_at="2026-01-01T00:00:00Z")
    return dataclasses.replace(base, **changes)


@pytest.fixture
async def store(tmp_path):
    opened = SqliteStore(tmp_path / "data")
    yield opened
    await opened.aclose()


async def test_insert_and_get(store):
    """A stored certificate reads back field for field, with its tags."""
    await store.insert_certificate(record(), {"team": "web"})
    assert await store.get_certificate("c-1") == record()
    assert await store.get_tags(RESOURCE_CERTIFICATE, "c-1") == {"team": "web"}


async def test_insert_duplicate_id(store):
    """A second certificate with the same id is a DuplicateError."""
    await store.insert_certificate(record(), {})
    with pytest.raises(DuplicateError):
        await store.insert_certificate(record(), {})


async def test_update_compares_revision(store):
    """An update with a stale revision is a ConflictError and changes nothing."""
    await store.insert_certificate(record(), {})
    stored = await store.update_certificate(record(status=ACTIVE, chain="PEM"))
    assert stored.revision == 1
    with pytest.raises(ConflictError):
        await store.update_certificate(record(status=PENDING))
    assert (await store.get_certificate("c-1")).status == ACTIVE


async def test_list_pages_and_keystores(store):
    """Listing pages in insertion order and filters by keystore."""
    for index in range(3):
        await store.insert_certificate(
            record(f"c-{index}", keystore="a" if index != 1 else "b"), {})
    page, total = await store.list_certificates(1, 1)
    assert [c.certificate_id for c in page] == ["c-1"]
    assert total == 3
    page, total = await store.list_certificates(0, 10, ("a",))
    assert [c.certificate_id for c in page] == ["c-0", "c-2"]
    assert total == 2


async def test_delete_removes_tags(store):
    """Deleting a certificate removes its row and tags; a second delete is False."""
    await store.insert_certificate(record(), {"team": "web"})
    assert await store.delete_certificate("c-1") is True
    assert await store.get_certificate("c-1") is None
    assert await store.get_tags(RESOURCE_CERTIFICATE, "c-1") == {}
    assert await store.delete_certificate("c-1") is False
