"""What every command group shares: the store session, the parser helper, tables, JSON, progress
bars, error sentences, passwords."""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from collections.abc import Callable, Coroutine, Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

from server.config import Settings
from server.provisioning.codes import CodeVault, load_key
from server.registry.service import Principal, Registry
from server.store.open import make_store

Command = Callable[[Settings, argparse.Namespace], Coroutine[Any, Any, int]]


class Commands:
    """Adds commands under one `add_subparsers()`; each takes the global options (the `common`
    parent: --config, -q) after its name too, and `json=True` adds --json."""

    def __init__(self, sub: Any, common: argparse.ArgumentParser, formatter: Any = None) -> None:
        self._sub = sub
        self._common = common
        self._formatter = formatter or argparse.HelpFormatter

    def add(
        self, name: str, fn: Command, help: str, *, json: bool = False
    ) -> argparse.ArgumentParser:
        sp: argparse.ArgumentParser = self._sub.add_parser(
            name,
            help=help,
            parents=[self._common],
            description=help,
            formatter_class=self._formatter,
        )
        sp.set_defaults(fn=fn, json_ok=json)
        if json:
            # SUPPRESS: not given here leaves what `imprint --json ...` set before the command.
            sp.add_argument(
                "--json", action="store_true", default=argparse.SUPPRESS, help="print JSON"
            )
        return sp

    def group(self, name: str, help: str) -> Commands:
        """A command group (`imprint NAME ACTION ...`)."""
        actions = self._sub.add_parser(
            name,
            help=help,
            parents=[self._common],
            description=help,
            formatter_class=self._formatter,
        ).add_subparsers(dest="sub", required=True, metavar="ACTION")
        return Commands(actions, self._common, self._formatter)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[("" if v is None else str(v)) for v in r] for r in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]

    def line(vals: Sequence[str]) -> str:
        return "  ".join(v.ljust(w) for v, w in zip(vals, widths, strict=True)).rstrip()

    out = [line(headers), line(["-" * w for w in widths])]
    out += [line(r) for r in cells]
    return "\n".join(out)


def print_json(value: Any) -> None:
    print(json.dumps(value))


def note(a: argparse.Namespace, message: str) -> None:
    """An informational line on stderr; -q silences it (errors are never silenced)."""
    if not getattr(a, "quiet", False):
        print(message, file=sys.stderr)


@contextmanager
def progress_bar(a: argparse.Namespace, label: str) -> Iterator[Callable[[int, int], None] | None]:
    """A rich progress bar on stderr while stdout is a terminal (and not -q); None when piped,
    so scripts and logs get no control characters."""
    if getattr(a, "quiet", False) or not sys.stdout.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        console=Console(stderr=True),
    ) as bar:
        task = bar.add_task(label, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


def describe(detail: object) -> str:
    """One error detail as a sentence part: "row 3, field MAC ID: value 'bad': not a MAC"."""
    if not isinstance(detail, dict):
        return str(detail)
    where: list[str] = []
    if detail.get("row") is not None:
        where.append(f"row {detail['row']}")
    if detail.get("index") is not None:
        where.append(f"item {int(detail['index']) + 1}")
    field = detail.get("field") or detail.get("column")
    if field:
        where.append(f"field {field}")
    parts = [", ".join(where)] if where else []
    if "value" in detail:
        parts.append(f"value {detail['value']!r}")
    parts.append(str(detail.get("message", "")).strip() or "invalid")
    return ": ".join(parts)


def no_store_message(settings: Settings) -> str:
    config = f" --config {settings.config_file}" if settings.config_file else ""
    return (
        f"no store at {settings.store.path}: run 'imprint db init{config}' "
        "(or start 'imprint serve')"
    )


class _KeyFileVault(CodeVault):
    """The code key, read from its file on first use and never created: commands that touch no
    code (tenants list, ...) work without it, and a missing one is named, not silently remade."""

    def __init__(self, path: Path) -> None:  # noqa: D107 - the key is derived on first use
        self._path = path
        self._loaded = False

    def _load(self) -> None:
        if self._loaded:
            return
        try:
            secret = load_key(self._path)
        except FileNotFoundError:
            raise UsageError(
                f"the code key file {self._path} is missing: restore it from a backup (codes "
                "issued with it cannot be shown or checked without it), or run 'imprint db init' "
                "to make a new one"
            ) from None
        except ValueError as e:
            raise UsageError(str(e)) from None
        super().__init__(secret)
        self._loaded = True

    def digest(self, mac: str, code: str) -> bytes:
        self._load()
        return super().digest(mac, code)

    def matches(self, mac: str, code: str, digest: bytes) -> bool:
        self._load()
        return super().matches(mac, code, digest)

    def seal(self, mac: str, code: str) -> bytes:
        self._load()
        return super().seal(mac, code)

    def unseal(self, mac: str, sealed: bytes) -> str:
        self._load()
        return super().unseal(mac, sealed)


class Cli:
    """Opens the existing store for one admin command and closes it afterwards; a missing store
    is a usage error naming `imprint db init` (only it and `serve` create one)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = make_store(settings.store)
        self.who = Principal(actor=f"cli:{_user()}", role="operator")

    async def __aenter__(self) -> Registry:
        if self.settings.store.url is None and not self.settings.store.path.is_file():
            raise UsageError(no_store_message(self.settings))
        await self.store.open()
        s = self.settings
        return Registry(
            self.store,
            _KeyFileVault(s.codes_key_file),
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


def bounded_int(lo: int, hi: int | None = None) -> Callable[[str], int]:
    """An argparse `type`: an integer in lo..hi, else a usage error (exit 2) that says the range."""

    def parse(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if n < lo or (hi is not None and n > hi):
            span = f"between {lo} and {hi}" if hi is not None else f"{lo} or more"
            raise argparse.ArgumentTypeError(f"{n} is out of range: give a number {span}")
        return n

    return parse
