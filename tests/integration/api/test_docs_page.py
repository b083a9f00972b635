"""The API documentation page (/api/docs): public as the OpenAPI document is, its files served
from the installed Swagger UI package and this tree (nothing from another host), the admin UI's
strict headers on every answer. Rendering in a browser: tests/browser/test_lab.py."""

from __future__ import annotations

import re

from aiohttp.test_utils import TestClient

from server.api.docs import ASSETS, SECURITY_HEADERS
from tests.helpers.app import Api


async def _get(client: TestClient, path: str) -> tuple[int, str, bytes, dict[str, str]]:
    async with client.get(path) as r:  # no Authorization header: a stranger's browser
        return r.status, r.content_type, await r.read(), dict(r.headers)


async def test_the_page_is_public_and_links_only_its_own_files(api: Api) -> None:
    status, ctype, body, headers = await _get(api.client, "/api/docs")
    assert (status, ctype) == (200, "text/html")
    for k, v in SECURITY_HEADERS.items():
        assert headers[k] == v
    html = body.decode()
    assert 'data-openapi-url="/api/v1/openapi.json"' in html
    links = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert links and all(link.startswith("/") for link in links), links  # no other host
    assert "<script>" not in html and "style=" not in html  # nothing inline for the CSP
    assets = [link for link in links if link.startswith(ASSETS + "/")]
    assert {a.rsplit("/", 1)[1] for a in assets} >= {
        "swagger-ui-bundle.js",
        "swagger-ui.css",
        "docs.js",
    }
    for asset in assets:
        status, ctype, body, headers = await _get(api.client, asset)
        assert status == 200 and body, asset
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert ctype in ("application/javascript", "text/javascript", "text/css", "image/png")


async def test_only_the_pages_files_are_served(api: Api) -> None:
    # Swagger UI's own index.html starts the demo pet store from the internet: not served.
    for name in ("index.html", "swagger-initializer.js", "..%2F__init__.py", "nope.js"):
        status, ctype, body, headers = await _get(api.client, f"{ASSETS}/{name}")
        assert (status, ctype) == (404, "application/json"), name
        assert b"/api/docs" in body
        assert headers["Content-Security-Policy"] == SECURITY_HEADERS["Content-Security-Policy"]


async def test_the_page_is_in_the_openapi_document(api: Api) -> None:
    status, doc = await api.call("GET", "/api/v1/openapi.json")
    op = doc["paths"]["/api/docs"]["get"]
    assert "security" not in op and list(op["responses"]["200"]["content"]) == ["text/html"]
