"""`imprint admins create|list|disable`: accounts of the admin web UI (/ui)."""

from __future__ import annotations

import argparse

from server.admin.auth import AdminAuth
from server.admin.store import AdminStore
from server.cli.common import Cli, Commands, password_args, print_json, read_password, table
from server.config import Settings


def _admin_auth(cli: Cli) -> AdminAuth:
    return AdminAuth(AdminStore(cli.store))


async def cmd_admins_create(s: Settings, a: argparse.Namespace) -> int:
    password = read_password(a)
    cli = Cli(s)
    async with cli:
        row = await _admin_auth(cli).create_admin(
            cli.who.actor, a.username, password, a.role, a.tenant
        )
    tenant = f" of tenant {row.tenant_id}" if row.tenant_id else ""
    print(f"created {row.role} {row.username}{tenant}; sign in at /ui")
    return 0


async def cmd_admins_list(s: Settings, a: argparse.Namespace) -> int:
    cli = Cli(s)
    async with cli:
        rows = await AdminStore(cli.store).list_admins()
    if a.json:
        print_json(
            [
                {
                    "username": r.username,
                    "role": r.role,
                    "tenant": r.tenant_id,
                    "disabled": bool(r.disabled),
                    "created_at": r.created_at,
                }
                for r in rows
            ]
        )
        return 0
    print(
        table(
            ["USERNAME", "ROLE", "TENANT", "STATUS", "CREATED (UTC)"],
            [
                (
                    r.username,
                    r.role,
                    r.tenant_id,
                    "disabled" if r.disabled else "active",
                    r.created_at,
                )
                for r in rows
            ],
        )
    )
    return 0


async def cmd_admins_disable(s: Settings, a: argparse.Namespace) -> int:
    cli = Cli(s)
    async with cli:
        await _admin_auth(cli).set_disabled(cli.who.actor, a.username, not a.enable)
    print(f"{'enabled' if a.enable else 'disabled (and signed out)'} {a.username}")
    return 0


def register(commands: Commands) -> None:
    admins = commands.group("admins", "admin web UI accounts")
    sp = admins.add("create", cmd_admins_create, "create an admin account for the web UI (/ui)")
    sp.add_argument("--username", required=True)
    password_args(sp)
    sp.add_argument("--role", required=True, choices=["operator", "admin"])
    sp.add_argument("--tenant", help="the tenant of an admin (tenant admin)")
    admins.add("list", cmd_admins_list, "list admin accounts (never their passwords)", json=True)
    sp = admins.add("disable", cmd_admins_disable, "disable an admin and end their sessions")
    sp.add_argument("--username", required=True)
    sp.add_argument("--enable", action="store_true", help="enable the account again instead")
