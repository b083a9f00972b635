"""Running and operating the server: `imprint serve`, `check-config`, `config-reference`,
`discovered`, `trace`, `db backup`."""

from __future__ import annotations

import argparse
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

from server.cli.common import Cli, Commands, UsageError, bounded_int, note, print_json, table
from server.config import FINGERPRINT_STAND_IN, ConfigError, Settings
from server.registry.model import iso


async def cmd_serve(s: Settings, a: argparse.Namespace) -> int:
    from server.app import serve

    await serve(s, dhcp_probe=not getattr(a, "no_dhcp_probe", False))
    return 0


async def cmd_check_config(s: Settings, a: argparse.Namespace) -> int:
    from server.app import dhcp_server_ip, endpoint_for, public_url
    from server.dhcp.profiles import ProfileTable, describe_profiles
    from server.hostcheck import check_host, configured_addresses, configured_interfaces

    if not a.no_host_checks:
        check_host(s)  # what `imprint serve` checks first, with the same message
    url = public_url(s)
    report: list[str] = []
    shown: list[str] = []  # --profiles
    fingerprint = FINGERPRINT_STAND_IN if s.tls.enabled else ""
    if s.dhcp.enabled:
        several = len(s.dhcp.served_links()) > 1
        for link in s.dhcp.served_links():
            on = f" on {link.interface} ({link.mode})" if several else ""
            # The very build `imprint serve` runs: the settings' subnets and profiles, the table.
            try:
                server_ip: str | None = dhcp_server_ip(s, link)
            except ConfigError as e:
                if link.interface is None:
                    raise  # neither server_ip nor an interface: serve refuses this on any host
                # The interface's address is this host's state, not the file's: serve reads it
                # again when it starts (on the host it runs on).
                server_ip = None
                report.append(f"note: {e} (here; `imprint serve` reads it again when it starts)")
            config, profiles = s.dhcp.build(endpoint_for(url, fingerprint), server_ip, link)
            for sub in config.subnets:
                report.append(
                    f"DHCP{on} subnet {sub.network}: pool {sub.pool_first}-{sub.pool_last}, "
                    f"router {sub.router or 'none'}, "
                    f"dns {', '.join(str(d) for d in sub.dns) or 'none'}, lease {sub.lease_time} s"
                )
            if a.profiles:
                shown += [
                    f"DHCP options{on} sent per profile (server id {config.server_ip}):",
                    *describe_profiles(profiles),
                ]
        names = ", ".join(e.profile.name for e in profiles.entries) or "none"
        report.append(f"DHCP profiles (tried in order): {names}")
        report += [f"warning: {w}" for w in profiles.warnings]
    elif a.profiles:
        # DHCP is off, so serve renders nothing: what the profiles would send is shown, and a
        # profile that does not render is a note here (serve would refuse it once enabled).
        try:
            table = ProfileTable(
                s.dhcp.profiles,
                endpoint_for(url, fingerprint),
                s.dhcp.server_ip or "0.0.0.0",
                builtins=s.dhcp.builtin_profiles,
            )
        except ValueError as e:
            shown.append(f"note: DHCP is off; with it on, serve would refuse this: {e}")
        else:
            shown += [
                f"DHCP is off; with it on, these options would be sent per profile "
                f"(server id {s.dhcp.server_ip or '0.0.0.0'}):",
                *describe_profiles(table),
                *(f"warning: {w}" for w in table.warnings),
            ]
    if shown and fingerprint:
        shown.append(
            "({fingerprint} is shown as 64 zeros: the certificate's SHA-256 is put in when "
            "`imprint serve` starts)"
        )
    modes = ", ".join(
        f"{lk.interface}: {lk.mode}" if s.dhcp.links else lk.mode for lk in s.dhcp.served_links()
    )
    # IMPRINT_CONFIG names the file; the other IMPRINT_* variables override its settings.
    overrides = sorted(
        k.upper()
        for k in os.environ
        if k.upper().startswith("IMPRINT_") and k.upper() != "IMPRINT_CONFIG"
    )
    env = f", with {', '.join(overrides)} from the environment" if overrides else ""
    # The CLI always names a file here (it refuses to run check-config without one).
    print(f"configuration OK: {s.config_file}{env}")
    print(
        f"store {s.store.path}, HTTP {s.http.host}:{s.http.port} "
        f"({'TLS' if s.tls.enabled else 'plain HTTP'}), public URL {url}, "
        f"DHCP {'on (' + modes + ')' if s.dhcp.enabled else 'off'}, "
        f"mDNS {'on' if s.mdns.enabled else 'off'}"
    )
    if a.no_host_checks:
        print(
            "this host was not checked (--no-host-checks): interfaces and addresses may not exist"
        )
    else:
        named = [f"{n} ({k})" for k, n in configured_interfaces(s)]
        named += [f"{h} ({k})" for k, h in configured_addresses(s)]
        print(f"this host has every interface and address named: {', '.join(named)}")
    for line in report + shown:
        print(line)
    return 0


