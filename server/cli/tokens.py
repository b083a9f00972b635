"""`imprint tokens create|list|revoke`: REST API tokens."""

from __future__ import annotations

import argparse

from server.cli.common import Cli, Commands, note, print_json, table
from server.config import Settings


async def cmd_tokens_create(s: Settings, a: argparse.Namespace) -> int:
    cli = Cli(s)
    async with cli as reg:
        token, row = await reg.create_token(cli.who.actor, a.role, a.tenant, a.name or "")
    # The token alone on stdout, so `TOKEN=$(imprint tokens create ...)` works; the rest on stderr.
    note(
        a,
        f"token {row.id} ({row.role}{' of ' + row.tenant_id if row.tenant_id else ''}) created; "
        "it is shown once, store it now:",
    )
    print(token)
    return 0


async def cmd_tokens_list(s: Settings, a: argparse.Namespace) -> int:
    cli = Cli(s)
    async with cli as reg:
        rows = await reg.store.list_tokens()
    if a.json:
        print_json(
            [
                {
                    "id": r.id,
                    "role": r.role,
                    "tenant": r.tenant_id,
                    "name": r.name,
                    "created_at": r.created_at,
                    "revoked_at": r.revoked_at,
                }
                for r in rows
            ]
        )
        return 0
    print(
        table(
            ["ID", "ROLE", "TENANT", "NAME", "CREATED (UTC)", "REVOKED (UTC)"],
            [(r.id, r.role, r.tenant_id, r.name, r.created_at, r.revoked_at) for r in rows],
        )
    )
    return 0


async def cmd_tokens_revoke(s: Settings, a: argparse.Namespace) -> int:
    cli = Cli(s)
    async with cli as reg:
        await reg.revoke_token(cli.who.actor, a.id)
    print(f"revoked token {a.id}")
    return 0


def register(commands: Commands) -> None:
    tokens = commands.group("tokens", "API tokens")
    sp = tokens.add("create", cmd_tokens_create, "create an API token; printed once on stdout")
    sp.add_argument("--role", required=True, choices=["operator", "admin"])
    sp.add_argument("--tenant", help="the tenant of an admin token")
    sp.add_argument("--name", help="what the token is for")
    tokens.add("list", cmd_tokens_list, "list tokens (never their secrets)", json=True)
    sp = tokens.add("revoke", cmd_tokens_revoke, "revoke a token")
    sp.add_argument("--id", required=True)
