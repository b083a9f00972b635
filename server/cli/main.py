"""`imprint`: the server and its admin command line.

Admin commands work on the store directly, through the same Registry as the REST API (audited as
`cli:<user>`); a running server picks their changes up within [store] poll_interval_s.
Exit codes: 0 success, 1 the operation was refused (not found, conflict, bad rows), 2 usage or
configuration error.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import sys
from collections.abc import Callable, Coroutine, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from server import __version__
from server.admin.auth import AdminAuth
from server.admin.store import AdminStore
from server.config import FINGERPRINT_STAND_IN, ConfigError, Settings, load_settings
from server.core.logs import setup_logging
from server.oauth.service import UserAccounts
from server.oauth.store import OAuthStore
from server.provisioning.codes import CodeVault, load_or_create_key
from server.registry.csvio import CsvError, parse_upload, write_export
from server.registry.model import DeviceState
from server.registry.service import Principal, Registry, iso
from server.store.base import StoreError
from server.store.sqlite import SqliteStore


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
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


def _progress(done: int, total: int) -> None:
    if not sys.stderr.isatty():
        return
    width = 40
    filled = width * done // max(total, 1)
    sys.stderr.write(f"\r  storing [{'#' * filled}{'.' * (width - filled)}] {done}/{total}")
    if done >= total:
        sys.stderr.write("\n")
    sys.stderr.flush()


async def cmd_serve(s: Settings, a: argparse.Namespace) -> int:
    from server.app import serve

    await serve(s, dhcp_probe=not getattr(a, "no_dhcp_probe", False))
    return 0


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
        print(json.dumps([{"id": t.id, "name": t.name, "created_at": t.created_at} for t in ts]))
    else:
        print(_table(["ID", "NAME", "CREATED (UTC)"], [(t.id, t.name, t.created_at) for t in ts]))
    return 0


async def cmd_devices_add(s: Settings, a: argparse.Namespace) -> int:
    cli = Cli(s)
    async with cli as reg:
        d = await reg.add_device(cli.who, a.tenant, a.mac, a.location)
    print(f"registered {d.mac} in {d.tenant_id} ({d.state.value})")
    return 0


async def cmd_devices_list(s: Settings, a: argparse.Namespace) -> int:
    cli = Cli(s)
    async with cli as reg:
        count, devices = await reg.list_devices(cli.who, a.tenant, a.state, a.q, a.limit, a.offset)
    if a.json:
        print(
            json.dumps(
                {
                    "count": count,
                    "results": [
                        {
                            "mac": d.mac,
                            "device_id": d.device_id,
                            "location": d.location,
                            "state": d.state.value,
                            "code_expires_at": d.code_expires_at,
                            "updated_at": d.updated_at,
                        }
                        for d in devices
                    ],
                }
            )
        )
        return 0
    print(
        _table(
            ["MAC ID", "LOCATION", "STATE", "CODE EXPIRES (UTC)", "USER"],
            [
                (d.mac, d.location, d.state.value, d.code_expires_at, d.signed_in_user)
                for d in devices
            ],
        )
    )
    shown = f"{a.offset + 1}-{a.offset + len(devices)}" if devices else "0"
    print(f"\n{shown} of {count} device(s)")
    return 0


async def cmd_devices_import(s: Settings, a: argparse.Namespace) -> int:
    data = (
        await asyncio.to_thread(Path(a.file).read_bytes)
        if a.file != "-"
        else sys.stdin.buffer.read()
    )
    try:
        rows = parse_upload(data)
    except CsvError as e:
        print(f"error: {e}", file=sys.stderr)
        for r in e.errors:
            print(f"  row {r.row}, {r.column or 'file'}: {r.value!r}: {r.message}", file=sys.stderr)
        return 1
    cli = Cli(s)
    async with cli as reg:
        n = await reg.import_devices(cli.who, a.tenant, rows, dry_run=a.dry_run, progress=_progress)
    print(
        f"{'checked' if a.dry_run else 'imported'} {n} device(s){' (dry run: nothing stored)' if a.dry_run else ''}"
    )
    return 0


async def cmd_devices_export(s: Settings, a: argparse.Namespace) -> int:
    cli = Cli(s)
    async with cli as reg:
        rows = await reg.export(cli.who, a.tenant, a.state)
    text = write_export(rows)
    if a.output and a.output != "-":
        await asyncio.to_thread(Path(a.output).write_text, text, encoding="utf-8", newline="")
        print(f"wrote {len(rows)} device(s) to {a.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


async def cmd_devices_delete(s: Settings, a: argparse.Namespace) -> int:
    cli = Cli(s)
    async with cli as reg:
        await reg.delete_device(cli.who, a.tenant, a.mac)
    print(f"deleted {a.mac}")
    return 0


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
            _table(
                ["MAC ID", "CODE", "EXPIRES (UTC)"], [(c.mac, c.code, c.expires_at) for c in issued]
            )
        )
        print(
            f"\n{len(issued)} code(s) issued; export them with `imprint devices export --tenant {a.tenant}`"
        )
    return 0


async def cmd_tokens_create(s: Settings, a: argparse.Namespace) -> int:
    cli = Cli(s)
    async with cli as reg:
        token, row = await reg.create_token(cli.who.actor, a.role, a.tenant, a.name or "")
    # The token alone on stdout, so `TOKEN=$(imprint tokens create ...)` works; the rest on stderr.
    print(
        f"token {row.id} ({row.role}{' of ' + row.tenant_id if row.tenant_id else ''}) created; "
        "it is shown once, store it now:",
        file=sys.stderr,
    )
    print(token)
    return 0


async def cmd_tokens_list(s: Settings, a: argparse.Namespace) -> int:
    cli = Cli(s)
    async with cli as reg:
        rows = await reg.store.list_tokens()
    print(
        _table(
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


async def cmd_discovered(s: Settings, a: argparse.Namespace) -> int:
    cli = Cli(s)
    async with cli as reg:
        rows = await reg.store.list_discovered(a.limit)

    def when(t: float) -> str:
        return iso(datetime.fromtimestamp(t, UTC))

    if a.json:
        print(
            json.dumps(
                [
                    {
                        "mac": r.mac,
                        "vendor_class": r.vendor_class,
                        "interface": r.interface,
                        "source": r.source,
                        "first_seen": when(r.first_seen),
                        "last_seen": when(r.last_seen),
                        "count": r.count,
                    }
                    for r in rows
                ]
            )
        )
        return 0
    print(
        _table(
            [
                "MAC ID",
                "VENDOR CLASS",
                "INTERFACE",
                "VIA",
                "FIRST SEEN (UTC)",
                "LAST SEEN (UTC)",
                "SEEN",
            ],
            [
                (
                    r.mac,
                    r.vendor_class,
                    r.interface,
                    r.source,
                    when(r.first_seen),
                    when(r.last_seen),
                    r.count,
                )
                for r in rows
            ],
        )
    )
    print(
        f"\n{len(rows)} unregistered MAC(s) seen (as last saved by the server, every few seconds); "
        "register one with `imprint devices add --tenant T --mac M`"
    )
    return 0


def _admin_auth(cli: Cli) -> AdminAuth:
    return AdminAuth(AdminStore(cli.store))


def _read_password(a: argparse.Namespace) -> str | None:
    """--password, --password-file (first line), or a prompt on a terminal; None if none given."""
    if a.password is not None:
        return str(a.password)
    if a.password_file:
        path = str(a.password_file)
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
        return text.splitlines()[0] if text else ""
    if sys.stdin.isatty():
        first = getpass.getpass("password: ")
        if getpass.getpass("again: ") != first:
            print("error: the passwords differ", file=sys.stderr)
            return None
        return first
    print("error: give --password P or --password-file F ('-' for stdin)", file=sys.stderr)
    return None


async def cmd_admins_create(s: Settings, a: argparse.Namespace) -> int:
    password = _read_password(a)
    if password is None:
        return 2
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
    print(
        _table(
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


def _user_accounts(reg: Registry) -> UserAccounts:
    return UserAccounts(reg, OAuthStore(reg.store))


async def cmd_users_create(s: Settings, a: argparse.Namespace) -> int:
    password = _read_password(a)
    if password is None:
        return 2
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
        print(
            json.dumps(
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
        )
        return 0
    print(
        _table(
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
    password = _read_password(a)
    if password is None:
        return 2
    cli = Cli(s)
    async with cli as reg:
        await _user_accounts(reg).reset_password(cli.who, a.tenant, a.username, password)
    print(f"password of {a.username} changed")
    return 0


async def cmd_check_config(s: Settings, a: argparse.Namespace) -> int:
    from server.app import dhcp_server_ip, endpoint_for, public_url

    url = public_url(s)
    report: list[str] = []
    if s.dhcp.enabled:
        # The very build `imprint serve` runs: the settings' subnets and profiles, the table.
        try:
            server_ip: str | None = dhcp_server_ip(s)
        except ConfigError as e:
            server_ip = None
            report.append(f"note: {e} (here; `imprint serve` reads it again when it starts)")
        fingerprint = FINGERPRINT_STAND_IN if s.tls.enabled else ""
        config, table = s.dhcp.build(endpoint_for(url, fingerprint), server_ip)
        for sub in config.subnets:
            report.append(
                f"DHCP subnet {sub.network}: pool {sub.pool_first}-{sub.pool_last}, "
                f"router {sub.router or 'none'}, "
                f"dns {', '.join(str(d) for d in sub.dns) or 'none'}, lease {sub.lease_time} s"
            )
        names = ", ".join(e.profile.name for e in table.entries) or "none"
        report.append(f"DHCP profiles (tried in order): {names}")
        report += [f"warning: {w}" for w in table.warnings]
    print(
        f"configuration OK: store {s.store.path}, HTTP {s.http.host}:{s.http.port} "
        f"({'TLS' if s.tls.enabled else 'plain HTTP'}), public URL {url}, "
        f"DHCP {'on (' + s.dhcp.mode + ')' if s.dhcp.enabled else 'off'}, "
        f"mDNS {'on' if s.mdns.enabled else 'off'}"
    )
    for line in report:
        print(line)
    return 0


async def cmd_db_backup(s: Settings, a: argparse.Namespace) -> int:
    from server.store.backup import BackupError, online_backup

    try:
        info = await online_backup(
            s.store.path, Path(a.file), busy_timeout_ms=s.store.busy_timeout_ms
        )
    except BackupError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(
        f"backed up {s.store.path} to {info.path} ({info.size_bytes} bytes, {info.devices} "
        "device(s), integrity check ok)"
    )
    print(
        f"the code key file {s.codes_key_file} is not in the database: keep a copy of it too "
        "(without it current codes cannot be shown or checked)",
        file=sys.stderr,
    )
    return 0


Command = Callable[[Settings, argparse.Namespace], Coroutine[Any, Any, int]]


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
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(parent: Any, name: str, fn: Command, help: str) -> argparse.ArgumentParser:
        sp: argparse.ArgumentParser = parent.add_parser(
            name, help=help, parents=[common], description=help
        )
        sp.set_defaults(fn=fn)
        return sp

    sp = add(sub, "serve", cmd_serve, "run the server (HTTP API, DHCP and mDNS responders)")
    sp.add_argument(
        "--no-dhcp-probe",
        action="store_true",
        help="full mode: start even if another DHCP server answers on the interface",
    )
    add(
        sub,
        "check-config",
        cmd_check_config,
        "validate the configuration and exit (non-zero on error)",
    )

    tenants = sub.add_parser("tenants", help="manage tenants").add_subparsers(
        dest="sub", required=True, metavar="ACTION"
    )
    sp = add(tenants, "create", cmd_tenants_create, "create a tenant")
    sp.add_argument("--id", required=True, help="slug: a-z, 0-9, '-'")
    sp.add_argument("--name", required=True, help="display name shown on devices' sign-in page")
    sp = add(tenants, "list", cmd_tenants_list, "list tenants")
    sp.add_argument("--json", action="store_true")

    devices = sub.add_parser("devices", help="manage devices").add_subparsers(
        dest="sub", required=True, metavar="ACTION"
    )
    sp = add(devices, "add", cmd_devices_add, "register one device by MAC")
    sp.add_argument("--tenant", required=True)
    sp.add_argument("--mac", required=True)
    sp.add_argument("--location", default="")
    sp = add(devices, "list", cmd_devices_list, "list devices")
    sp.add_argument("--tenant", required=True)
    sp.add_argument("--state", choices=[st.value for st in DeviceState])
    sp.add_argument("--q", help="MAC or location contains")
    sp.add_argument("--limit", type=int, default=100)
    sp.add_argument("--offset", type=int, default=0)
    sp.add_argument("--json", action="store_true")
    sp = add(
        devices, "import", cmd_devices_import, "register devices from a CSV file (all rows or none)"
    )
    sp.add_argument("--tenant", required=True)
    sp.add_argument("--dry-run", action="store_true", help="validate only; store nothing")
    sp.add_argument(
        "file", help="CSV made from the template (header 'MAC ID,Location'); '-' for stdin"
    )
    sp = add(devices, "export", cmd_devices_export, "export devices with their current codes (CSV)")
    sp.add_argument("--tenant", required=True)
    sp.add_argument("--state", choices=[st.value for st in DeviceState])
    sp.add_argument("-o", "--output", help="file to write (default: stdout)")
    sp = add(devices, "delete", cmd_devices_delete, "delete a device")
    sp.add_argument("--tenant", required=True)
    sp.add_argument("--mac", required=True)

    codes = sub.add_parser("codes", help="verification codes").add_subparsers(
        dest="sub", required=True, metavar="ACTION"
    )
    sp = add(
        codes,
        "generate",
        cmd_codes_generate,
        "issue codes (valid [codes] ttl_hours; revokes previous ones)",
    )
    sp.add_argument("--tenant", required=True)
    sp.add_argument("--mac", action="append", help="a device's MAC (repeatable)")
    sp.add_argument("--all", action="store_true", help="every device awaiting activation")
    sp.add_argument("--json", action="store_true")

    sp = add(
        sub,
        "discovered",
        cmd_discovered,
        "MACs seen on the network (DHCP, mDNS) but not registered",
    )
    sp.add_argument("--limit", type=int, default=1000)
    sp.add_argument("--json", action="store_true")

    tokens = sub.add_parser("tokens", help="API tokens").add_subparsers(
        dest="sub", required=True, metavar="ACTION"
    )
    sp = add(tokens, "create", cmd_tokens_create, "create an API token; printed once on stdout")
    sp.add_argument("--role", required=True, choices=["operator", "admin"])
    sp.add_argument("--tenant", help="the tenant of an admin token")
    sp.add_argument("--name", help="what the token is for")
    add(tokens, "list", cmd_tokens_list, "list tokens (never their secrets)")
    sp = add(tokens, "revoke", cmd_tokens_revoke, "revoke a token")
    sp.add_argument("--id", required=True)
    admins = sub.add_parser("admins", help="admin web UI accounts").add_subparsers(
        dest="sub", required=True, metavar="ACTION"
    )
    sp = add(admins, "create", cmd_admins_create, "create an admin account for the web UI (/ui)")
    sp.add_argument("--username", required=True)
    group = sp.add_mutually_exclusive_group()
    group.add_argument(
        "--password", help="the password (visible in the process list: prefer a file)"
    )
    group.add_argument("--password-file", metavar="F", help="read the password from F ('-': stdin)")
    sp.add_argument("--role", required=True, choices=["operator", "admin"])
    sp.add_argument("--tenant", help="the tenant of an admin (tenant admin)")
    add(admins, "list", cmd_admins_list, "list admin accounts (never their passwords)")
    sp = add(admins, "disable", cmd_admins_disable, "disable an admin and end their sessions")
    sp.add_argument("--username", required=True)
    sp.add_argument("--enable", action="store_true", help="enable the account again instead")
    users = sub.add_parser(
        "users", help="tenant user accounts that devices are signed in as"
    ).add_subparsers(dest="sub", required=True, metavar="ACTION")

    def password_args(sp: argparse.ArgumentParser) -> None:
        group = sp.add_mutually_exclusive_group()
        group.add_argument(
            "--password", help="the password (visible in the process list: prefer a file)"
        )
        group.add_argument(
            "--password-file", metavar="F", help="read the password from F ('-': stdin)"
        )

    sp = add(users, "create", cmd_users_create, "create a user account (argon2id password)")
    sp.add_argument("--tenant", required=True)
    sp.add_argument("--username", required=True, help="unique across tenants, e.g. room-1@x.com")
    sp.add_argument("--display-name", help="shown on the verification page")
    password_args(sp)
    sp = add(users, "list", cmd_users_list, "list a tenant's user accounts")
    sp.add_argument("--tenant", required=True)
    sp.add_argument("--json", action="store_true")
    sp = add(users, "disable", cmd_users_disable, "disable an account and sign out its devices")
    sp.add_argument("--tenant", required=True)
    sp.add_argument("--username", required=True)
    sp.add_argument("--enable", action="store_true", help="enable the account again instead")
    sp = add(users, "reset-password", cmd_users_reset_password, "set a new password")
    sp.add_argument("--tenant", required=True)
    sp.add_argument("--username", required=True)
    password_args(sp)
    db = sub.add_parser("db", help="the SQLite store").add_subparsers(
        dest="sub", required=True, metavar="ACTION"
    )
    sp = add(db, "backup", cmd_db_backup, "online, consistent copy of the store (server may run)")
    sp.add_argument("file", help="the backup file to write (replaced atomically)")
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
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except FileNotFoundError as e:
        print(f"error: {e.filename}: no such file", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
