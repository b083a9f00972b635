"""CSV upload: preview every row (and every error) first, then confirm to store all or none."""

from __future__ import annotations

import asyncio
import secrets

from aiohttp import web

from server.admin.ui import common
from server.admin.ui.state import UI, PendingUpload
from server.registry.csvio import CsvError, RowError, parse_upload
from server.registry.model import DeviceState
from server.registry.service import IMPORT_MODES, ImportMode, ImportPlan, ImportRow
from server.store.base import Conflict, Invalid


@common.page("POST", "/ui/tenants/{tenant}/provision/preview", "Check a CSV upload")
async def upload_preview(request: web.Request) -> web.Response:
    tenant = await common.current_tenant(request)
    upload = common.posted_form(request).get("file")
    if not isinstance(upload, web.FileField):
        return await common.provision_form(
            request, tenant, status=422, upload_error="Choose a CSV file to upload."
        )
    raw_mode = common.form_text(common.posted_form(request), "mode", 10) or "create"
    mode: ImportMode = "create"
    for known in IMPORT_MODES:
        if raw_mode == known:
            mode = known
    if raw_mode != mode:
        return await common.provision_form(
            request, tenant, status=422, upload_error="Choose what to do with registered MACs."
        )
    data = await asyncio.to_thread(upload.file.read)
    filename = (upload.filename or "upload.csv")[:200]
    errors: list[RowError] = []
    message = ""
    rows: list[ImportRow] = []
    plan: ImportPlan | None = None
    try:
        rows = await asyncio.to_thread(parse_upload, data)
        plan = await common.registry_of(request).import_devices(
            common.principal_of(request), tenant.id, rows, mode=mode, dry_run=True
        )
    except CsvError as e:
        message, errors = str(e), e.errors
    except Invalid as e:  # MACs registered already (or not, in update mode)
        message = str(e)
        errors = [
            RowError(
                int(str(d.get("row", 0))),
                str(d.get("column", "")),
                str(d.get("value", "")),
                str(d.get("message", "")),
            )
            for d in e.details
        ]
    if message or plan is None:
        return await common.render(
            request,
            "preview.html",
            {
                "title": "Upload has errors",
                "nav": "provision",
                "tenant": tenant,
                "filename": filename,
                "message": message,
                "errors": errors,
                "rows": [],
                "count": 0,
                "upload_id": "",
            },
            status=422,
        )
    pending = PendingUpload(
        secrets.token_urlsafe(16),
        common.current_session(request).username,
        tenant.id,
        filename,
        tuple(rows),
        asyncio.get_running_loop().time(),
        mode,
    )
    request.app[UI].uploads.put(pending, pending.created)
    return await common.render(
        request,
        "preview.html",
        {
            "title": "Check and confirm the import",
            "nav": "provision",
            "tenant": tenant,
            "filename": filename,
            "message": "",
            "errors": [],
            "rows": rows[: common.PREVIEW_ROWS],
            "count": len(rows),
            "plan": plan,
            "changes": plan.changes(common.PREVIEW_ROWS),
            "upload_id": pending.id,
        },
    )


@common.page("POST", "/ui/tenants/{tenant}/provision/confirm", "Import a checked CSV upload")
async def upload_confirm(request: web.Request) -> web.Response:
    tenant = await common.current_tenant(request)
    pending = request.app[UI].uploads.take(
        common.form_text(common.posted_form(request), "upload_id", 100),
        common.current_session(request).username,
        tenant.id,
        asyncio.get_running_loop().time(),
    )
    if pending is None:
        return await common.provision_form(
            request,
            tenant,
            status=409,
            upload_error="This preview has expired or was already imported. Upload the file again.",
        )
    try:
        plan = await common.registry_of(request).import_devices(
            common.principal_of(request), tenant.id, pending.rows, mode=pending.mode
        )
    except (Invalid, Conflict) as e:
        return await common.provision_form(
            request,
            tenant,
            status=409,
            upload_error=f"Nothing was imported: {e}. Upload the file again to see which rows.",
        )
    common.add_flash(
        request,
        "ok",
        f"Imported {len(plan.created) + len(plan.updated):,} device(s) from {pending.filename}"
        f" ({len(plan.created):,} registered, {len(plan.updated):,} moved, "
        f"{plan.unchanged:,} unchanged).",
    )
    return common.see_other(
        common.tenant_url(tenant.id, "devices", tab=DeviceState.AWAITING_ACTIVATION.value)
    )
