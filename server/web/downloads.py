"""CSV files sent as downloads: the device template and the export, the same bytes and headers
whether the API or the admin UI serves them."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from aiohttp import web

from server.registry.csvio import TEMPLATE, write_export
from server.registry.service import ExportRow


def csv_download(text: str, filename: str, *, private: bool) -> web.Response:
    """`text` as a CSV attachment; `private` (codes, MACs) forbids caches from keeping it."""
    headers = {"Content-Disposition": f'attachment; filename="{filename}"'}
    if private:
        headers["Cache-Control"] = "no-store"
    return web.Response(text=text, content_type="text/csv", charset="utf-8", headers=headers)


def template_download() -> web.Response:
    return csv_download(TEMPLATE, "imprint-devices-template.csv", private=False)


async def export_download(tenant_id: str, rows: Sequence[ExportRow]) -> web.Response:
    text = await asyncio.to_thread(write_export, rows)  # 100k rows: off the event loop
    return csv_download(text, f"imprint-{tenant_id}-devices.csv", private=True)
