"""Shared fixtures: a real server (aiohttp on a loopback socket) over a temporary SQLite file.

Helpers shared by several test folders live in tests/helpers/ (app, fixtures, netns, oauth,
server, ui); a folder's own conftest.py holds the fixtures only its tests use.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.helpers.app import Api, running_api
from tests.helpers.postgres import pg_cluster, pg_url  # noqa: F401 - fixtures for every folder

# IMPRINT_TEST_STORE=postgresql runs every test of the `api` fixture against PostgreSQL (a
# throwaway server, tests/helpers/postgres.py); tests that open the SQLite file directly fail then.
TEST_STORE = os.environ.get("IMPRINT_TEST_STORE", "sqlite")


@pytest.fixture
async def api(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Api]:
    os.environ.pop("IMPRINT_HTTP__PORT", None)
    url = request.getfixturevalue("pg_url") if TEST_STORE == "postgresql" else None
    async with running_api(tmp_path, url) as api:
        yield api
