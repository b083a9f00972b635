"""`imprint`: the server and its admin command line (parse, then dispatch).

Admin commands work on the store directly, through the same Registry as the REST API (audited as
`cli:<user>`); a running server picks their changes up within [store] poll_interval_s.
Exit codes: 0 success, 1 the operation was refused (not found, conflict, bad rows), 2 usage or
configuration error.

One module per command group, each with its handlers and a `register(commands)`:
ops (serve, check-config, discovered, db), tenants, devices, codes, tokens, admins, users.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Sequence

from server import __version__
from server.cli import admins, codes, devices, leases, ops, tenants, tokens, users
from server.cli.common import Command, Commands, UsageError
from server.config import ConfigError, load_settings
from server.core.logs import setup_logging
from server.store.base import StoreError

# In the order `imprint --help` lists them.
REGISTER: tuple[Callable[[Commands], None], ...] = (
    ops.register_server,
    tenants.register,
    devices.register,
    codes.register,
    ops.register_discovered,
    leases.register,
    tokens.register,
    admins.register,
    users.register,
    ops.register_db,
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="imprint", description="Imprint: network boot-time provisioning server"
    )
    p.add_argument("--version", action="version", version=f"imprint {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        metavar="FILE",
        help="TOML config file (IMPRINT_<SECTION>__<KEY> env vars override it)",
    )
    commands = Commands(p.add_subparsers(dest="command", required=True, metavar="COMMAND"), common)
    for register in REGISTER:
        register(commands)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings(args.config)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    setup_logging(settings.log.level if args.command == "serve" else "WARNING", settings.log.format)
    fn: Command = args.fn
    try:
        return asyncio.run(fn(settings, args))
    except StoreError as e:
        print(f"error: {e}", file=sys.stderr)
        for d in getattr(e, "details", [])[:50]:
            print(f"  {d}", file=sys.stderr)
        return 1
    except (ConfigError, UsageError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except FileNotFoundError as e:
        print(f"error: {e.filename}: no such file", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
