"""REST API v1: tenants, devices, CSV import/export, verification codes, audit.

The contract other parts and tools rely on: extend it, don't rename it.
"""

from __future__ import annotations

import asyncio
import json
import re
from datetime import UTC, datetime
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from server import __version__
from server.core.metrics import Counter
from server.dhcp.leaseview import STATES as LEASE_STATES
from server.dhcp.leaseview import ShownLease, full_mode_off
from server.provisioning.sightings import LastSeen
from server.registry import leases as lease_list
from server.registry.csvio import CsvError, parse_upload
from server.registry.model import Device, DeviceState, Tenant, iso
from server.registry.service import IMPORT_MODES, Principal, Registry
from server.store.base import INT64_MAX, INT64_MIN, Invalid
from server.web.downloads import export_download, template_download
from server.web.errors import ApiError, json_errors
from server.web.keys import SERVICES, Services
from server.web.routes import Param, RouteTable


async def tenant_first(request: web.Request) -> None:
    """Before any body is read: the caller may see the path's tenant at all (another tenant's
    admin gets 404 however malformed the body)."""
    if "tenant" in request.match_info:
        await reg(request).get_tenant(who(request), request.match_info["tenant"])


routes = RouteTable(before_body=tenant_first)

PRINCIPAL = web.RequestKey("principal", Principal)


# ---- request and response bodies (pydantic at the edge only) --------------------------------


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TenantIn(_Body):
    id: str = Field(description="slug: a-z, 0-9 and '-', 1-63 characters", examples=["contoso"])
    name: str = Field(
        description="display name devices show on their sign-in page", examples=["Contoso Ltd"]
    )


class TenantOut(BaseModel):
    id: str
    name: str
    created_at: str


class TenantList(BaseModel):
    count: int
    results: list[TenantOut]


class DeviceIn(_Body):
    mac: str = Field(
        description="AA:BB:CC:DD:EE:FF, aa-bb-cc-dd-ee-ff, aabb.ccdd.eeff or aabbccddeeff"
    )
    location: str = Field(
        default="", max_length=200, description="where the technician installs it"
    )


class DevicePatch(_Body):
    location: str = Field(max_length=200)


class DeviceOut(BaseModel):
    mac: str
    device_id: str
    tenant: str
    location: str
    state: DeviceState
    created_at: str
    updated_at: str
    code_expires_at: str | None = None
    signed_in_user: str | None = None


class LastSeenOut(BaseModel):
    at: str = Field(description="when (UTC): the last DHCP ACK to it, or mDNS answer")
    ip: str = Field(description="the address it used then ('' if the reply did not say)")
    vendor_class: str = Field(description="DHCP option 60 as sent ('' if it never sent one)")
    interface: str = Field(description="the link it was seen on")
    source: str = Field(description="dhcp or mdns")
    mac_from: str = Field(
        description="how its MAC was known: chaddr (the DHCP request), or for mDNS frame, "
        "static, neighbour (the kernel's table) or lease (its DHCP address)"
    )


class DeviceDetailOut(DeviceOut):
    last_seen: LastSeenOut | None = Field(
        description="its latest sighting since this server started; null if none"
    )


class DeviceList(BaseModel):
    count: int | None = Field(
        description="every device that matches; null on a page asked for by cursor"
    )
    results: list[DeviceOut]
    next_cursor: str | None = Field(description="the page after this one; null on the last")
    prev_cursor: str | None = Field(description="the page before this one; null on the first")


class CodesIn(_Body):
    macs: list[str] | None = Field(default=None, description="devices to issue codes for")
    all_awaiting_activation: bool = Field(
        default=False, description="every device awaiting activation"
    )


class CodeOut(BaseModel):
    mac: str
    code: str = Field(description="XXXX-XXXX; case, spaces and dashes are ignored on entry")
    expires_at: str


class ImportChangeOut(BaseModel):
    row: int = Field(description="line in the file (header = 1)")
    mac: str
    action: Literal["create", "update"]
    before: str | None = Field(default=None, description="the location before (update only)")
    location: str


