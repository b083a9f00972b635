"""The audit log page."""

from __future__ import annotations

from aiohttp import web

from server.admin.ui.common import (
    PAGE_SIZE,
    current_tenant,
    principal_of,
    registry_of,
    render,
    routes,
    tenant_url,
)


@routes.route(
    "GET",
    "/ui/tenants/{tenant}/audit",
    summary="Audit log",
    tag="ui",
    auth="session",
    in_schema=False,
)
async def audit_page(request: web.Request) -> web.Response:
    tenant = await current_tenant(request)
    before = request.query.get("before_id")
    before_id = int(before) if before and before.isdigit() else None
    entries = await registry_of(request).audit(
        principal_of(request), tenant.id, limit=PAGE_SIZE, before_id=before_id
    )
    return await render(
        request,
        "audit.html",
        {
            "title": "Audit log",
            "nav": "audit",
            "tenant": tenant,
            "entries": entries,
            "older_url": tenant_url(tenant.id, "audit", before_id=entries[-1].id)
            if len(entries) == PAGE_SIZE
            else "",
            "newest_url": tenant_url(tenant.id, "audit") if before_id else "",
        },
    )
