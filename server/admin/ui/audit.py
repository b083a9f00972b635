"""The audit log page."""

from __future__ import annotations

from aiohttp import web

from server.admin.ui import common
from server.store.base import INT64_MAX


@common.page("GET", "/ui/tenants/{tenant}/audit", "Audit log")
async def audit_page(request: web.Request) -> web.Response:
    tenant = await common.current_tenant(request)
    # 0 (or garbage) is the newest page; ids are 1 and up, at most the store's 64 bits.
    before_id = common.int_query(request, "before_id", 0, lo=0, hi=INT64_MAX) or None
    entries = await common.registry_of(request).audit(
        common.principal_of(request), tenant.id, limit=common.PAGE_SIZE, before_id=before_id
    )
    return await common.render(
        request,
        "audit.html",
        {
            "title": "Audit log",
            "nav": "audit",
            "tenant": tenant,
            "entries": entries,
            "older_url": common.tenant_url(tenant.id, "audit", before_id=entries[-1].id)
            if len(entries) == common.PAGE_SIZE
            else "",
            "newest_url": common.tenant_url(tenant.id, "audit") if before_id else "",
        },
    )
