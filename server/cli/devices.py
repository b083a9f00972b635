"""`imprint devices add|list|show|import|export|reset|sign-in|sign-out|delete`."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from server.cli.common import (
    Cli,
    Commands,
    UsageError,
    bounded_int,
    describe,
    note,
    print_json,
    progress_bar,
    table,
)
from server.config import Settings
from server.core.mac import MacError, normalize_mac
from server.registry.csvio import CsvError, parse_upload, write_export
from server.registry.model import DeviceState
from server.registry.service import IMPORT_MODES, Registry
from server.store.base import Invalid, NotFound

if TYPE_CHECKING:
    from server.oauth.service import OAuthService


async def _locate(reg: Registry, a: argparse.Namespace) -> tuple[str, str]:
    """(tenant, MAC) of the device `a.mac`: in --tenant if given, else wherever it is."""
    try:
        mac = normalize_mac(a.mac)
    except MacError as e:
        raise Invalid(str(e), [{"field": "mac", "value": a.mac, "message": str(e)}]) from e
    if a.tenant:
        return a.tenant, mac
    d = await reg.store.get_device(mac)
    if d is None:
        raise NotFound(f"device {mac} is not registered in any tenant")
    return d.tenant_id, mac


async def cmd_devices_add(s: Settings, a: argparse.Namespace) -> int:
    cli = Cli(s)
    async with cli as reg:
        d = await reg.add_device(cli.who, a.tenant, a.mac, a.location)
    print(f"registered {d.mac} in {d.tenant_id} ({d.state.value})")
    return 0


async def cmd_devices_list(s: Settings, a: argparse.Namespace) -> int:
    if a.all and (a.cursor or a.offset):
        raise UsageError("--all lists every device from the first: drop --cursor and --offset")
    cli = Cli(s)
    async with cli as reg:
        limit = 1000 if a.all else a.limit
        page = await reg.list_devices(
            cli.who, a.tenant, a.state, a.q, limit, a.offset, a.cursor, with_count=True
        )
        count, devices = page.count or 0, list(page.devices)
        while a.all and page.next_cursor:  # every page, by cursor: each device exactly once
            page = await reg.list_devices(
                cli.who, a.tenant, a.state, a.q, limit, cursor=page.next_cursor, with_count=False
            )
            devices += page.devices
    if a.json:
        print_json(
            {
                "count": count,
                "next_cursor": page.next_cursor,
                "prev_cursor": page.prev_cursor,
                "results": [d.as_json() for d in devices],
            }
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
    if a.cursor or a.all:
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
            print(f"  {describe(r.as_dict())}", file=sys.stderr)
        return 1
    cli = Cli(s)
    async with cli as reg:
        with progress_bar(a, "storing devices") as progress:
            plan = await reg.import_devices(
                cli.who, a.tenant, rows, mode=a.mode, dry_run=a.dry_run, progress=progress
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
        note(a, f"wrote {len(rows)} device(s) to {a.output}")
    else:
        sys.stdout.write(text)
    return 0


async def cmd_devices_show(s: Settings, a: argparse.Namespace) -> int:
    cli = Cli(s)
    async with cli as reg:
        tenant, mac = await _locate(reg, a)
        d = await reg.get_device(cli.who, tenant, mac)
    if a.json:
        print_json(d.as_json())
        return 0
    rows = [
        ("MAC ID", d.mac),
        ("tenant", d.tenant_id),
        ("location", d.location),
        ("state", d.state.value),
        ("signed in as", d.signed_in_user),
        ("code expires (UTC)", d.code_expires_at),
        ("device id", d.device_id),
        ("created (UTC)", d.created_at),
        ("updated (UTC)", d.updated_at),
    ]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k.ljust(width)}  {'' if v is None else v}".rstrip())
    return 0


async def cmd_devices_reset(s: Settings, a: argparse.Namespace) -> int:
    cli = Cli(s)
    async with cli as reg:
        tenant, mac = await _locate(reg, a)
        d = await reg.reset_device(cli.who, tenant, mac)
    print(
        f"reset {d.mac} in {d.tenant_id}: {d.state.value} (its credential, code and sign-in are "
        f"revoked; issue a new code with `imprint codes generate --tenant {d.tenant_id} "
        f"--mac {d.mac}`)"
    )
    return 0


def _oauth(cli: Cli, reg: Registry) -> OAuthService:
    """The OAuth service the server runs, on the CLI's registry (for sign-in and sign-out)."""
    from cryptography.hazmat.primitives.asymmetric import ec

    from server.app import public_url
    from server.oauth.keys import SIGNING_KEY_NAME, CodeKeys, SigningKey
    from server.oauth.service import OAuthService
    from server.oauth.store import OAuthStore
    from server.provisioning.codes import load_key

    s = cli.settings
    try:
        secret = load_key(s.codes_key_file)
    except FileNotFoundError:
        raise UsageError(
            f"the code key file {s.codes_key_file} is missing: pending sign-ins cannot be read "
            "without it; restore it from a backup"
        ) from None
    path = s.state_dir / SIGNING_KEY_NAME
    # Showing a user code and signing out sign no token: with no key file yet (the server makes
    # it at start) an unsaved key stands in, and the file is not created here.
    signing = (
        SigningKey.load_or_create(path)
        if path.is_file()
        else SigningKey(ec.generate_private_key(ec.SECP256R1()))
    )
    return OAuthService(
        reg, OAuthStore(reg.store), CodeKeys(secret), signing, public_url=public_url(s)
    )


