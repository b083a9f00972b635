"""`imprint leases`: the full-mode DHCP leases in the store, as GET /api/v1/leases lists them."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime

from server.cli.common import Cli, Commands, bounded_int, print_json, table
from server.config import Settings
from server.dhcp.leaseview import MAX_LIMIT, STATES, full_mode_off
from server.registry.leases import list_leases
from server.registry.model import iso


def _when(t: float) -> str:
    return iso(datetime.fromtimestamp(t, UTC))


async def cmd_leases(s: Settings, a: argparse.Namespace) -> int:
    off = full_mode_off(s.dhcp)
    if off is not None:
        print(f"error: {off}", file=sys.stderr)
        return 1
    cli = Cli(s)
    async with cli as reg:
        page = await list_leases(
            reg,
            cli.who,
            tenant=a.tenant,
            mac=a.mac,
            state=a.state,
            limit=a.limit,
            cursor=a.cursor,
        )
    rows = [
        {
            "ip": x.row.lease.ip,
            "mac": x.row.lease.mac,
            "state": x.state.value,
            "expires_at": _when(x.row.lease.expires_at),
            "subnet": x.row.lease.subnet,
            "tenant": x.row.tenant_id,
            "location": x.row.location,
            "updated_at": _when(x.row.lease.updated_at),
        }
        for x in page.results
    ]
    if a.json:
        print_json({"count": page.count, "results": rows, "next_cursor": page.next_cursor})
        return 0
    print(
        table(
            ["IP", "MAC ID", "STATE", "EXPIRES (UTC)", "SUBNET", "TENANT", "LOCATION"],
            [
                (
                    r["ip"],
                    r["mac"],
                    r["state"],
                    str(r["expires_at"]).replace("T", " ").rstrip("Z"),
                    r["subnet"],
                    r["tenant"] or "(not registered)",
                    r["location"],
                )
                for r in rows
            ],
        )
    )
    print(f"\n{len(rows)} of {page.count} lease(s)")
    if page.next_cursor:
        print(f"next page: --cursor {page.next_cursor}")
    return 0


def register(commands: Commands) -> None:
    sp = commands.add(
        "leases",
        cmd_leases,
        "DHCP leases (full mode) in address order, with the device holding each",
        json=True,
    )
    sp.add_argument("--tenant", help="only this tenant's devices' leases")
    sp.add_argument("--mac", help="only this MAC's leases (any spelling)")
    sp.add_argument("--state", choices=STATES, help="only leases in this state")
    sp.add_argument(
        "--limit",
        type=bounded_int(1, MAX_LIMIT),
        default=MAX_LIMIT,
        help=f"at most (1-{MAX_LIMIT})",
    )
    sp.add_argument("--cursor", help="the page after a previous run's 'next page' cursor")
