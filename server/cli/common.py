"""What every command group shares: the store session, the parser helper, tables, passwords."""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Callable, Coroutine, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from server.config import Settings
from server.provisioning.codes import CodeVault, load_or_create_key
from server.registry.service import Principal, Registry
from server.store.sqlite import SqliteStore

Command = Callable[[Settings, argparse.Namespace], Coroutine[Any, Any, int]]


class Commands:
    """Adds commands under one `add_subparsers()`; each takes --config (the `common` parent)."""

    def __init__(self, sub: Any, common: argparse.ArgumentParser) -> None:
        self._sub = sub
        self._common = common

    def add(self, name: str, fn: Command, help: str) -> argparse.ArgumentParser:
        sp: argparse.ArgumentParser = self._sub.add_parser(
            name, help=help, parents=[self._common], description=help
        )
        sp.set_defaults(fn=fn)
        return sp

    def group(self, name: str, help: str) -> Commands:
        """A command group (`imprint NAME ACTION ...`)."""
        actions = self._sub.add_parser(name, help=help).add_subparsers(
            dest="sub", required=True, metavar="ACTION"
        )
        return Commands(actions, self._common)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[("" if v is None else str(v)) for v in r] for r in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]

    def line(vals: Sequence[str]) -> str:
        return "  ".join(v.ljust(w) for v, w in zip(vals, widths, strict=True)).rstrip()

    out = [line(headers), line(["-" * w for w in widths])]
    out += [line(r) for r in cells]
    return "\n".join(out)


class Cli:
    """Opens the store for one admin command and closes it afterwards."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = SqliteStore(settings.store.path, settings.store.busy_timeout_ms)
        self.who = Principal(actor=f"cli:{_user()}", role="operator")

    async def __aenter__(self) -> Registry:
        await self.store.open()
        s = self.settings
        return Registry(
            self.store,
            CodeVault(load_or_create_key(s.codes_key_file)),
            code_ttl=timedelta(hours=s.codes.ttl_hours),
            max_attempts=s.codes.max_attempts,
        )

    async def __aexit__(self, *exc: object) -> None:
        await self.store.close()


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def password_args(sp: argparse.ArgumentParser) -> None:
    group = sp.add_mutually_exclusive_group()
    group.add_argument(
        "--password", help="the password (visible in the process list: prefer a file)"
    )
    group.add_argument("--password-file", metavar="F", help="read the password from F ('-': stdin)")


class UsageError(Exception):
    """The command line cannot be carried out as given; main prints it and exits 2."""


def read_password(a: argparse.Namespace) -> str:
    """--password, --password-file (first line), or a prompt on a terminal."""
    if a.password is not None:
        return str(a.password)
    if a.password_file:
        path = str(a.password_file)
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
        return text.splitlines()[0] if text else ""
    if sys.stdin.isatty():
        first = getpass.getpass("password: ")
        if getpass.getpass("again: ") != first:
            raise UsageError("the passwords differ")
        return first
    raise UsageError("give --password P or --password-file F ('-' for stdin)")