async def cmd_devices_sign_in(s: Settings, a: argparse.Namespace) -> int:
    cli = Cli(s)
    async with cli as reg:
        tenant, mac = await _locate(reg, a)
        code = await _oauth(cli, reg).sign_in_code(cli.who, tenant, mac)
    if a.json:
        print_json(
            {
                "mac": code.mac,
                "user_code": code.user_code,
                "verification_uri": code.verification_uri,
                "verification_uri_complete": code.verification_uri_complete,
                "expires_at": code.expires_at,
            }
        )
        return 0
    print(
        f"{code.mac} waits for sign-in: enter the code {code.user_code} at "
        f"{code.verification_uri} (or open {code.verification_uri_complete}) and sign in as the "
        f"user; it expires at {code.expires_at} (UTC)"
    )
    return 0


async def cmd_devices_sign_out(s: Settings, a: argparse.Namespace) -> int:
    cli = Cli(s)
    async with cli as reg:
        tenant, mac = await _locate(reg, a)
        d = await _oauth(cli, reg).sign_out(cli.who, tenant, mac)
    print(f"signed out {d.mac}: its tokens are revoked; it is {d.state.value}")
    return 0


async def cmd_devices_delete(s: Settings, a: argparse.Namespace) -> int:
    cli = Cli(s)
    async with cli as reg:
        await reg.delete_device(cli.who, a.tenant, a.mac)
    print(f"deleted {a.mac}")
    return 0


def _one_device(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("mac", help="the device's MAC, e.g. aa:bb:cc:dd:ee:ff")
    sp.add_argument("--tenant", help="its tenant (default: whichever tenant has it)")


def register(commands: Commands) -> None:
    devices = commands.group("devices", "manage devices")
    sp = devices.add("add", cmd_devices_add, "register one device by MAC")
    sp.add_argument("--tenant", required=True)
    sp.add_argument("--mac", required=True)
    sp.add_argument("--location", default="")
    sp = devices.add("list", cmd_devices_list, "list devices", json=True)
    sp.add_argument("--tenant", required=True)
    sp.add_argument("--state", choices=[st.value for st in DeviceState])
    sp.add_argument("--q", help="MAC or location contains")
    sp.add_argument("--limit", type=bounded_int(1, 1000), default=100, help="1-1000 (100)")
    sp.add_argument("--offset", type=bounded_int(0), default=0)
    sp.add_argument("--cursor", help="the 'next page' cursor a previous list printed")
    sp.add_argument("--all", action="store_true", help="every device, not one page")
    sp = devices.add("show", cmd_devices_show, "one device", json=True)
    _one_device(sp)
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
    sp = devices.add(
        "reset",
        cmd_devices_reset,
        "back to awaiting activation (revokes its credential, code and sign-in)",
    )
    _one_device(sp)
    sp = devices.add(
        "sign-in",
        cmd_devices_sign_in,
        "the user code a device shows while it waits for sign-in, and where to enter it",
        json=True,
    )
    _one_device(sp)
    sp = devices.add("sign-out", cmd_devices_sign_out, "sign a device out (revokes its tokens)")
    _one_device(sp)
    sp = devices.add("delete", cmd_devices_delete, "delete a device")
    sp.add_argument("--tenant", required=True)
    sp.add_argument("--mac", required=True)
