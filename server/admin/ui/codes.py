"""Verification codes: the provisioning page, generating codes, the export and the
printable technician sheet with QR codes."""

from __future__ import annotations

import asyncio
from urllib.parse import urlencode

from aiohttp import web

from server.admin.ui.common import (
    SHEET_SIZE,
    add_flash,
    current_codes,
    current_tenant,
    form_text,
    int_query,
    posted_form,
    principal_of,
    provision_form,
    qr_svg,
    registry_of,
    render,
    routes,
    see_other,
    tenant_url,
)
from server.admin.ui.state import page_count, when
from server.core.mac import MacError, normalize_mac
from server.registry.csvio import write_export
from server.registry.model import DeviceState
from server.store.base import Invalid


@routes.route(
    "GET",
    "/ui/tenants/{tenant}/provision",
    summary="Provision new devices",
    tag="ui",
    auth="session",
    in_schema=False,
)
async def provision_page(request: web.Request) -> web.Response:
    return await provision_form(request, await current_tenant(request))


@routes.route(
    "POST",
    "/ui/tenants/{tenant}/codes",
    summary="Generate verification codes",
    tag="ui",
    auth="session",
    in_schema=False,
)
async def generate_codes(request: web.Request) -> web.Response:
    tenant = await current_tenant(request)
    form = posted_form(request)
    back = tenant_url(
        tenant.id,
        "devices",
        tab=DeviceState.AWAITING_ACTIVATION.value,
        q=form_text(form, "q", 100),
        page=form_text(form, "page", 10),
    )
    all_waiting = form.get("all") == "1"
    macs = [m for m in form.getall("mac", []) if isinstance(m, str)]
    if not all_waiting and not macs:
        add_flash(request, "error", "Select at least one device, or choose “all”.")
        return see_other(back)
    try:
        issued = await registry_of(request).generate_codes(
            principal_of(request), tenant.id, None if all_waiting else macs, all_waiting
        )
    except Invalid as e:
        problems = "; ".join(f"{d.get('value')}: {d.get('message')}" for d in e.details[:5])
        add_flash(
            request, "error", f"No codes were issued: {e}" + (f" ({problems})" if problems else "")
        )
        return see_other(back)
    if issued:
        sheet = (
            tenant_url(tenant.id, "sheet", mac=[c.mac for c in issued])
            if len(issued) <= SHEET_SIZE
            else tenant_url(tenant.id, "sheet")
        )
        add_flash(
            request,
            "ok",
            f"Issued {len(issued):,} verification code(s), valid until {when(issued[0].expires_at)}. "
            "Earlier codes of these devices no longer work.",
            sheet,
            "Print the technician sheet",
        )
    else:
        add_flash(request, "ok", "No device is awaiting activation: no codes were issued.")
    return see_other(back)


@routes.route(
    "GET",
    "/ui/tenants/{tenant}/export.csv",
    summary="Export devices (CSV)",
    tag="ui",
    auth="session",
    in_schema=False,
)
async def export_csv(request: web.Request) -> web.Response:
    tenant = await current_tenant(request)
    state = request.query.get("state") or None
    rows = await registry_of(request).export(principal_of(request), tenant.id, state)
    text = await asyncio.to_thread(write_export, rows)
    return web.Response(
        text=text,
        content_type="text/csv",
        charset="utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="imprint-{tenant.id}-devices.csv"',
            "Cache-Control": "no-store",
        },
    )


def provision_qr_text(mac: str, code: str) -> str:
    """What a sheet's QR code says: the device and its code, in one scannable line."""
    return "imprint:provision?" + urlencode({"mac": mac, "code": code}, safe=":")


@routes.route(
    "GET",
    "/ui/tenants/{tenant}/sheet",
    summary="Technician sheet",
    tag="ui",
    auth="session",
    in_schema=False,
)
async def sheet(request: web.Request) -> web.Response:
    tenant = await current_tenant(request)
    registry = registry_of(request)
    who = principal_of(request)
    wanted = request.query.getall("mac", [])
    page = int_query(request, "page", 1)
    if wanted:
        macs: list[str] = []
        for raw in wanted[:SHEET_SIZE]:
            try:
                macs.append(normalize_mac(raw))
            except MacError:
                continue
        found = await registry.store.devices_in(tenant.id, macs)
        devices = [found[m] for m in macs if m in found]
        total = len(devices)
    else:
        total, devices = await registry.list_devices(
            who,
            tenant.id,
            state=DeviceState.AWAITING_ACTIVATION.value,
            limit=SHEET_SIZE,
            offset=(page - 1) * SHEET_SIZE,
        )
    codes = await current_codes(request, tenant.id, devices)

    def cards() -> list[dict[str, str]]:
        out = []
        for d in devices:
            code, expires = codes.get(d.mac, ("", ""))
            if not code:
                continue
            out.append(
                {
                    "mac": d.mac,
                    "location": d.location,
                    "code": code,
                    "expires": expires,
                    "qr": qr_svg(provision_qr_text(d.mac, code), f"QR code for {d.mac}"),
                }
            )
        return out

    items = await asyncio.to_thread(cards)
    pages = 1 if wanted else page_count(total, SHEET_SIZE)
    return await render(
        request,
        "sheet.html",
        {
            "title": f"Technician sheet: {tenant.name}",
            "nav": "devices",
            "tenant": tenant,
            "cards": items,
            "without_code": len(devices) - len(items),
            "page": page,
            "pages": pages,
            "prev_url": tenant_url(tenant.id, "sheet", page=page - 1)
            if page > 1 and not wanted
            else "",
            "next_url": tenant_url(tenant.id, "sheet", page=page + 1)
            if page < pages and not wanted
            else "",
        },
    )