async def cmd_config_reference(s: Settings, a: argparse.Namespace) -> int:
    from server.config_reference import render_reference

    sys.stdout.write(render_reference())
    return 0


async def cmd_discovered(s: Settings, a: argparse.Namespace) -> int:
    cli = Cli(s)
    async with cli as reg:
        rows = await reg.store.list_discovered(a.limit)

    def when(t: float) -> str:
        return iso(datetime.fromtimestamp(t, UTC))

    if a.json:
        print_json(
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
        return 0
    print(
        table(
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


async def cmd_trace(s: Settings, a: argparse.Namespace) -> int:
    """Add a MAC to the DHCP trace list (or take it off); a running server follows the list
    within a second. No MAC: show the list."""
    from server.core.mac import MacError, normalize_mac
    from server.dhcp.trace import read_trace, trace_file, write_trace

    path = trace_file(s.state_dir)
    macs, bad = read_trace(path)
    for line in bad:
        print(
            f"warning: {path}: {line} (skipped; it is dropped when the list is next written)",
            file=sys.stderr,
        )
    if a.mac is None:
        if a.off:
            print("error: --off needs the MAC to stop tracing", file=sys.stderr)
            return 2
        for mac in sorted(macs):
            print(mac)
        print(f"{len(macs)} MAC(s) traced (list: {path})", file=sys.stderr)
        return 0
    try:
        mac = normalize_mac(a.mac)
    except MacError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    new = macs - {mac} if a.off else macs | {mac}
    if new != macs or bad:
        try:
            write_trace(path, new)
        except OSError as e:
            print(f"error: cannot write the trace list {path}: {e}", file=sys.stderr)
            return 1
    if a.off:
        print(f"{mac}: not traced" + ("" if mac in macs else " (it was not)"))
    else:
        print(
            f"{mac}: traced; a running server logs each of its DHCP decisions at INFO "
            f"(stop with `imprint trace {mac} --off`)"
        )
    return 0


async def cmd_db_backup(s: Settings, a: argparse.Namespace) -> int:
    from server.store.backup import BackupError, online_backup

    if s.store.url is not None:
        raise UsageError(
            "db backup copies the SQLite store; this one is PostgreSQL ([store] url): back it "
            "up with pg_dump (and keep a copy of the code key file "
            f"{s.codes_key_file})"
        )

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
    note(
        a,
        f"the code key file {s.codes_key_file} is not in the database: keep a copy of it too "
        "(without it current codes cannot be shown or checked)",
    )
    return 0


async def cmd_db_init(s: Settings, a: argparse.Namespace) -> int:
    """Create the store (0640 in a 0750 folder) and the code key (0600), or bring an existing
    store's schema up to date; the one command besides `serve` that creates them."""
    from server.provisioning.codes import load_or_create_key
    from server.store.sqlite import SqliteStore

    if s.store.url is not None:
        return await _db_init_pg(s, a)
    path = s.store.path
    existed, key_existed = path.is_file(), s.codes_key_file.is_file()
    store = SqliteStore(path, s.store.busy_timeout_ms)
    await store.open()
    await store.close()
    load_or_create_key(s.codes_key_file)
    made = [p for p, was in ((path, existed), (s.codes_key_file, key_existed)) if not was]
    owner = _give_to_state_dir_owner(s.state_dir, made)
    if existed:
        print(f"store {path} exists; its schema is up to date")
    else:
        print(f"created the store {path} (mode 0640)")
    if not key_existed:
        print(f"created the code key {s.codes_key_file} (mode 0600): back it up with the store")
    if owner:
        note(a, f"gave {', '.join(str(p) for p in made)} to {owner}, the owner of {s.state_dir}")
    return 0


async def _db_init_pg(s: Settings, a: argparse.Namespace) -> int:
    """PostgreSQL: the database exists already (an operator creates it); bring its schema up
    to date and make the code key, which stays a file beside [store] path."""
    from server.provisioning.codes import load_or_create_key
    from server.store.open import make_store

    key_existed = s.codes_key_file.is_file()
    store = make_store(s.store)
    await store.open()
    try:
        version = await store.schema_version()
    finally:
        await store.close()
    load_or_create_key(s.codes_key_file)
    _report_migrations(store.location, store.applied, version)
    if not key_existed:
        print(f"created the code key {s.codes_key_file} (mode 0600): back it up with the store")
        owner = _give_to_state_dir_owner(s.state_dir, [s.codes_key_file])
        if owner:
            note(a, f"gave {s.codes_key_file} to {owner}, the owner of {s.state_dir}")
    return 0


def _report_migrations(where: str, applied: list[str], version: int) -> None:
    if applied:
        print(f"store {where}: applied {', '.join(applied)}; schema version {version}")
    else:
        print(f"store {where}: schema version {version}, up to date")


async def cmd_db_migrate(s: Settings, a: argparse.Namespace) -> int:
    """Apply the pending migrations of an existing store (SQLite or PostgreSQL) and say which;
    `serve` applies them at start too. Never creates a store or a key (that is `db init`)."""
    from server.cli.common import no_store_message
    from server.store.open import make_store

    if s.store.url is None and not s.store.path.is_file():
        raise UsageError(no_store_message(s))
    store = make_store(s.store)
    await store.open()
    try:
        version = await store.schema_version()
    finally:
        await store.close()
    _report_migrations(store.location, store.applied, version)
    return 0


def _give_to_state_dir_owner(state_dir: Path, made: list[Path]) -> str:
    """Run as root in a state folder the service user owns (e.g. /var/lib/imprint), files root
    creates there would lock the service out: they go to the folder's owner instead."""
    if not made or not hasattr(os, "geteuid") or os.geteuid() != 0:
        return ""
    st = state_dir.stat()
    if st.st_uid == 0:
        return ""
    for p in made:
        os.chown(p, st.st_uid, st.st_gid)
    try:
        import pwd

        return pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        return f"uid {st.st_uid}"


def register_server(commands: Commands) -> None:
    """`serve` and `check-config`."""
    sp = commands.add("serve", cmd_serve, "run the server (HTTP API, DHCP and mDNS responders)")
    sp.add_argument(
        "--no-dhcp-probe",
        action="store_true",
        help="full mode: start even if another DHCP server answers on the interface",
    )
    sp = commands.add(
        "check-config",
        cmd_check_config,
        "validate the configuration, and that this host has its interfaces and listen "
        "addresses, then exit (2 on error)",
    )
    sp.add_argument(
        "--profiles",
        action="store_true",
        help="also show the DHCP options each vendor profile sends (code, name, hex, decoded)",
    )
    sp.add_argument(
        "--no-host-checks",
        action="store_true",
        help="check the file only, not that this host has its interfaces and addresses "
        "(for a config written for another host)",
    )
    commands.add(
        "config-reference",
        cmd_config_reference,
        "print the configuration reference (every key, type, default, environment variable) "
        "as Markdown, as in docs/configuration.md",
    )


def register_discovered(commands: Commands) -> None:
    sp = commands.add(
        "discovered",
        cmd_discovered,
        "MACs seen on the network (DHCP, mDNS) but not registered",
        json=True,
    )
    sp.add_argument("--limit", type=bounded_int(1, 10000), default=1000, help="1-10000 (1000)")
    sp = commands.add(
        "trace",
        cmd_trace,
        "log one MAC's DHCP decisions at INFO on the running server (no MAC: list them)",
    )
    sp.add_argument("mac", nargs="?", help="the MAC to trace, e.g. aa:bb:cc:dd:ee:ff")
    sp.add_argument("--off", action="store_true", help="stop tracing the MAC")


def register_db(commands: Commands) -> None:
    db = commands.group("db", "the store (SQLite, or PostgreSQL with [store] url)")
    db.add(
        "init",
        cmd_db_init,
        "create the store and the code key (or update an existing store's schema)",
    )
    db.add(
        "migrate",
        cmd_db_migrate,
        "apply the pending schema migrations to the existing store and say which",
    )
    sp = db.add("backup", cmd_db_backup, "online, consistent copy of the store (server may run)")
    sp.add_argument("file", help="the backup file to write (replaced atomically)")
