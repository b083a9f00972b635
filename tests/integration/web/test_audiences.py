"""Each audience is its own aiohttp sub-application with its own middleware and error format,
over a real loopback socket: /api/v1 (bearer, JSON), /ui (session, HTML), /oauth2 (RFC 6749
§5.2), /device (the verification page) and the device-facing root. The same failure gets the
same status in every format, because every renderer reads the one table."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from server.registry.service import Principal
from server.web.keys import SERVICES
from tests.helpers.app import Api
from tests.helpers.ui import UiClient

OP = Principal("test", "operator")
PASSWORD = "correct horse battery staple"


@pytest.fixture
async def ui(api: Api) -> AsyncIterator[UiClient]:
    svc = api.client.app[SERVICES]
    assert svc.admin is not None
    await svc.admin.create_admin("test", "ops", PASSWORD, "operator", None)
    client = UiClient(str(api.client.make_url("/")))
    try:
        page = await client.login("ops", PASSWORD)
        assert page.status == 303, page.text
        yield client
    finally:
        await client.close()


async def test_api_unknown_path_needs_a_token_then_is_a_json_404(api: Api) -> None:
    async with api.client.get("/api/v1/no-such-thing") as r:
        assert r.status == 401
        assert (await r.json())["error"] == "unauthorized"
    status, body = await api.call("GET", "/api/v1/no-such-thing")
    assert status == 404
    assert body["error"] == "not_found" and "message" in body and "details" in body


async def test_api_public_routes_are_declared_not_listed_by_path(api: Api) -> None:
    async with api.client.get("/api/v1/openapi.json") as r:
        assert r.status == 200
        doc = await r.json()
    async with api.client.get("/api/v1/devices/template.csv") as r:
        assert r.status == 200
    # Every path the sub-apps serve is in the one document, with its full path.
    assert "/api/v1/tenants/{tenant}/users" in doc["paths"]
    assert "/oauth2/token" in doc["paths"] and "/device" in doc["paths"]
    assert "/.well-known/oauth-authorization-server" in doc["paths"]


async def test_not_found_is_404_as_json_in_the_api_and_as_a_page_in_the_ui(
    api: Api, ui: UiClient
) -> None:
    status, body = await api.call("GET", "/api/v1/tenants/nobody")
    assert status == 404 and body["error"] == "not_found"
    page = await ui.get("/ui/tenants/nobody/devices")
    assert page.status == 404
    assert page.headers["Content-Type"].startswith("text/html")
    assert "Not found" in page.text
    assert "default-src 'none'" in page.headers["Content-Security-Policy"]


async def test_ui_unknown_path_without_a_session_goes_to_sign_in(api: Api) -> None:
    async with api.client.get("/ui/no-such-page", allow_redirects=False) as r:
        assert r.status == 303
        assert r.headers["Location"].startswith("/ui/login?")
        assert "default-src 'none'" in r.headers["Content-Security-Policy"]


async def test_ui_static_files_and_sign_in_need_no_session(api: Api) -> None:
    async with api.client.get("/ui/login") as r:
        assert r.status == 200
        text = await r.text()
    start = text.index("/ui/static/")
    href = text[start : text.index('"', start)]
    async with api.client.get(href) as r:
        assert r.status == 200


async def test_oauth_endpoints_answer_unknown_paths_in_the_rfc_6749_form(api: Api) -> None:
    async with api.client.post("/oauth2/no-such-endpoint", data={"a": "b"}) as r:
        assert r.status == 404
        body = await r.json()
    assert set(body) == {"error", "error_description"}
    assert body["error"] == "not_found"
    async with api.client.post("/oauth2/token", json={"grant_type": "x"}) as r:
        assert r.status == 400
        assert (await r.json())["error"] == "invalid_request"
        assert r.headers["Cache-Control"] == "no-store"


async def test_verification_page_failures_are_pages_with_the_page_policy(api: Api) -> None:
    async with api.client.get("/device/no-such-page") as r:
        assert r.status == 404
        assert r.headers["Content-Type"].startswith("text/html")
        assert "frame-ancestors 'none'" in r.headers["Content-Security-Policy"]
        assert r.headers["Referrer-Policy"] == "no-referrer"
    async with api.client.get("/device") as r:
        assert r.status == 200


async def test_the_device_facing_root_keeps_the_house_json_errors(api: Api) -> None:
    async with api.client.get("/no-such-path") as r:
        assert r.status == 404
        body = await r.json()
    assert body["error"] == "not_found"
    async with api.client.get("/", allow_redirects=False) as r:
        assert r.status == 302 and r.headers["Location"] == "/ui"
