"""The SQLite store in a fresh directory, for every store test."""

from __future__ import annotations

import pytest

from agent.store.sqlite import SqliteStore


@pytest.fixture
async def store(tmp_path):
    instance = SqliteStore(tmp_path)
    yield instance
    await instance.aclose()
