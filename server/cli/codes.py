"""`imprint codes generate`."""

from __future__ import annotations

import argparse

from server.cli.common import Cli, Commands, UsageError, print_json, progress_bar, table
from server.config import Settings


async def cmd_codes_generate(s: Settings, a: argparse.Namespace) -> int:
    if not a.mac and not a.all:
        raise UsageError("give --mac MAC (repeatable) or --all (every device awaiting activation)")
    cli = Cli(s)
    async with cli as reg:
        with progress_bar(a, "issuing codes") as progress:
            issued = await reg.generate_codes(
                cli.who, a.tenant, a.mac or None, a.all, progress=progress
            )
    if a.json:
        print_json([{"mac": c.mac, "code": c.code, "expires_at": c.expires_at} for c in issued])
    else:
        print(
            table(
                ["MAC ID", "CODE", "EXPIRES (UTC)"], [(c.mac, c.code, c.expires_at) for c in issued]
            )
        )
        print(
            f"\n{len(issued)} code(s) issued; export them with `imprint devices export --tenant {a.tenant}`"
        )
    return 0


def register(commands: Commands) -> None:
    codes = commands.group("codes", "verification codes")
    sp = codes.add(
        "generate",
        cmd_codes_generate,
        "issue codes (valid [codes] ttl_hours; revokes previous ones)",
        json=True,
    )
    sp.add_argument("--tenant", required=True)
    sp.add_argument("--mac", action="append", help="a device's MAC (repeatable)")
    sp.add_argument("--all", action="store_true", help="every device awaiting activation")
