"""Verification codes: the provisioning page, generating codes, the export and the
printable technician sheet with QR codes."""

from __future__ import annotations

import asyncio
from urllib.parse import urlencode

from aiohttp import web

from server.admin.ui import common
from server.admin.ui.state import page_count, when
from server.core.mac import MacError, normalize_mac
from server.registry.model import DeviceState
from server.store.base import Invalid
from server.web.downloads import export_download


@common.page("GET", "/ui/tenants/{tenant}/provision", "Provision new devices")
async def provision_page(request: web.Request) -> web.Response:
    return await common.provision_form(request, await common.current_tenant(request))


@common.page("POST", "/ui/tenants/{tenant}/codes", "Generate verification codes")
async def generate_codes(request: web.Request) -> web.Response:
    tenant = await common.current_tenant(request)
    form = common.posted_form(request)
    back = common.tenant_url(
        tenant.id,
        "devices",
        tab=DeviceState.AWAITING_ACTIVATION.value,
        q=common.form_text(form, "q", 100),
        page=common.form_text(form, "page", 10),
        cursor=common.form_text(form, "cursor", 64),
    )
    all_waiting = form.get("all") == "1"
    macs = [m for m in form.getall("mac", []) if isinstance(m, str)]
    if not all_waiting and not macs:
        common.add_flash(request, "error", "Select at least one device, or choose “all”.")
        return common.see_other(back)
    try:
        issued = await common.registry_of(request).generate_codes(
            common.principal_of(request), tenant.id, None if all_waiting else macs, all_waiting
        )
    except Invalid as e:
        problems = "; ".join(f"{d.get('value')}: {d.get('message')}" for d in e.details[:5])
        common.add_flash(
            request, "error", f"No codes were issued: {e}" + (f" ({problems})" if problems else "")
        )
        return common.see_other(back)
    if issued:
        sheet = (
            common.tenant_url(tenant.id, "sheet", mac=[c.mac for c in issued])
            if len(issued) <= common.SHEET_SIZE
            else common.tenant_url(tenant.id, "sheet")
        )
        common.add_flash(
            request,
            "ok",
            f"Issued {len(issued):,} verification code(s), valid until {when(issued[0].expires_at)}. "
            "Earlier codes of these devices no longer work.",
            sheet,
            "Print the technician sheet",
        )
    else:
        common.add_flash(request, "ok", "No device is awaiting activation: no codes were issued.")
    return common.see_other(back)


@common.page("GET", "/ui/tenants/{tenant}/export.csv", "Export devices (CSV)")
async def export_csv(request: web.Request) -> web.Response:
    tenant = await common.current_tenant(request)
    state = request.query.get("state") or None
    rows = await common.registry_of(request).export(common.principal_of(request), tenant.id, state)
    return await export_download(tenant.id, rows)


def provision_qr_text(mac: str, code: str) -> str:
    """What a sheet's QR code says: the device and its code, in one scannable line."""
    return "imprint:provision?" + urlencode({"mac": mac, "code": code}, safe=":")


@common.page("GET", "/ui/tenants/{tenant}/sheet", "Technician sheet")
async def sheet(request: web.Request) -> web.Response:
    tenant = await common.current_tenant(request)
    registry = common.registry_of(request)
    who = common.principal_of(request)
    wanted = request.query.getall("mac", [])
    page = common.int_query(request, "page", 1)
    if wanted:
        macs: list[str] = []
        for raw in wanted[: common.SHEET_SIZE]:
            try:
                macs.append(normalize_mac(raw))
            except MacError:
                continue
        found = await registry.store.devices_in(tenant.id, macs)
        devices = [found[m] for m in macs if m in found]
        total = len(devices)
    else:
        listed = await registry.list_devices(
            who,
            tenant.id,
            state=DeviceState.AWAITING_ACTIVATION.value,
            limit=common.SHEET_SIZE,
            offset=(page - 1) * common.SHEET_SIZE,
        )
        total, devices = listed.count or 0, listed.devices
    codes = await common.current_codes(request, tenant.id, devices)

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
                    "qr": common.qr_svg(provision_qr_text(d.mac, code), f"QR code for {d.mac}"),
                }
            )
        return out

    items = await asyncio.to_thread(cards)
    pages = 1 if wanted else page_count(total, common.SHEET_SIZE)
    return await common.render(
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
            "prev_url": common.tenant_url(tenant.id, "sheet", page=page - 1)
            if page > 1 and not wanted
            else "",
            "next_url": common.tenant_url(tenant.id, "sheet", page=page + 1)
            if page < pages and not wanted
            else "",
        },
    )
