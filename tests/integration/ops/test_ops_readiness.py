"""/healthz and /readyz across the store's lifecycle.

aiohttp serves no request while the app starts or after it has stopped, so the store context of
a real `build_app` app is driven by hand here while a second listener, sharing the same Services,
serves the meta routes over real HTTP: readiness must be 503 before the store is open, 200 while
it is open, and 503 again once it is closed, while liveness stays 200 throughout.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from server import __version__
from server.app import build_app, meta
from server.web.keys import SERVICES
from tests.helpers.app import lab_settings


async def status(client: TestClient[Any, Any], path: str) -> tuple[int, Any]:
    async with client.get(path) as r:
        return r.status, await r.json()


async def test_readyz_follows_the_store_and_healthz_does_not(tmp_path: Path) -> None:
    app = build_app(lab_settings(tmp_path))
    side = web.Application()
    side[SERVICES] = app[SERVICES]
    meta.add_to(side)
    client: TestClient[Any, Any] = TestClient(TestServer(side, host="127.0.0.1"))
    await client.start_server()
    try:
        assert await status(client, "/readyz") == (503, {"ready": False})
        assert await status(client, "/healthz") == (200, {"status": "ok", "version": __version__})

        store_ctx = app.cleanup_ctx[0](app)  # the first context opens the store
        assert isinstance(store_ctx, AsyncGenerator)
        await store_ctx.__anext__()
        assert app[SERVICES].registry.store.is_open
        assert await status(client, "/readyz") == (200, {"ready": True})

        try:
            await store_ctx.__anext__()
        except StopAsyncIteration:
            pass
        else:
            raise AssertionError("the store context yielded twice")
        assert await status(client, "/readyz") == (503, {"ready": False})
        assert (await status(client, "/healthz"))[0] == 200
    finally:
        await client.close()


async def test_readyz_is_200_while_the_whole_app_runs(tmp_path: Path) -> None:
    client: TestClient[Any, Any] = TestClient(
        TestServer(build_app(lab_settings(tmp_path)), host="127.0.0.1")
    )
    await client.start_server()
    try:
        assert await status(client, "/readyz") == (200, {"ready": True})
        store = client.app[SERVICES].registry.store
    finally:
        await client.close()
    assert not store.is_open  # closed cleanly on shutdown
