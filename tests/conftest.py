"""Shared fixtures: a real server (aiohttp on a loopback socket) over a temporary SQLite file.

Helpers shared by several test folders live in tests/helpers/ (app, fixtures, netns, oauth,
server, ui); a folder's own conftest.py holds the fixtures only its tests use.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from server.app import build_app
from server.web.keys import SERVICES
from tests.helpers.app import Api, Clock, lab_settings


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    os.environ.pop("IMPRINT_HTTP__PORT", None)
    settings = lab_settings(tmp_path)
    clock = Clock(datetime(2026, 11, 27, 12, 0, tzinfo=UTC))
    app = build_app(settings, clock=clock)
    client: TestClient[Any, Any] = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    registry = app[SERVICES].registry
    token, _ = await registry.create_token("test", "operator", None, "tests")
    try:
        yield Api(client, registry, token, clock, settings)
    finally:
        await client.close()