class ImportResult(BaseModel):
    dry_run: bool
    mode: Literal["create", "update", "upsert"]
    rows: int = Field(description="device rows in the file")
    created: int = Field(description="devices registered (in a dry run: that would be)")
    updated: int = Field(description="devices whose location changed (would change)")
    unchanged: int = Field(description="rows naming a device already as the row says")
    changes: list[ImportChangeOut] = Field(
        description="dry run only: the first 1,000 rows that change something, in file order"
    )


class AuditOut(BaseModel):
    id: int
    at: str
    actor: str
    tenant: str | None
    action: str
    target: str | None
    before: Any = None
    after: Any = None


class AuditList(BaseModel):
    count: int
    results: list[AuditOut]


class DiscoveredOut(BaseModel):
    mac: str
    vendor_class: str = Field(description="DHCP option 60 as sent ('' if none)")
    interface: str
    source: str = Field(description="protocol of the latest sighting: dhcp or mdns")
    first_seen: str
    last_seen: str
    count: int


class DiscoveredList(BaseModel):
    count: int
    results: list[DiscoveredOut]


class LeaseOut(BaseModel):
    ip: str
    mac: str
    state: str = Field(description="bound, released, expired or declined (as of now)")
    expires_at: str = Field(description="end of the lease, release time or quarantine end")
    subnet: str
    tenant: str | None = Field(description="the tenant of the device; null if not registered")
    location: str | None = Field(description="the device's location; null if not registered")
    updated_at: str


class LeaseList(BaseModel):
    count: int = Field(description="every lease that matches the filters")
    results: list[LeaseOut]
    next_cursor: str | None = Field(description="the page after this one; null on the last")


def _when(t: float) -> str:
    return iso(datetime.fromtimestamp(t, UTC))


def last_seen_out(seen: LastSeen | None) -> dict[str, Any] | None:
    if seen is None:
        return None
    return {
        "at": _when(seen.at),
        "ip": seen.ip,
        "vendor_class": seen.vendor_class,
        "interface": seen.interface,
        "source": seen.source,
        "mac_from": seen.mac_from,
    }


def lease_out(shown: ShownLease) -> dict[str, Any]:
    lease = shown.row.lease
    return {
        "ip": lease.ip,
        "mac": lease.mac,
        "state": shown.state.value,
        "expires_at": _when(lease.expires_at),
        "subnet": lease.subnet,
        "tenant": shown.row.tenant_id,
        "location": shown.row.location,
        "updated_at": _when(lease.updated_at),
    }


def device_out(d: Device) -> dict[str, Any]:
    return d.as_json()


def tenant_out(t: Tenant) -> dict[str, Any]:
    return {"id": t.id, "name": t.name, "created_at": t.created_at}


# ---- helpers ---------------------------------------------------------------------------------


def who(request: web.Request) -> Principal:
    p: Principal | None = request.get(PRINCIPAL)
    if p is None:
        raise ApiError(
            401,
            "unauthorized",
            "send 'Authorization: Bearer <token>' (see `imprint tokens create`)",
        )
    return p


def reg(request: web.Request) -> Registry:
    return request.app[SERVICES].registry


# An integer query parameter is parsed to the store's 64-bit range or refused with 400 (a wider
# value would reach SQLite and raise OverflowError: a 500). A value inside it but outside the
# parameter's documented minimum/maximum breaks a rule of the operation: 422, like any Invalid
# (the registry checks limit, offset and before_id for every caller; /discovered its limit).
_WHOLE = re.compile(r"[+-]?[0-9]+")


def int_query(request: web.Request, name: str, default: int) -> int:
    """Query parameter `name` as a whole number (ASCII digits, optional sign) of at most 64 bits;
    `default` when absent or empty; otherwise ApiError 400 saying what to send."""
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    # A length bound before int(): a sign and 20 digits hold every 64-bit value, and int()
    # of a very long string is slow (and past 4300 digits refused).
    if len(raw) <= 21 and _WHOLE.fullmatch(raw):
        value = int(raw)
        if INT64_MIN <= value <= INT64_MAX:
            return value
    shown = raw if len(raw) <= 40 else raw[:40] + "..."
    raise ApiError(
        400,
        "bad_request",
        f"query parameter {name!r} must be a whole number of at most 64 bits "
        f"({INT64_MIN} to {INT64_MAX}), got {shown!r}",
    )


