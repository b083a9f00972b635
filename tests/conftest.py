"""Shared fixtures: a real server (aiohttp on a loopback socket) over a temporary SQLite file."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from server.app import build_app
from server.config import Settings, load_settings
from server.registry.service import Registry
from server.web.keys import SERVICES


class FakeClockError(Exception):
    pass


@dataclass
class Clock:
    """A settable clock the tests inject, so expiry is tested without waiting."""

    now: datetime

    def __call__(self) -> datetime:
        return self.now


def lab_settings(tmp_path: Path, extra: str = "") -> Settings:
    cfg = tmp_path / "imprint.toml"
    cfg.write_text(
        "[store]\npath = 'state/imprint.db'\npoll_interval_s = 0.1\n"
        "[http]\nhost = '127.0.0.1'\nport = 0\npublic_url = 'http://127.0.0.1:8080'\n"
        "[tls]\nenabled = false\n" + extra
    )
    return load_settings(cfg)


@dataclass
class Api:
    client: TestClient[Any, Any]
    registry: Registry
    operator: str
    clock: Clock
    settings: Settings

    def h(self, token: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token or self.operator}"}

    async def call(
        self, method: str, path: str, token: str | None = None, **kw: Any
    ) -> tuple[int, Any]:
        headers = {**self.h(token), **kw.pop("headers", {})}
        async with self.client.request(method, path, headers=headers, **kw) as r:
            body: Any = await r.json() if r.content_type == "application/json" else await r.text()
            return r.status, body


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
