"""The in-process API under test: a real aiohttp server on a loopback socket over a temporary
SQLite file (or a PostgreSQL database of the test's own), a settable clock, and the lab settings
every such test starts from."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

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


def lab_settings(tmp_path: Path, extra: str = "", store_url: str | None = None) -> Settings:
    """The lab configuration; `store_url` (postgresql://...) puts the store on PostgreSQL, the
    code key and certificate staying in tmp_path/state."""
    cfg = tmp_path / "imprint.toml"
    url = f"url = '{store_url}'\n" if store_url else ""
    cfg.write_text(
        "[store]\npath = 'state/imprint.db'\npoll_interval_s = 0.1\n"
        + url
        + "[http]\nhost = '127.0.0.1'\nport = 0\npublic_url = 'http://127.0.0.1:8080'\n"
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


@contextlib.asynccontextmanager
async def running_api(tmp_path: Path, store_url: str | None = None) -> AsyncIterator[Api]:
    """The app on a loopback socket over the store `store_url` names (None: SQLite)."""
    settings = lab_settings(tmp_path, store_url=store_url)
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
