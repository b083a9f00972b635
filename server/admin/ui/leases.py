"""The Leases page: a tenant's full-mode DHCP leases, as GET /api/v1/leases lists them."""

from __future__ import annotations

from datetime import UTC, datetime

from aiohttp import web

from server.admin.ui import common
from server.dhcp.leaseview import STATES, full_mode_off
from server.registry.leases import list_leases
from server.registry.model import iso
from server.web.keys import SERVICES


def _when(t: float) -> str:
    return iso(datetime.fromtimestamp(t, UTC))


@common.page("GET", "/ui/tenants/{tenant}/leases", "DHCP leases")
async def leases_page(request: web.Request) -> web.Response:
    tenant = await common.current_tenant(request)
    off = full_mode_off(request.app[SERVICES].settings.dhcp)
    state = request.query.get("state", "")
    state = state if state in STATES else ""
    cursor = request.query.get("cursor") or None
    rows: list[dict[str, str]] = []
    count, next_url = 0, ""
    if off is None:
        page = await list_leases(
            common.registry_of(request),
            common.principal_of(request),
            tenant=tenant.id,
            state=state or None,
            limit=common.PAGE_SIZE,
            cursor=cursor,
        )
        count = page.count
        rows = [
            {
                "ip": x.row.lease.ip,
                "mac": x.row.lease.mac,
                "state": x.state.value,
                "expires_at": _when(x.row.lease.expires_at),
                "subnet": x.row.lease.subnet,
                "location": x.row.location or "",
            }
            for x in page.results
        ]
        if page.next_cursor:
            next_url = common.tenant_url(tenant.id, "leases", state=state, cursor=page.next_cursor)
    return await common.render(
        request,
        "leases.html",
        {
            "title": "Leases",
            "nav": "leases",
            "tenant": tenant,
            "off": off or "",
            "leases": rows,
            "count": count,
            "state": state,
            "states": STATES,
            "next_url": next_url,
            "first_url": common.tenant_url(tenant.id, "leases", state=state) if cursor else "",
        },
    )
