"""`imprint audit`: the audit log of admin changes, newest first (what GET .../audit returns)."""

from __future__ import annotations

import argparse
import json

from server.cli.common import Cli, Commands, bounded_int, print_json, table
from server.config import Settings
from server.store.base import NotFound


def _short(value: object, width: int = 60) -> str:
    if value is None:
        return ""
    text = json.dumps(value, separators=(",", ":"))
    return text if len(text) <= width else text[: width - 3] + "..."


async def cmd_audit(s: Settings, a: argparse.Namespace) -> int:
    cli = Cli(s)
    async with cli as reg:
        # An operator sees every entry: site-wide ones (tokens, admins) without --tenant, and a
        # deleted tenant's history with it.
        rows = await reg.store.list_audit(a.tenant, a.limit, a.before_id)
        if a.tenant and not rows and await reg.store.get_tenant(a.tenant) is None:
            raise NotFound(f"tenant {a.tenant!r} not found (and no audit entries name it)")
    if a.json:
        print_json(
            [
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
        )
        return 0
    print(
        table(
            ["ID", "AT (UTC)", "ACTOR", "TENANT", "ACTION", "TARGET", "CHANGE"],
            [
                (
                    r.id,
                    r.at,
                    r.actor,
                    r.tenant_id,
                    r.action,
                    r.target,
                    " -> ".join(x for x in (_short(r.before), _short(r.after)) if x),
                )
                for r in rows
            ],
        )
    )
    if len(rows) == a.limit:
        print(f"\nolder entries: --before-id {rows[-1].id}")
    return 0


def register(commands: Commands) -> None:
    sp = commands.add("audit", cmd_audit, "the audit log of admin changes, newest first", json=True)
    sp.add_argument("--tenant", help="only this tenant's entries (default: all, site-wide too)")
    sp.add_argument("--limit", type=bounded_int(1, 1000), default=100, help="1-1000 (100)")
    sp.add_argument(
        "--before-id", type=bounded_int(1), metavar="ID", help="page: entries older than ID"
    )
