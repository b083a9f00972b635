"""`imprint codes generate`."""

from __future__ import annotations

import argparse
import json
import sys

from server.cli.common import Cli, Commands, table
from server.config import Settings


async def cmd_codes_generate(s: Settings, a: argparse.Namespace) -> int:
    if not a.mac and not a.all:
        print(
            "error: give --mac MAC (repeatable) or --all (every device awaiting activation)",
            file=sys.stderr,
        )
        return 2
    cli = Cli(s)
    async with cli as reg:
        issued = await reg.generate_codes(cli.who, a.tenant, a.mac or None, a.all)
    if a.json:
        print(
            json.dumps([{"mac": c.mac, "code": c.code, "expires_at": c.expires_at} for c in issued])
        )
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
    )
    sp.add_argument("--tenant", required=True)
    sp.add_argument("--mac", action="append", help="a device's MAC (repeatable)")
    sp.add_argument("--all", action="store_true", help="every device awaiting activation")
    sp.add_argument("--json", action="store_true")
