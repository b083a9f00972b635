"""Tenant user accounts devices are signed in as."""

from __future__ import annotations

from aiohttp import web

from server.admin.ui import common
from server.registry.model import Tenant
from server.store.base import Conflict, Invalid


@common.page("GET", "/ui/tenants/{tenant}/users", "Tenant users")
async def users_page(request: web.Request) -> web.Response:
    return await _users(request, await common.current_tenant(request))


async def _users(
    request: web.Request,
    tenant: Tenant,
    *,
    status: int = 200,
    error: str = "",
    values: dict[str, str] | None = None,
) -> web.Response:
    users = await common.oauth_of(request).users.list(common.principal_of(request), tenant.id)
    return await common.render(
        request,
        "users.html",
        {
            "title": "Users",
            "nav": "users",
            "tenant": tenant,
            "users": users,
            "error": error,
            "values": values or {"username": "", "display_name": ""},
        },
        status=status,
    )


@common.page("POST", "/ui/tenants/{tenant}/users", "Create a tenant user")
async def create_user(request: web.Request) -> web.Response:
    tenant = await common.current_tenant(request)
    form = common.posted_form(request)
    values = common.form_values(request, username=200, display_name=200)
    try:
        user = await common.oauth_of(request).users.create(
            common.principal_of(request),
            tenant.id,
            values["username"],
            values["display_name"],
            common.form_text(form, "password", 2000),
        )
    except (Invalid, Conflict) as e:
        return await _users(
            request,
            tenant,
            status=common.refusal_status(e),
            error=str(e),
            values=values,
        )
    common.add_flash(request, "ok", f"Created user {user.username}.")
    return common.see_other(common.tenant_url(tenant.id, "users"))


@common.page("POST", "/ui/tenants/{tenant}/users/{username}/disable", "Disable a tenant user")
async def disable_user(request: web.Request) -> web.Response:
    return await _set_user_disabled(request, True)


@common.page("POST", "/ui/tenants/{tenant}/users/{username}/enable", "Enable a tenant user")
async def enable_user(request: web.Request) -> web.Response:
    return await _set_user_disabled(request, False)


async def _set_user_disabled(request: web.Request, disabled: bool) -> web.Response:
    tenant = await common.current_tenant(request)
    user = await common.oauth_of(request).users.update(
        common.principal_of(request), tenant.id, request.match_info["username"], disabled=disabled
    )
    common.add_flash(
        request,
        "ok",
        f"Disabled {user.username}; devices signed in as this user were signed out."
        if disabled
        else f"Enabled {user.username}.",
    )
    return common.see_other(common.tenant_url(tenant.id, "users"))
