"""The API's browsable documentation page (/api/docs): Swagger UI over /api/v1/openapi.json.

Swagger UI's files come from the `swagger-ui-bundle-v2` package (Swagger UI 5, which reads
OpenAPI 3.1) and are served by this server, so the page works offline: nothing is loaded from
another host. The page is public, as the OpenAPI document it shows is; "Try it out" calls the
API with the bearer token given under "Authorize", like any other client.

Its own audience (a sub-application at PREFIX): the admin UI's strict security headers (the
starter script is a file, no inline script or style) and JSON errors.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web
from markupsafe import escape
from swagger_ui_bundle import swagger_ui_path

from server.web.errors import ApiError, Handler, json_errors
from server.web.keys import SERVICES, Services
from server.web.routes import RouteTable

PREFIX = "/api/docs"
ASSETS = PREFIX + "/assets"
OPENAPI_URL = "/api/v1/openapi.json"
STARTER = Path(__file__).parent / "static" / "docs.js"
# The only files served: Swagger UI's script, stylesheet and icon, and the starter script.
_FILES: dict[str, Path] = {
    name: Path(str(swagger_ui_path / name))
    for name in ("swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png")
}
_FILES[STARTER.name] = STARTER

SECURITY_HEADERS = {
    # As the admin UI's: scripts, styles, images and requests from this origin only.
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}

routes = RouteTable()

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} API documentation</title>
<link rel="icon" href="{assets}/favicon-32x32.png">
<link rel="stylesheet" href="{assets}/swagger-ui.css">
<script src="{assets}/swagger-ui-bundle.js" defer></script>
<script src="{assets}/docs.js" defer></script>
</head>
<body>
<noscript><p>This page needs JavaScript. The API is described without it by
<a href="{openapi}">{openapi}</a> (OpenAPI 3.1).</p></noscript>
<div id="swagger-ui" data-openapi-url="{openapi}"></div>
</body>
</html>
"""


@routes.route(
    "GET",
    PREFIX,
    summary="This API's documentation page (Swagger UI over the OpenAPI document)",
    tag="meta",
    auth="none",
    responses={200: ("HTML page", "text/html")},
)
async def api_docs(request: web.Request) -> web.Response:
    title = request.app[SERVICES].openapi.get("info", {}).get("title", "Imprint")
    html = _PAGE.format(title=escape(title), assets=ASSETS, openapi=OPENAPI_URL)
    return web.Response(text=html, content_type="text/html", charset="utf-8")


async def asset(request: web.Request) -> web.StreamResponse:
    """One of the page's files (not API: kept out of the OpenAPI document, as /ui's are)."""
    path = _FILES.get(request.match_info["name"])
    if path is None:
        raise ApiError(404, "not_found", f"no such file; the documentation page is {PREFIX}")
    return web.FileResponse(path, headers={"Cache-Control": "no-cache"})


@web.middleware
async def security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every answer of the page, errors included, carries the strict page policy."""
    response = await handler(request)
    for k, v in SECURITY_HEADERS.items():
        response.headers.setdefault(k, v)
    return response


def sub_app(services: Services) -> web.Application:
    """The /api/docs audience: the page and its files, public, JSON errors."""
    missing = [str(p) for p in _FILES.values() if not p.is_file()]
    if missing:
        raise RuntimeError(f"the API documentation page's files are missing: {missing}")
    app = web.Application(middlewares=[security_headers, json_errors])
    app[SERVICES] = services
    routes.add_to(app, PREFIX)
    app.router.add_get(ASSETS[len(PREFIX) :] + "/{name}", asset)
    return app


__all__ = ["routes", "sub_app", "PREFIX", "ASSETS", "OPENAPI_URL"]
