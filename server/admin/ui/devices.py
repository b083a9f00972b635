"""The devices page: list, search and page through devices, add one."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from server.admin.ui import common
from server.admin.ui.state import page_count
from server.registry.model import DeviceState, iso
from server.store.base import Conflict, Invalid
from server.web.keys import SERVICES


@common.page("GET", "/ui/tenants/{tenant}/devices", "Devices")
async def devices_page(request: web.Request) -> web.Response:
    tenant = await common.current_tenant(request)
    session = common.current_session(request)
    tabs = [t for t in common.TABS if t[0] != common.DISCOVERED or session.role == "operator"]
    tab = request.query.get("tab", DeviceState.AWAITING_ACTIVATION.value)
    if tab not in dict(tabs):
        tab = DeviceState.AWAITING_ACTIVATION.value
    q = request.query.get("q", "").strip()[:100]
    page = common.int_query(request, "page", 1)
    cursor = request.query.get("cursor", "")[:64] or None
    # Tab counts from the server's MAC index (kept exact with the store): no walk of a
    # million rows per page view.
    counts = common.registry_of(request).index.state_counts(tenant.id)
    rows: list[dict[str, Any]] = []
    discovered: list[dict[str, Any]] = []
    if tab == common.DISCOVERED:
        svc = request.app[SERVICES]
        index = common.registry_of(request).index
        needle = q.lower()
        seen = [
            e
            for e in svc.discovered.recent()
            if e.mac not in index
            and (not needle or needle in e.mac or needle in e.vendor_class.lower())
        ]
        total = len(seen)
        for e in seen[(page - 1) * common.PAGE_SIZE : page * common.PAGE_SIZE]:
            discovered.append(
                {
                    "mac": e.mac,
                    "vendor_class": e.vendor_class,
                    "source": e.source,
                    "interface": e.interface,
                    "last_seen": iso(datetime.fromtimestamp(e.last_seen, UTC)),
                    "count": e.count,
                }
            )
        prev_url = common.tenant_url(tenant.id, "devices", tab=tab, q=q, page=page - 1)
        next_url = common.tenant_url(tenant.id, "devices", tab=tab, q=q, page=page + 1)
        prev_url, next_url = (
            (prev_url if page > 1 else ""),
            (next_url if page * common.PAGE_SIZE < total else ""),
        )
    else:
        # Pages are cursor seeks in MAC order (an index seek however deep, at a million
        # devices); `page` only numbers them. The tab's count is the state count already read,
        # so the list counts only for a search.
        def listing(at: str | None) -> Any:
            return common.registry_of(request).list_devices(
                common.principal_of(request),
                tenant.id,
                state=tab,
                q=q or None,
                limit=common.PAGE_SIZE,
                cursor=at,
                with_count=bool(q),
            )

        try:
            listed = await listing(cursor)
        except Invalid:  # a cursor from an old link: start from the first page
            cursor, listed = None, await listing(None)
        if listed.prev_cursor is None:
            page = 1
        total = listed.count if listed.count is not None else counts.get(tab, 0)
        devices = listed.devices
        codes = await common.current_codes(request, tenant.id, devices)
        for d in devices:
            code, expires = codes.get(d.mac, ("", ""))
            rows.append({"d": d, "code": code, "expires": expires})

        def link(to: str | None, n: int) -> str:
            return common.tenant_url(tenant.id, "devices", tab=tab, q=q, page=n, cursor=to)

        prev_url = link(listed.prev_cursor, page - 1) if listed.prev_cursor else ""
        next_url = link(listed.next_cursor, page + 1) if listed.next_cursor else ""
    pages = max(page_count(total, common.PAGE_SIZE), page)
    return await common.render(
        request,
        "devices.html",
        {
            "title": f"Devices: {dict(tabs)[tab]}",
            "nav": "devices",
            "tenant": tenant,
            "tabs": [
                (k, label, counts.get(k, 0) if k != common.DISCOVERED else None)
                for k, label in tabs
            ],
            "tab": tab,
            "q": q,
            "page": page,
            "cursor": cursor or "",
            "pages": pages,
            "total": total,
            "first": (page - 1) * common.PAGE_SIZE + 1,
            "rows": rows,
            "discovered": discovered,
            "prev_url": prev_url,
            "next_url": next_url,
            "awaiting": counts.get(DeviceState.AWAITING_ACTIVATION.value, 0),
        },
    )


@common.page("POST", "/ui/tenants/{tenant}/devices/add", "Register one device")
async def add_device(request: web.Request) -> web.Response:
    tenant = await common.current_tenant(request)
    values = common.form_values(request, mac=100, location=1000)
    try:
        device = await common.registry_of(request).add_device(
            common.principal_of(request), tenant.id, values["mac"], values["location"]
        )
    except (Invalid, Conflict) as e:
        return await common.provision_form(
            request,
            tenant,
            status=common.refusal_status(e),
            add_error=str(e),
            values=values,
        )
    common.add_flash(
        request,
        "ok",
        f"Registered {device.mac}" + (f" at {device.location}" if device.location else "") + ".",
        common.tenant_url(tenant.id, "devices", device.mac),
        "Open the device",
    )
    return common.see_other(
        common.tenant_url(tenant.id, "devices", tab=DeviceState.AWAITING_ACTIVATION.value)
    )