def bool_query(request: web.Request, name: str) -> bool:
    raw = request.query.get(name, "").lower()
    if raw in ("", "0", "false", "no"):
        return False
    if raw in ("1", "true", "yes"):
        return True
    raise ApiError(
        400, "bad_request", f"query parameter {name!r} must be true or false, got {raw!r}"
    )


@web.middleware
async def auth_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """`Authorization: Bearer` for every /api/v1 route but those declared `auth="none"`."""
    if request.match_info.route.handler not in _PUBLIC:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(
                401,
                "unauthorized",
                "send 'Authorization: Bearer <token>' (see `imprint tokens create`)",
            )
        principal = await request.app[SERVICES].registry.authenticate(token.strip())
        if principal is None:
            raise ApiError(401, "unauthorized", "the token is unknown or revoked")
        request[PRINCIPAL] = principal
    resp: web.StreamResponse = await handler(request)
    return resp


T = Param("tenant", "path", {"type": "string"}, "tenant id")
M = Param("mac", "path", {"type": "string"}, "MAC address in any accepted spelling")
STATE = Param(
    "state", "query", {"type": "string", "enum": [s.value for s in DeviceState]}, "filter by state"
)


# ---- routes ----------------------------------------------------------------------------------


@routes.route(
    "GET",
    "/api/v1/openapi.json",
    summary="This OpenAPI 3.1 document",
    tag="meta",
    auth="none",
    responses={200: ("OpenAPI document", {"type": "object"})},
)
async def openapi_document(request: web.Request) -> dict[str, Any]:
    return request.app[SERVICES].openapi


@routes.route(
    "POST",
    "/api/v1/tenants",
    summary="Create a tenant (operators)",
    tag="tenants",
    body=TenantIn,
    responses={201: ("created", TenantOut)},
)
async def create_tenant(request: web.Request, body: TenantIn) -> dict[str, Any]:
    t = await reg(request).create_tenant(who(request), body.id, body.name)
    return tenant_out(t)


@routes.route(
    "GET",
    "/api/v1/tenants",
    summary="List the tenants this token can see",
    tag="tenants",
    responses={200: ("tenants", TenantList)},
)
async def list_tenants(request: web.Request) -> dict[str, Any]:
    ts = await reg(request).list_tenants(who(request))
    return {"count": len(ts), "results": [tenant_out(t) for t in ts]}


@routes.route(
    "GET",
    "/api/v1/tenants/{tenant}",
    summary="One tenant",
    tag="tenants",
    params=(T,),
    responses={200: ("tenant", TenantOut)},
)
async def get_tenant(request: web.Request, tenant: str) -> dict[str, Any]:
    t = await reg(request).get_tenant(who(request), tenant)
    return tenant_out(t)


@routes.route(
    "POST",
    "/api/v1/tenants/{tenant}/devices",
    summary="Register a device by MAC",
    tag="devices",
    params=(T,),
    body=DeviceIn,
    responses={201: ("registered", DeviceOut)},
)
async def add_device(request: web.Request, tenant: str, body: DeviceIn) -> dict[str, Any]:
    d = await reg(request).add_device(who(request), tenant, body.mac, body.location)
    return device_out(d)


