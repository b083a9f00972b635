"""`imprint`: the server and its admin command line (parse, then dispatch).

Admin commands work on the store directly, through the same Registry as the REST API (audited as
`cli:<user>`); a running server picks their changes up within [store] poll_interval_s.
Exit codes: 0 success, 1 the operation was refused (not found, conflict, bad rows), 2 usage or
configuration error (including a missing store or config file).

The global options (--config, -q, --json) are accepted before the command and after it: the
top-level parser has them with real defaults, each command's parser with SUPPRESS defaults, so a
value given after the command wins and one not given there keeps the one given before.

One module per command group, each with its handlers and a `register(commands)`:
ops (serve, check-config, discovered, trace, db), tenants, devices, codes, audit, tokens, admins,
users.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import shtab
from rich_argparse import RawDescriptionRichHelpFormatter, RichHelpFormatter

from server import __version__
from server.cli import admins, audit, codes, devices, leases, ops, tenants, tokens, users
from server.cli.common import Command, Commands, UsageError, describe
from server.config import ConfigError, load_settings
from server.core.logs import setup_logging
from server.store.base import StoreError

DEFAULT_CONFIG = Path("/etc/imprint/imprint.toml")
CONFIG_ENV = "IMPRINT_CONFIG"
# Commands that describe Imprint itself, not a site: they run without a configuration file.
NEEDS_NO_CONFIG = frozenset({"config-reference"})

# In the order `imprint --help` lists them.
REGISTER: tuple[Callable[[Commands], None], ...] = (
    ops.register_server,
    tenants.register,
    devices.register,
    codes.register,
    audit.register,
    ops.register_discovered,
    leases.register,
    tokens.register,
    admins.register,
    users.register,
    ops.register_db,
)

EPILOG = f"""\
Global options go before or after the command: `imprint --config F tenants list` and
`imprint tenants list --config F` are the same.

Configuration: --config FILE, else ${CONFIG_ENV}, else {DEFAULT_CONFIG} if it exists;
IMPRINT_<SECTION>__<KEY> environment variables override single keys.
Only `imprint db init` and `imprint serve` create the store; every other command needs it.

Exit codes: 0 success; 1 refused (not found, conflict, bad rows: nothing was changed);
2 usage or configuration error (bad option, no config file, no store).

Shell completion: `imprint completion bash > /etc/bash_completion.d/imprint` (or zsh, tcsh).
"""


def _global_options(p: argparse.ArgumentParser, suppress: bool) -> None:
    config = p.add_argument(
        "--config",
        metavar="FILE",
        default=argparse.SUPPRESS if suppress else None,
        help=(
            f"TOML config file (default: ${CONFIG_ENV}, else {DEFAULT_CONFIG}); "
            "IMPRINT_<SECTION>__<KEY> env vars override it"
        ),
    )
    config.complete = shtab.FILE  # type: ignore[attr-defined]
    p.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=argparse.SUPPRESS if suppress else False,
        help="no notes or progress bars on stderr (errors still)",
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="imprint",
        description="Imprint: network boot-time provisioning server",
        epilog=EPILOG,
        formatter_class=RawDescriptionRichHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"imprint {__version__}")
    _global_options(p, suppress=False)
    p.add_argument(
        "--json", action="store_true", help="JSON output (list and show commands, any position)"
    )
    common = argparse.ArgumentParser(add_help=False)
    _global_options(common, suppress=True)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands = Commands(sub, common, RichHelpFormatter)
    for register in REGISTER:
        register(commands)
    comp = sub.add_parser(
        "completion",
        help="print a shell completion script (bash, zsh, tcsh)",
        description="print a shell completion script, e.g. "
        "`imprint completion bash > /etc/bash_completion.d/imprint`",
        formatter_class=RichHelpFormatter,
    )
    comp.add_argument("shell", choices=["bash", "zsh", "tcsh"])
    return p


def config_path(given: str | None) -> str:
    """--config, else $IMPRINT_CONFIG, else /etc/imprint/imprint.toml if it exists."""
    if given:
        return given
    env = os.environ.get(CONFIG_ENV)
    if env:
        return env
    if DEFAULT_CONFIG.is_file():
        return str(DEFAULT_CONFIG)
    raise UsageError(
        f"no configuration file: tried --config (not given), ${CONFIG_ENV} (not set) and "
        f"{DEFAULT_CONFIG} (does not exist); give --config FILE (e.g. configs/lab.toml)"
    )


def _command_name(args: argparse.Namespace) -> str:
    return " ".join(str(x) for x in (args.command, getattr(args, "sub", None)) if x)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "completion":
        print(shtab.complete(parser, shell=args.shell))
        return 0
    if args.json and not getattr(args, "json_ok", False):
        parser.error(f"--json: 'imprint {_command_name(args)}' has no JSON output")
    try:
        if args.command in NEEDS_NO_CONFIG and not (args.config or os.environ.get(CONFIG_ENV)):
            settings = load_settings(None)
        else:
            settings = load_settings(config_path(args.config))
    except (ConfigError, UsageError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    setup_logging(settings.log.level if args.command == "serve" else "WARNING", settings.log.format)
    fn: Command = args.fn
    try:
        return asyncio.run(fn(settings, args))
    except StoreError as e:
        print(f"error: {e}", file=sys.stderr)
        details = getattr(e, "details", [])
        if (
            len(details) == 1
            and isinstance(details[0], dict)
            and (details[0].get("message") == str(e))
        ):
            details = []  # the sentence above says it all
        for d in details[:50]:
            print(f"  {describe(d)}", file=sys.stderr)
        if len(details) > 50:
            print(f"  ... and {len(details) - 50} more", file=sys.stderr)
        return 1
    except (ConfigError, UsageError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except FileNotFoundError as e:
        print(f"error: {e.filename}: no such file", file=sys.stderr)
        return 2
    except sqlite3.Error as e:
        print(f"error: the store {settings.store.path} cannot be used: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
