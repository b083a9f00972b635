"""The rollout view: a tenant's devices by state as a live chart, counts per location, and the
last errors with their reasons. The page polls rollout.json (static/admin.js) and redraws
without a reload; the figures come from the MAC index and the registry's rollout log
(server/registry/rollout.py), so a poll costs dict reads, not a scan of the store."""

from __future__ import annotations

import math
import time

from aiohttp import web

from server.admin.ui import common
from server.web.keys import SERVICES

POLL_MS = 1500


def _summary(request: web.Request, tenant_id: str) -> dict[str, object]:
    registry = common.registry_of(request)
    try:
        since = float(request.query.get("since", "0"))
    except ValueError:
        since = 0.0
    if not math.isfinite(since):
        since = 0.0
    data = registry.rollout.summary(registry.index, tenant_id, time.time(), since)
    data["labels"] = {**common.STATE_LABELS, "locked": "Locked"}
    session = common.current_session(request)
    if session.role == "operator":  # unregistered MACs seen on the LAN belong to no tenant
        index = registry.index
        data["discovered"] = sum(
            1 for mac in request.app[SERVICES].discovered.macs() if mac not in index
        )
    return data


@common.page("GET", "/ui/tenants/{tenant}/rollout", "Rollout: devices by state, live")
async def rollout_page(request: web.Request) -> web.Response:
    tenant = await common.current_tenant(request)
    data = _summary(request, tenant.id)
    return await common.render(
        request,
        "rollout.html",
        {
            "title": "Rollout",
            "nav": "rollout",
            "tenant": tenant,
            "data": data,
            "data_url": common.tenant_url(tenant.id, "rollout.json"),
            "poll_ms": POLL_MS,
        },
    )


@common.page("GET", "/ui/tenants/{tenant}/rollout.json", "The rollout view's figures (JSON)")
async def rollout_json(request: web.Request) -> web.Response:
    tenant = await common.current_tenant(request)
    return web.json_response(_summary(request, tenant.id), headers={"Cache-Control": "no-store"})
