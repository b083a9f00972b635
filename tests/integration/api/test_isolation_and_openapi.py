"""A tenant admin's token can never read or change another tenant; the OpenAPI document covers
every route the server serves."""

from __future__ import annotations

import re
from typing import Any

from server.web.keys import SERVICES
from tests.helpers.app import Api

MAC_A, MAC_B = "02:00:5e:00:0a:01", "02:00:5e:00:0b:01"
SAMPLE_BODIES = {
    "/api/v1/tenants/{tenant}/devices": {"mac": "02:00:5e:00:0b:99", "location": "x"},
    "/api/v1/tenants/{tenant}/devices/{mac}": {"location": "hijacked"},
    "/api/v1/tenants/{tenant}/verification-codes": {"all_awaiting_activation": True},
    "/api/v1/tenants/{tenant}/sign-ins/approve": {"user": "b@example.com", "all_pending": True},
}


async def test_every_tenant_route_answers_404_to_another_tenants_admin(api: Api) -> None:
    for tid in ("a", "b"):
        assert (await api.call("POST", "/api/v1/tenants", json={"id": tid, "name": tid.upper()}))[
            0
        ] == 201
    await api.call("POST", "/api/v1/tenants/a/devices", json={"mac": MAC_A, "location": "A"})
    await api.call("POST", "/api/v1/tenants/b/devices", json={"mac": MAC_B, "location": "B"})
    token_a, row_a = await api.registry.create_token("test", "admin", "a")

    # API routes only: the admin UI's pages under /ui (session cookies, not tokens) have their
    # own isolation test in test_ui_security.py.
    tenant_routes = [
        r
        for r in api.client.app.router.routes()
        if "{tenant}" in (r.resource.canonical if r.resource else "")
        and r.method != "HEAD"
        and not _is_ui(r.resource.canonical if r.resource else "")
    ]
    assert len(tenant_routes) >= 9
    for route in tenant_routes:
        assert route.resource is not None
        path = route.resource.canonical.replace("{tenant}", "b").replace("{mac}", MAC_B)
        body = SAMPLE_BODIES.get(route.resource.canonical)
        kwargs = {"json": body} if body else {"data": b"MAC ID,Location\n02:00:5e:00:0b:77,x\n"}
        status, resp = await api.call(route.method, path, token=token_a, **kwargs)
        assert status == 404, (route.method, path, status, resp)

    # Routes that take the tenant as a query parameter: the same 404, whether or not the
    # feature is set up here (the leases list needs DHCP full mode: 409 for tenant a's own).
    for path in ("/api/v1/leases?tenant=b", "/api/v1/leases?tenant=b&state=bound&limit=1"):
        status, resp = await api.call("GET", path, token=token_a)
        assert status == 404, (path, status, resp)
    status, _ = await api.call("GET", "/api/v1/leases?tenant=a", token=token_a)
    assert status == 409

    # Nothing of tenant b changed, and its own admin sees it all.
    status, body = await api.call("GET", "/api/v1/tenants/b/devices")
    assert body["count"] == 1 and body["results"][0]["location"] == "B"
    status, body = await api.call("GET", "/api/v1/tenants/b/audit")
    assert body["count"] >= 2
    assert all(e["actor"] != f"token:{row_a.id}" for e in body["results"])

    # Tenant a's admin sees only tenant a, and cannot create tenants.
    status, body = await api.call("GET", "/api/v1/tenants", token=token_a)
    assert [t["id"] for t in body["results"]] == ["a"]
    status, _ = await api.call(
        "POST", "/api/v1/tenants", token=token_a, json={"id": "c", "name": "C"}
    )
    assert status == 404
    status, body = await api.call("GET", "/api/v1/tenants/a/devices", token=token_a)
    assert status == 200 and [d["mac"] for d in body["results"]] == [MAC_A]


def _is_ui(path: str) -> bool:
    """Pages for people and their files: the admin UI, and the API documentation page's
    files (the page itself, /api/docs, is documented)."""
    return path == "/ui" or path.startswith(("/ui/", "/api/docs/"))


async def test_openapi_document_covers_every_route(api: Api) -> None:
    async with api.client.get("/api/v1/openapi.json") as r:
        assert r.status == 200
        doc = await r.json()
    assert doc["openapi"].startswith("3.1")
    served = set()
    for route in api.client.app.router.routes():
        if route.method in ("HEAD", "OPTIONS") or route.resource is None:
            continue
        if _is_ui(route.resource.canonical):
            continue  # UI pages and static files are HTML, not API (`/`, /api/docs are documented)
        served.add((route.method.lower(), route.resource.canonical))
    documented = {(m, p) for p, ops in doc["paths"].items() for m in ops}
    missing = served - documented
    assert not missing, f"routes missing from openapi.json: {sorted(missing)}"
    for _, path in served:
        for name in re.findall(r"{(\w+)}", path):
            ops = doc["paths"][path]
            for op in ops.values():
                assert any(
                    p["name"] == name and p["in"] == "path" for p in op.get("parameters", [])
                ), (path, name)
    assert api.client.app[SERVICES].openapi == doc


def _declared(doc: dict[str, Any], method: str, path: str, status: int) -> dict[str, Any]:
    """The response the document declares for `status` (else `default`), $refs resolved."""
    responses = doc["paths"][path][method]["responses"]
    declared = responses.get(str(status), responses["default"])
    out: dict[str, Any] = {}
    for media, body in declared.get("content", {}).items():
        schema = body["schema"]
        if "$ref" in schema:
            schema = doc["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
        out[media] = schema
    return out


async def test_oauth_answers_as_the_document_says(api: Api) -> None:
    """The exact requests schemathesis found answered otherwise than documented (issue 17):
    the JWK Set's media type, and the RFC 6749 errors of /oauth2 described as house errors."""
    async with api.client.get("/api/v1/openapi.json") as r:
        doc = await r.json()
    async with api.client.get("/oauth2/jwks") as r:
        assert r.status == 200
        assert list(_declared(doc, "get", "/oauth2/jwks", 200)) == [r.content_type]
        assert r.content_type == "application/jwk-set+json" and "keys" in await r.json()
    for headers, status in (
        ({"Authorization": f"Bearer {api.operator}"}, 400),  # no form body
        ({"Content-Type": "application/x-www-form-urlencoded"}, 401),  # no token
    ):
        async with api.client.post("/oauth2/introspect", headers=headers) as r:
            assert r.status == status
            declared = _declared(doc, "post", "/oauth2/introspect", status)
            assert list(declared) == [r.content_type] == ["application/json"]
            body = await r.json()
            assert set(declared["application/json"]["required"]) <= set(body), body
            assert set(body) == {"error", "error_description"}, body
    # Every /oauth2 error is RFC 6749's; the verification page's errors are HTML pages.
    for path, ops in doc["paths"].items():
        for method in ops:
            default = _declared(doc, method, path, 599)
            if path.startswith("/oauth2/"):
                assert default["application/json"]["required"] == ["error", "error_description"]
            elif path == "/device":
                assert list(default) == ["text/html"]
            else:
                assert default["application/json"]["required"] == ["error", "message"], path
