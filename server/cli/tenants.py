"""`imprint tenants create|list|show|delete`."""

from __future__ import annotations

import argparse

from server.cli.common import Cli, Commands, print_json, table
from server.config import Settings
from server.registry.model import Tenant


def tenant_json(t: Tenant) -> dict[str, object]:
    return {"id": t.id, "name": t.name, "created_at": t.created_at}


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
        print_json([tenant_json(t) for t in ts])
    else:
        print(table(["ID", "NAME", "CREATED (UTC)"], [(t.id, t.name, t.created_at) for t in ts]))
    return 0


async def cmd_tenants_show(s: Settings, a: argparse.Namespace) -> int:
    cli = Cli(s)
    async with cli as reg:
        t = await reg.get_tenant(cli.who, a.tenant)
        page = await reg.list_devices(cli.who, a.tenant, limit=1, with_count=True)
    if a.json:
        print_json({**tenant_json(t), "devices": page.count or 0})
    else:
        print(f"tenant   {t.id}\nname     {t.name}\ncreated  {t.created_at}")
        print(f"devices  {page.count or 0}")
    return 0


async def cmd_tenants_delete(s: Settings, a: argparse.Namespace) -> int:
    cli = Cli(s)
    async with cli as reg:
        devices, users = await reg.delete_tenant(cli.who, a.tenant, force=a.force)
    extra = f" with {devices} device(s) and {users} user account(s)" if devices or users else ""
    print(f"deleted tenant {a.tenant}{extra}; its API tokens and admin accounts went with it")
    return 0


def register(commands: Commands) -> None:
    tenants = commands.group("tenants", "manage tenants")
    sp = tenants.add("create", cmd_tenants_create, "create a tenant")
    sp.add_argument("--id", required=True, help="slug: a-z, 0-9, '-'")
    sp.add_argument("--name", required=True, help="display name shown on devices' sign-in page")
    tenants.add("list", cmd_tenants_list, "list tenants", json=True)
    sp = tenants.add("show", cmd_tenants_show, "one tenant and its device count", json=True)
    sp.add_argument("tenant", help="the tenant's id")
    sp = tenants.add(
        "delete",
        cmd_tenants_delete,
        "delete a tenant (refused while it has devices or user accounts, unless --force)",
    )
    sp.add_argument("tenant", help="the tenant's id")
    sp.add_argument(
        "--force",
        action="store_true",
        help="also delete its devices (their codes and sign-ins) and user accounts",
    )
