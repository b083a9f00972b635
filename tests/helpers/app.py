"""The in-process API under test: a real aiohttp server on a loopback socket over a temporary
SQLite file, a settable clock, and the lab settings every such test starts from."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from server.config import Settings, load_settings
from server.registry.service import Registry


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