@routes.route(
    "GET",
    "/api/v1/tenants/{tenant}/devices",
    summary="List devices in MAC order (cursor pages, searchable)",
    tag="devices",
    params=(
        T,
        STATE,
        Param("q", "query", {"type": "string"}, "MAC or location contains"),
        Param("limit", "query", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}),
        Param(
            "cursor",
            "query",
            {"type": "string"},
            "a page's next_cursor or prev_cursor: every device present when a walk began is "
            "returned exactly once, however many are added meanwhile",
        ),
        Param(
            "offset",
            "query",
            {"type": "integer", "minimum": 0, "maximum": INT64_MAX, "default": 0},
            "rows to skip (small lists; deep offsets are slow, prefer cursor)",
        ),
        Param(
            "count",
            "query",
            {"type": "boolean"},
            "count every match (default: on the first page only)",
        ),
    ),
    responses={200: ("devices", DeviceList)},
)
async def list_devices(request: web.Request, tenant: str) -> dict[str, Any]:
    page = await reg(request).list_devices(
        who(request),
        tenant,
        state=request.query.get("state") or None,
        q=request.query.get("q") or None,
        limit=int_query(request, "limit", 100),
        offset=int_query(request, "offset", 0),
        cursor=request.query.get("cursor") or None,
        with_count=bool_query(request, "count") if "count" in request.query else None,
    )
    return {
        "count": page.count,
        "results": [device_out(d) for d in page.devices],
        "next_cursor": page.next_cursor,
        "prev_cursor": page.prev_cursor,
    }


@routes.route(
    "GET",
    "/api/v1/tenants/{tenant}/devices/export.csv",
    summary="Export devices with current codes (CSV)",
    tag="devices",
    params=(T, STATE),
    responses={200: ("CSV file", "text/csv")},
)
async def export_csv(request: web.Request, tenant: str) -> web.Response:
    rows = await reg(request).export(who(request), tenant, request.query.get("state") or None)
    return await export_download(tenant, rows)


@routes.route(
    "POST",
    "/api/v1/tenants/{tenant}/devices/import",
    summary="Import devices from a CSV file",
    tag="devices",
    body="text/csv",
    params=(
        T,
        Param("dry_run", "query", {"type": "boolean", "default": False}, "validate only"),
        Param(
            "mode",
            "query",
            {"type": "string", "enum": list(IMPORT_MODES), "default": "create"},
            "create: new MACs only; update: change the location of this tenant's MACs; "
            "upsert: either, per row",
        ),
    ),
    responses={
        200: ("validated (dry run)", ImportResult),
        201: ("imported", ImportResult),
        413: ("file too large", None),
        422: ("bad rows: nothing stored", None),
    },
)
async def import_devices(request: web.Request, tenant: str) -> web.Response:
    principal = who(request)
    dry_run = bool_query(request, "dry_run")
    mode = request.query.get("mode") or "create"
    if mode not in IMPORT_MODES:
        raise ApiError(
            400, "bad_request", f"query parameter 'mode' must be one of "
            f"{', '.join(IMPORT_MODES)}, got {mode!r}",
        )  # fmt: skip
    await reg(request).get_tenant(principal, tenant)  # 404 before reading a large body
    data = await request.read()
    try:
        rows = await asyncio.to_thread(parse_upload, data)
    except CsvError as e:
        _count_import_rows(request, "invalid", len({r.row for r in e.errors}))
        raise ApiError(422, "invalid_csv", str(e), [r.as_dict() for r in e.errors]) from None
    try:
        plan = await reg(request).import_devices(
            principal, tenant, rows, mode=mode, dry_run=dry_run
        )
    except Invalid as e:
        _count_import_rows(request, "invalid", len(e.details))
        raise
    _count_import_rows(request, "dry_run" if dry_run else "imported", len(rows))
    return web.json_response(
        {
            "dry_run": dry_run,
            "mode": mode,
            "rows": plan.rows,
            "created": len(plan.created),
            "updated": len(plan.updated),
            "unchanged": plan.unchanged,
            "changes": plan.changes() if dry_run else [],
        },
        status=200 if dry_run else 201,
    )


def _count_import_rows(request: web.Request, result: str, rows: int) -> None:
    request.app[IMPORT_ROWS].inc(result, amount=rows)


