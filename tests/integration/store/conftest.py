"""The store contract tests run each test function twice: on SQLite and on PostgreSQL."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from server.store.postgres import PgStore
from server.store.sqlite import SqliteStore
from tests.helpers.app import Api, running_api


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest) -> str | None:
    """None for SQLite (the lab's file), else the URL of a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return None
    url: str = request.getfixturevalue("pg_url")
    return url


@pytest.fixture
async def api(tmp_path: Path, store_url: str | None) -> AsyncIterator[Api]:
    os.environ.pop("IMPRINT_HTTP__PORT", None)
    async with running_api(tmp_path, store_url) as api:
        assert isinstance(api.registry.store, PgStore if store_url else SqliteStore)
        yield api
