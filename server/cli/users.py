"""`imprint users create|list|disable|reset-password`: tenant user accounts (devices sign in
as them, RFC 8628)."""

from __future__ import annotations

import argparse

from server.cli.common import Cli, Commands, password_args, print_json, read_password, table
from server.config import Settings
from server.oauth.store import OAuthStore
from server.oauth.users import UserAccounts
from server.registry.service import Registry


def _user_accounts(reg: Registry) -> UserAccounts:
    return UserAccounts(reg, OAuthStore(reg.store))


async def cmd_users_create(s: Settings, a: argparse.Namespace) -> int:
    password = read_password(a)
    cli = Cli(s)
    async with cli as reg:
        u = await _user_accounts(reg).create(
            cli.who, a.tenant, a.username, a.display_name or "", password
        )
    print(f"created user {u.username} in {u.tenant_id}; devices can now be signed in as it")
    return 0


async def cmd_users_list(s: Settings, a: argparse.Namespace) -> int:
    cli = Cli(s)
    async with cli as reg:
        users = await _user_accounts(reg).list(cli.who, a.tenant)
    if a.json:
        print_json(
            [
                {
                    "username": u.username,
                    "display_name": u.display_name,
                    "disabled": u.disabled,
                    "created_at": u.created_at,
                    "updated_at": u.updated_at,
                }
                for u in users
            ]
        )
        return 0
    print(
        table(
            ["USERNAME", "DISPLAY NAME", "STATUS", "CREATED (UTC)"],
            [
                (u.username, u.display_name, "disabled" if u.disabled else "active", u.created_at)
                for u in users
            ],
        )
    )
    return 0


async def cmd_users_disable(s: Settings, a: argparse.Namespace) -> int:
    cli = Cli(s)
    async with cli as reg:
        u = await _user_accounts(reg).update(cli.who, a.tenant, a.username, disabled=not a.enable)
    print(
        f"enabled {u.username}"
        if a.enable
        else f"disabled {u.username}; devices signed in as it are signed out"
    )
    return 0


async def cmd_users_reset_password(s: Settings, a: argparse.Namespace) -> int:
    password = read_password(a)
    cli = Cli(s)
    async with cli as reg:
        await _user_accounts(reg).reset_password(cli.who, a.tenant, a.username, password)
    print(f"password of {a.username} changed")
    return 0


def register(commands: Commands) -> None:
    users = commands.group("users", "tenant user accounts that devices are signed in as")
    sp = users.add("create", cmd_users_create, "create a user account (argon2id password)")
    sp.add_argument("--tenant", required=True)
    sp.add_argument("--username", required=True, help="unique across tenants, e.g. room-1@x.com")
    sp.add_argument("--display-name", help="shown on the verification page")
    password_args(sp)
    sp = users.add("list", cmd_users_list, "list a tenant's user accounts", json=True)
    sp.add_argument("--tenant", required=True)
    sp = users.add("disable", cmd_users_disable, "disable an account and sign out its devices")
    sp.add_argument("--tenant", required=True)
    sp.add_argument("--username", required=True)
    sp.add_argument("--enable", action="store_true", help="enable the account again instead")
    sp = users.add("reset-password", cmd_users_reset_password, "set a new password")
    sp.add_argument("--tenant", required=True)
    sp.add_argument("--username", required=True)
    password_args(sp)