@routes.route(
    "GET",
    "/api/v1/tenants/{tenant}/devices/{mac}",
    summary="One device",
    tag="devices",
    params=(T, M),
    responses={200: ("device, with its latest sighting on the network", DeviceDetailOut)},
)
async def get_device(request: web.Request, tenant: str, mac: str) -> dict[str, Any]:
    d = await reg(request).get_device(who(request), tenant, mac)
    seen = request.app[SERVICES].sightings.last_seen(d.mac)
    return {**device_out(d), "last_seen": last_seen_out(seen)}


@routes.route(
    "PATCH",
    "/api/v1/tenants/{tenant}/devices/{mac}",
    summary="Change a device's location",
    tag="devices",
    params=(T, M),
    body=DevicePatch,
    responses={200: ("updated", DeviceOut)},
)
async def patch_device(
    request: web.Request, tenant: str, mac: str, body: DevicePatch
) -> dict[str, Any]:
    d = await reg(request).update_device(who(request), tenant, mac, body.location)
    return device_out(d)


@routes.route(
    "DELETE",
    "/api/v1/tenants/{tenant}/devices/{mac}",
    summary="Delete a device",
    tag="devices",
    params=(T, M),
    responses={204: ("deleted", None)},
)
async def delete_device(request: web.Request, tenant: str, mac: str) -> None:
    await reg(request).delete_device(who(request), tenant, mac)
    return None


@routes.route(
    "POST",
    "/api/v1/tenants/{tenant}/devices/{mac}/reset",
    summary="Reset a device to awaiting activation (revokes its credential and code)",
    tag="devices",
    params=(T, M),
    responses={200: ("reset", DeviceOut)},
)
async def reset_device(request: web.Request, tenant: str, mac: str) -> dict[str, Any]:
    d = await reg(request).reset_device(who(request), tenant, mac)
    return device_out(d)


@routes.route(
    "GET",
    "/api/v1/devices/template.csv",
    summary="CSV template for device import",
    tag="devices",
    auth="none",
    responses={200: ("CSV template", "text/csv")},
)
async def template_csv(request: web.Request) -> web.Response:
    return template_download()


@routes.route(
    "POST",
    "/api/v1/tenants/{tenant}/verification-codes",
    summary="Issue verification codes (valid 24 h by default; revokes previous ones)",
    tag="codes",
    params=(T,),
    body=CodesIn,
    responses={
        201: ("issued", {"type": "array", "items": {"$ref": "#/components/schemas/CodeOut"}})
    },
)
async def issue_codes(request: web.Request, tenant: str, body: CodesIn) -> web.Response:
    issued = await reg(request).generate_codes(
        who(request), tenant, body.macs, body.all_awaiting_activation
    )

    def encode() -> bytes:
        data = [{"mac": c.mac, "code": c.code, "expires_at": c.expires_at} for c in issued]
        return json.dumps(data).encode()

    # 100,000 codes are 9 MB of JSON: encoded off the event loop (0.1 s on it).
    body_bytes = await asyncio.to_thread(encode) if len(issued) > 1000 else encode()
    return web.Response(
        body=body_bytes,
        status=201,
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


@routes.route(
    "GET",
    "/api/v1/tenants/{tenant}/audit",
    summary="Audit log of admin changes (newest first)",
    tag="audit",
    params=(
        T,
        Param("limit", "query", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}),
        Param(
            "before_id",
            "query",
            {"type": "integer", "minimum": 1, "maximum": INT64_MAX},
            "page: entries older than this id",
        ),
    ),
    responses={200: ("entries", AuditList)},
)
async def audit_log(request: web.Request, tenant: str) -> dict[str, Any]:
    before = request.query.get("before_id")
    rows = await reg(request).audit(
        who(request),
        tenant,
        limit=int_query(request, "limit", 100),
        before_id=int_query(request, "before_id", 0) if before else None,
    )
    results = [
        {
            "id": r.id,
            "at": r.at,
            "actor": r.actor,
            "tenant": r.tenant_id,
            "action": r.action,
            "target": r.target,
            "before": r.before,
            "after": r.after,
        }
        for r in rows
    ]
    return {"count": len(results), "results": results}


DISCOVERED_MAX = 10000


