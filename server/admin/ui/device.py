"""One device: its page and live status, reset, delete, sign-in and sign-out, and
registering a discovered device."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from server.admin.ui import common
from server.registry.model import Device, Tenant, iso
from server.store.base import Conflict, Invalid, NotFound
from server.web.keys import SERVICES


async def _device(request: web.Request) -> tuple[Tenant, Device]:
    tenant = await common.current_tenant(request)
    try:
        device = await common.registry_of(request).get_device(
            common.principal_of(request), tenant.id, request.match_info["mac"]
        )
    except Invalid as e:
        raise NotFound(str(e)) from e
    return tenant, device


@common.page("GET", "/ui/tenants/{tenant}/devices/{mac}", "One device")
async def device_page(request: web.Request) -> web.Response:
    tenant, device = await _device(request)
    confirm = request.query.get("confirm", "")
    if confirm not in ("reset", "delete", "sign-out"):
        confirm = ""
    codes = await common.current_codes(request, tenant.id, [device])
    code, expires = codes.get(device.mac, ("", ""))
    seen = request.app[SERVICES].sightings.last_seen(device.mac)
    return await common.render(
        request,
        "device.html",
        {
            "title": f"Device {device.mac}",
            "nav": "devices",
            "tenant": tenant,
            "d": device,
            "code": code,
            "expires": expires,
            "confirm": confirm,
            "seen": seen,
            "seen_at": iso(datetime.fromtimestamp(seen.at, UTC)) if seen else "",
            "mac_from": MAC_FROM.get(seen.mac_from, seen.mac_from) if seen else "",
        },
    )


# How the device's MAC was known at its last sighting, in words.
MAC_FROM = {
    "chaddr": "its DHCP request",
    "frame": "the mDNS query's frame",
    "static": "the static neighbour map",
    "neighbour": "the kernel's neighbour table (mDNS)",
    "lease": "its DHCP address (mDNS)",
}


@common.page(
    "GET",
    "/ui/tenants/{tenant}/devices/{mac}/status.json",
    "A device's state, for the live sign-in status",
)
async def device_status(request: web.Request) -> web.Response:
    _, device = await _device(request)
    return web.json_response(
        {
            "mac": device.mac,
            "state": device.state.value,
            "label": common.STATE_LABELS[device.state.value],
            "signed_in_user": device.signed_in_user,
        },
        headers={"Cache-Control": "no-store"},
    )


@common.page("POST", "/ui/tenants/{tenant}/devices/{mac}/reset", "Reset a device")
async def reset_device(request: web.Request) -> web.Response:
    tenant, device = await _device(request)
    await common.registry_of(request).reset_device(
        common.principal_of(request), tenant.id, device.mac
    )
    common.add_flash(
        request,
        "ok",
        f"Reset {device.mac}: it is awaiting activation again and needs a new verification code.",
    )
    return common.see_other(common.tenant_url(tenant.id, "devices", device.mac))


@common.page("POST", "/ui/tenants/{tenant}/devices/{mac}/delete", "Delete a device")
async def delete_device(request: web.Request) -> web.Response:
    tenant, device = await _device(request)
    await common.registry_of(request).delete_device(
        common.principal_of(request), tenant.id, device.mac
    )
    common.add_flash(request, "ok", f"Deleted {device.mac}.")
    return common.see_other(common.tenant_url(tenant.id, "devices", tab=device.state.value))


@common.page("POST", "/ui/tenants/{tenant}/devices/{mac}/sign-out", "Sign a device out")
async def sign_out(request: web.Request) -> web.Response:
    tenant, device = await _device(request)
    await common.oauth_of(request).sign_out(common.principal_of(request), tenant.id, device.mac)
    common.add_flash(request, "ok", f"Signed {device.mac} out; it shows its sign-in page again.")
    return common.see_other(common.tenant_url(tenant.id, "devices", device.mac))


@common.page("POST", "/ui/tenants/{tenant}/devices/{mac}/sign-in", "Sign in a user on a device")
async def sign_in(request: web.Request) -> web.Response:
    tenant, device = await _device(request)
    ctx: dict[str, Any] = {
        "title": f"Sign in a user on {device.mac}",
        "nav": "devices",
        "tenant": tenant,
        "d": device,
        "error": "",
        "code": None,
        "qr": "",
        "status_url": common.tenant_url(tenant.id, "devices", device.mac, "status.json"),
    }
    try:
        code = await common.oauth_of(request).sign_in_code(
            common.principal_of(request), tenant.id, device.mac
        )
    except Conflict as e:
        ctx["error"] = str(e)
        return await common.render(request, "sign_in.html", ctx, status=409)
    ctx["code"] = code
    ctx["qr"] = await asyncio.to_thread(
        common.qr_svg, code.verification_uri_complete, "QR code of the sign-in link"
    )
    return await common.render(request, "sign_in.html", ctx)


@common.page("POST", "/ui/tenants/{tenant}/discovered/register", "Register a discovered device")
async def register_discovered(request: web.Request) -> web.Response:
    tenant = await common.current_tenant(request)
    if common.current_session(request).role != "operator":
        raise NotFound("only operators see discovered devices")
    form = common.posted_form(request)
    back = common.tenant_url(tenant.id, "devices", tab=common.DISCOVERED)
    try:
        device = await common.registry_of(request).add_device(
            common.principal_of(request),
            tenant.id,
            common.form_text(form, "mac", 100),
            common.form_text(form, "location", 1000),
        )
    except (Invalid, Conflict) as e:
        common.add_flash(request, "error", f"Not registered: {e}")
        return common.see_other(back)
    request.app[SERVICES].discovered.remove(device.mac)
    common.add_flash(
        request,
        "ok",
        f"Registered {device.mac} in {tenant.name}; it is awaiting activation.",
        common.tenant_url(tenant.id, "devices", device.mac),
        "Open the device",
    )
    return common.see_other(back)
