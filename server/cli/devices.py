"""`imprint devices add|list|import|export|delete`."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from server.cli.common import Cli, Commands, table
from server.config import Settings
from server.registry.csvio import CsvError, parse_upload, write_export
from server.registry.model import DeviceState
from server.registry.service import IMPORT_MODES


def _progress(done: int, total: int) -> None:
    if not sys.stderr.isatty():
        return
    width = 40
    filled = width * done // max(total, 1)
    sys.stderr.write(f"\r  storing [{'#' * filled}{'.' * (width - filled)}] {done}/{total}")
    if done >= total:
        sys.stderr.write("\n")
    sys.stderr.flush()


async def cmd_devices_add(s: Settings, a: argparse.Namespace) -> int:
    cli = Cli(s)
    async with cli as reg:
        d = await reg.add_device(cli.who, a.tenant, a.mac, a.location)
    print(f"registered {d.mac} in {d.tenant_id} ({d.state.value})")
    return 0


async def cmd_devices_list(s: Settings, a: argparse.Namespace) -> int:
    cli = Cli(s)
    async with cli as reg:
        page = await reg.list_devices(
            cli.who, a.tenant, a.state, a.q, a.limit, a.offset, a.cursor, with_count=True
        )
    count, devices = page.count or 0, page.devices
    if a.json:
        print(
            json.dumps(
                {
                    "count": count,
                    "next_cursor": page.next_cursor,
                    "prev_cursor": page.prev_cursor,
                    "results": [
                        {
                            "mac": d.mac,
                            "device_id": d.device_id,
                            "location": d.location,
                            "state": d.state.value,
                            "code_expires_at": d.code_expires_at,
                            "updated_at": d.updated_at,
                        }
                        for d in devices
                    ],
                }
            )
        )
        return 0
    print(
        table(
            ["MAC ID", "LOCATION", "STATE", "CODE EXPIRES (UTC)", "USER"],
            [
                (d.mac, d.location, d.state.value, d.code_expires_at, d.signed_in_user)
                for d in devices
            ],
        )
    )
    if a.cursor:
        print(f"\n{len(devices)} of {count} device(s)")
    else:
        shown = f"{a.offset + 1}-{a.offset + len(devices)}" if devices else "0"
        print(f"\n{shown} of {count} device(s)")
    if page.next_cursor:
        print(f"next page: --cursor {page.next_cursor}")
    return 0


async def cmd_devices_import(s: Settings, a: argparse.Namespace) -> int:
    data = (
        await asyncio.to_thread(Path(a.file).read_bytes)
        if a.file != "-"
        else sys.stdin.buffer.read()
    )
    try:
        rows = parse_upload(data)
    except CsvError as e:
        print(f"error: {e}", file=sys.stderr)
        for r in e.errors:
            print(f"  row {r.row}, {r.column or 'file'}: {r.value!r}: {r.message}", file=sys.stderr)
        return 1
    cli = Cli(s)
    async with cli as reg:
        plan = await reg.import_devices(
            cli.who, a.tenant, rows, mode=a.mode, dry_run=a.dry_run, progress=_progress
        )
    if a.dry_run:
        for change in plan.changes(limit=a.show):
            before = f" (was {change['before']!r})" if change["action"] == "update" else ""
            print(f"  row {change['row']}: {change['action']} {change['mac']} "
                  f"at {change['location']!r}{before}")  # fmt: skip
    changed = len(plan.created) + len(plan.updated)
    print(
        f"{'checked' if a.dry_run else 'imported'} {changed} device(s): {len(plan.created)} "
        f"registered, {len(plan.updated)} moved, {plan.unchanged} unchanged"
        f"{' (dry run: nothing stored)' if a.dry_run else ''}"
    )
    return 0


async def cmd_devices_export(s: Settings, a: argparse.Namespace) -> int:
    cli = Cli(s)
    async with cli as reg:
        rows = await reg.export(cli.who, a.tenant, a.state)
    text = write_export(rows)
    if a.output and a.output != "-":
        await asyncio.to_thread(Path(a.output).write_text, text, encoding="utf-8", newline="")
        print(f"wrote {len(rows)} device(s) to {a.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


async def cmd_devices_delete(s: Settings, a: argparse.Namespace) -> int:
    cli = Cli(s)
    async with cli as reg:
        await reg.delete_device(cli.who, a.tenant, a.mac)
    print(f"deleted {a.mac}")
    return 0


def register(commands: Commands) -> None:
    devices = commands.group("devices", "manage devices")
    sp = devices.add("add", cmd_devices_add, "register one device by MAC")
    sp.add_argument("--tenant", required=True)
    sp.add_argument("--mac", required=True)
    sp.add_argument("--location", default="")
    sp = devices.add("list", cmd_devices_list, "list devices")
    sp.add_argument("--tenant", required=True)
    sp.add_argument("--state", choices=[st.value for st in DeviceState])
    sp.add_argument("--q", help="MAC or location contains")
    sp.add_argument("--limit", type=int, default=100)
    sp.add_argument("--offset", type=int, default=0)
    sp.add_argument("--cursor", help="the 'next page' cursor a previous list printed")
    sp.add_argument("--json", action="store_true")
    sp = devices.add(
        "import", cmd_devices_import, "register devices from a CSV file (all rows or none)"
    )
    sp.add_argument("--tenant", required=True)
    sp.add_argument(
        "--dry-run", action="store_true", help="check and list what would change; store nothing"
    )
    sp.add_argument(
        "--mode",
        choices=IMPORT_MODES,
        default="create",
        help="create: new MACs only (default); update: change the location of registered MACs; "
        "upsert: either, per row",
    )
    sp.add_argument(
        "--show", type=int, default=20, help="with --dry-run: list this many changes (default 20)"
    )
    sp.add_argument(
        "file", help="CSV made from the template (header 'MAC ID,Location'); '-' for stdin"
    )
    sp = devices.add("export", cmd_devices_export, "export devices with their current codes (CSV)")
    sp.add_argument("--tenant", required=True)
    sp.add_argument("--state", choices=[st.value for st in DeviceState])
    sp.add_argument("-o", "--output", help="file to write (default: stdout)")
    sp = devices.add("delete", cmd_devices_delete, "delete a device")
    sp.add_argument("--tenant", required=True)
    sp.add_argument("--mac", required=True)