@routes.route(
    "GET",
    "/api/v1/discovered",
    summary="MACs seen on the network but not registered",
    tag="devices",
    responses={200: ("seen MACs, most recent first", DiscoveredList)},
    params=(
        Param(
            "limit",
            "query",
            {"type": "integer", "minimum": 1, "maximum": DISCOVERED_MAX, "default": 1000},
        ),
    ),
)
async def discovered(request: web.Request) -> dict[str, Any]:
    principal = who(request)
    if principal.role != "operator":
        # Unregistered MACs belong to no tenant yet: only operators see the site-wide list.
        raise ApiError(403, "forbidden", "only operator tokens can list discovered devices")
    limit = int_query(request, "limit", 1000)
    if not 1 <= limit <= DISCOVERED_MAX:  # as the registry's lists refuse theirs
        raise Invalid(f"limit must be between 1 and {DISCOVERED_MAX}")
    entries = request.app[SERVICES].discovered.recent(limit)
    results = [
        {
            "mac": e.mac,
            "vendor_class": e.vendor_class,
            "interface": e.interface,
            "source": e.source,
            "first_seen": iso(datetime.fromtimestamp(e.first_seen, UTC)),
            "last_seen": iso(datetime.fromtimestamp(e.last_seen, UTC)),
            "count": e.count,
        }
        for e in entries
    ]
    return {"count": len(results), "results": results}


@routes.route(
    "GET",
    "/api/v1/leases",
    summary="DHCP leases (full mode), in address order; a tenant admin sees its tenant's",
    tag="dhcp",
    params=(
        Param("tenant", "query", {"type": "string"}, "only this tenant's devices' leases"),
        Param("mac", "query", {"type": "string"}, "only this MAC's leases (any spelling)"),
        Param("state", "query", {"type": "string", "enum": list(LEASE_STATES)}, "filter by state"),
        Param("limit", "query", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}),
        Param("cursor", "query", {"type": "string"}, "a page's next_cursor"),
    ),
    responses={
        200: ("leases", LeaseList),
        409: ("DHCP is not in full mode here, so there are no leases", None),
    },
)
async def leases(request: web.Request) -> dict[str, Any]:
    principal = who(request)
    q = request.query
    if q.get("tenant"):  # another tenant's admin gets 404 whatever else is asked or set up
        await reg(request).get_tenant(principal, q["tenant"])
    off = full_mode_off(request.app[SERVICES].settings.dhcp)
    if off is not None:
        # 409 as for a device that is not provisioned: the route exists and the caller may
        # use it, but this server's configuration leaves nothing to list, and an empty list
        # (or a 404) would hide that; the message names the setting to change.
        raise ApiError(409, "dhcp_not_full_mode", off)
    page = await lease_list.list_leases(
        reg(request),
        principal,
        tenant=q.get("tenant") or None,
        mac=q.get("mac") or None,
        state=q.get("state") or None,
        limit=int_query(request, "limit", 100),
        cursor=q.get("cursor") or None,
    )
    return {
        "count": page.count,
        "results": [lease_out(x) for x in page.results],
        "next_cursor": page.next_cursor,
    }


_PUBLIC = routes.public_handlers()  # the OpenAPI document and the CSV template
PREFIX = "/api/v1"
IMPORT_ROWS = web.AppKey("imprint_api_import_rows", Counter)


def sub_app(services: Services, tables: list[RouteTable]) -> web.Application:
    """The /api/v1 audience: bearer tokens, JSON errors (statuses from server/web/errors.py)."""
    app = web.Application(
        middlewares=[json_errors, auth_middleware],
        client_max_size=services.settings.http.max_upload_bytes,
    )
    app[SERVICES] = services
    app[IMPORT_ROWS] = services.metrics.counter(  # declared once, not on the request path
        "imprint_import_rows_total",
        "CSV import rows: imported, checked by a dry run, or invalid (the upload was refused)",
        ("result",),
    )
    for table in tables:
        table.add_to(app, PREFIX)
    return app


__all__ = ["routes", "sub_app", "PREFIX", "__version__"]
