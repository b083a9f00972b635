"""The tenants page (operators): list and create tenants."""

from __future__ import annotations

from aiohttp import web

from server.admin.ui import common
from server.store.base import Conflict, Invalid, NotFound


@common.page("GET", "/ui/tenants", "Tenants")
async def tenants_page(request: web.Request) -> web.Response:
    return await _tenants(request)


async def _tenants(
    request: web.Request,
    *,
    status: int = 200,
    error: str = "",
    values: dict[str, str] | None = None,
) -> web.Response:
    session = common.current_session(request)
    if session.role != "operator":
        if session.tenant_id:
            return common.see_other(common.tenant_url(session.tenant_id, "devices"))
        raise NotFound("only operators see the tenants page")
    tenants = await common.registry_of(request).list_tenants(session.principal)
    counts = common.registry_of(request).index.tenant_counts()
    admins = await common.admin_store(request).list_admins()
    return await common.render(
        request,
        "tenants.html",
        {
            "title": "Tenants",
            "nav": "tenants",
            "rows": [(t, counts.get(t.id, 0)) for t in tenants],
            "admins": admins,
            "error": error,
            "values": values or {"id": "", "name": ""},
        },
        status=status,
    )


@common.page("POST", "/ui/tenants", "Create a tenant")
async def create_tenant(request: web.Request) -> web.Response:
    values = common.form_values(request, id=100, name=200)
    values["id"] = values["id"].strip()
    try:
        tenant = await common.registry_of(request).create_tenant(
            common.principal_of(request), values["id"], values["name"]
        )
    except (Invalid, Conflict) as e:
        return await _tenants(request, status=common.refusal_status(e), error=str(e), values=values)
    common.add_flash(request, "ok", f"Created tenant {tenant.name} ({tenant.id}).")
    return common.see_other("/ui/tenants")
