"""`imprint tenants create|list`."""

from __future__ import annotations

import argparse
import json

from server.cli.common import Cli, Commands, table
from server.config import Settings


async def cmd_tenants_create(s: Settings, a: argparse.Namespace) -> int:
    cli = Cli(s)
    async with cli as reg:
        t = await reg.create_tenant(cli.who, a.id, a.name)
    print(f"created tenant {t.id} ({t.name})")
    return 0


async def cmd_tenants_list(s: Settings, a: argparse.Namespace) -> int:
    cli = Cli(s)
    async with cli as reg:
        ts = await reg.list_tenants(cli.who)
    if a.json:
        print(json.dumps([{"id": t.id, "name": t.name, "created_at": t.created_at} for t in ts]))
    else:
        print(table(["ID", "NAME", "CREATED (UTC)"], [(t.id, t.name, t.created_at) for t in ts]))
    return 0


def register(commands: Commands) -> None:
    tenants = commands.group("tenants", "manage tenants")
    sp = tenants.add("create", cmd_tenants_create, "create a tenant")
    sp.add_argument("--id", required=True, help="slug: a-z, 0-9, '-'")
    sp.add_argument("--name", required=True, help="display name shown on devices' sign-in page")
    sp = tenants.add("list", cmd_tenants_list, "list tenants")
    sp.add_argument("--json", action="store_true")
