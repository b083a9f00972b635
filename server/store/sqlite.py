"""SQLite store: connections, transactions, migrations, and the reads not yet moved out.

A capability's own statements live in its store module (server/registry/store.py,
server/provisioning/store.py, server/oauth/store.py, server/admin/store.py); its writes take
the `Tx` of one `transaction(now)`.

WAL, busy_timeout, foreign keys on, numbered migrations applied at start. Writes go through one
writer connection, one `BEGIN IMMEDIATE` transaction each, serialised by an asyncio lock; reads
use a second connection (WAL lets them run beside a writer).
"""

from __future__ import annotations

import asyncio
import importlib.resources
import json
import logging
import os
import sqlite3
import stat
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosqlite

from server.dhcp.pool import Lease, LeaseState
from server.registry.discovered import SeenDevice
from server.registry.model import Device, DeviceState, Tenant
from server.store.base import Conflict

log = logging.getLogger("imprint.store")

# A new state directory and database file: the database holds hashed codes and tokens, secrets
# kept as hashes and the audit log: the owner writes it, its group (backups) may read it, no one
# else (SQLite gives the -wal and -shm files the database file's mode).
STATE_DIR_MODE = 0o750
DB_FILE_MODE = 0o640


def prepare_db_file(path: Path) -> None:
    """Create `path`'s directory (0750) and an empty database file (0640) if missing; warn
    when an existing one can be read by others, naming the command that fixes it."""
    if not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=STATE_DIR_MODE)
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, DB_FILE_MODE))
    except FileExistsError:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o007:
            log.warning(
                "store: %s can be read or written by any user (mode %04o); it holds the "
                "registry, hashed codes and tokens and the audit log: chmod 640 %s",
                path, mode, path,
            )  # fmt: skip


_DEVICE_COLS = (
    "d.mac, d.tenant_id, d.location, d.state, d.created_at, d.updated_at, d.device_id, "
    "c.expires_at, d.signed_in_user"
)


def _device(row: Sequence[Any]) -> Device:
    return Device(
        mac=row[0],
        tenant_id=row[1],
        location=row[2],
        state=DeviceState(row[3]),
        created_at=row[4],
        updated_at=row[5],
        device_id=row[6],
        code_expires_at=row[7],
        signed_in_user=row[8],
    )


@dataclass(frozen=True, slots=True)
class TokenRow:
    id: str
    role: str
    tenant_id: str | None
    name: str
    created_at: str
    revoked_at: str | None


@dataclass(frozen=True, slots=True)
class AuditRow:
    id: int
    at: str
    actor: str
    tenant_id: str | None
    action: str
    target: str | None
    before: Any
    after: Any


def migrations() -> list[tuple[int, str, str]]:
    """Numbered migration files shipped in the package, in order: (number, name, sql)."""
    found = []
    for entry in importlib.resources.files("server.store").joinpath("migrations").iterdir():
        name = entry.name
        if name.endswith(".sql") and name[:4].isdigit():
            found.append((int(name[:4]), name, entry.read_text(encoding="utf-8")))
    return sorted(found)


class Tx:
    """One open write transaction: SQL helpers that run inside it, including the audit entry.

    Two kinds share these helpers: the writer connection's (`transaction`, each statement a
    round trip to aiosqlite's thread) and the inline one's (`quick_transaction`, each statement
    run at once on the event loop thread). A capability's SQL is written once, against Tx.
    """

    def __init__(self, now: str) -> None:
        self.now = now
        self.changed_macs: list[str] = []
        self.last_seq = 0  # highest registry_changes.seq written by this transaction

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """Run one statement; the cursor (for `rowcount`)."""
        raise NotImplementedError

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        raise NotImplementedError

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Any:
        raise NotImplementedError

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        raise NotImplementedError

    async def audit(
        self,
        actor: str,
        tenant_id: str | None,
        action: str,
        target: str | None,
        before: Any = None,
        after: Any = None,
    ) -> None:
        await self.execute(
            "INSERT INTO audit (at, actor, tenant_id, action, target, before, after) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (self.now, actor, tenant_id, action, target, _json(before), _json(after)),
        )

    async def audit_many(
        self, rows: Iterable[tuple[str, str | None, str, str | None, Any, Any]]
    ) -> None:
        await self.executemany(
            "INSERT INTO audit (at, actor, tenant_id, action, target, before, after) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            ((self.now, a, t, act, tg, _json(b), _json(af)) for a, t, act, tg, b, af in rows),
        )

    async def mark_changed(self, macs: Sequence[str]) -> None:
        """Record device changes so other processes' indexes pick them up."""
        self.changed_macs.extend(macs)
        if len(macs) == 1:  # one statement: seq is the rowid, so the cursor gives it
            cur = await self.execute("INSERT INTO registry_changes (mac) VALUES (?)", (macs[0],))
            self.last_seq = int(cur.lastrowid or 0)
            return
        await self.executemany(
            "INSERT INTO registry_changes (mac) VALUES (?)", ((m,) for m in macs)
        )
        row = await self.fetchone("SELECT max(seq) FROM registry_changes")
        self.last_seq = int(row[0]) if row and row[0] is not None else 0


class _AioTx(Tx):
    """A transaction on the writer connection: each statement in aiosqlite's thread."""

    def __init__(self, db: aiosqlite.Connection, now: str) -> None:
        super().__init__(now)
        self.db = db

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return await self.db.execute(sql, params)

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        await self.db.executemany(sql, rows)

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Any:
        async with self.db.execute(sql, params) as cur:
            return await cur.fetchone()

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        async with self.db.execute(sql, params) as cur:
            return list(await cur.fetchall())


class _InlineTx(Tx):
    """A transaction on the inline connection: every statement runs at once, on the calling
    (event loop) thread, so awaiting one never suspends."""

    def __init__(self, db: sqlite3.Connection, now: str) -> None:
        super().__init__(now)
        self.db = db

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self.db.execute(sql, params)

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        self.db.executemany(sql, rows)

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self.db.execute(sql, params).fetchone()

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return list(self.db.execute(sql, params).fetchall())


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return (code & 0xFF) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return "locked" in str(exc) or "busy" in str(exc)


_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"))


def _json(v: Any) -> str | None:
    return None if v is None else _ENCODER.encode(v)


class SqliteStore:
    """The embedded default store."""

    def __init__(self, path: Path, busy_timeout_ms: int = 5000) -> None:
        self.path = path
        self.busy_timeout_ms = busy_timeout_ms
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._inline: sqlite3.Connection | None = None  # quick_transaction's, loop thread only
        self._write_lock = asyncio.Lock()

    async def _connect(self) -> aiosqlite.Connection:
        db = await aiosqlite.connect(self.path, isolation_level=None)
        await db.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
        await db.execute("PRAGMA foreign_keys = ON")
        await db.execute("PRAGMA synchronous = NORMAL")
        return db

    async def open(self) -> None:
        """Open both connections, switch to WAL and apply pending migrations."""
        prepare_db_file(self.path)
        self._writer = await self._connect()
        try:
            async with self._writer.execute("PRAGMA journal_mode = WAL") as cur:
                row = await cur.fetchone()
            if row is None or str(row[0]).lower() != "wal":
                raise RuntimeError(f"{self.path}: cannot switch the database to WAL mode")
            await self._migrate()
            self._reader = await self._connect()
        except BaseException:
            await self.close()  # aiosqlite's thread would otherwise keep the process alive
            raise

    async def close(self) -> None:
        if self._inline is not None:
            self._inline.close()
            self._inline = None
        for db in (self._reader, self._writer):
            if db is not None:
                await db.close()
        self._reader = self._writer = None

    @property
    def is_open(self) -> bool:
        return self._writer is not None

    async def _migrate(self) -> None:
        db = self._w
        await db.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations "
            "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
        )
        async with db.execute("SELECT version FROM schema_migrations") as cur:
            done = {r[0] for r in await cur.fetchall()}
        for version, name, sql in migrations():
            if version in done:
                continue
            # executescript would COMMIT implicitly; run statement by statement inside one tx.
            await db.execute("BEGIN IMMEDIATE")
            try:
                for stmt in _split_sql(sql):
                    await db.execute(stmt)
                await db.execute(
                    "INSERT INTO schema_migrations VALUES (?, ?, datetime('now'))", (version, name)
                )
                await db.execute("COMMIT")
            except BaseException:
                await db.execute("ROLLBACK")
                raise

    @property
    def _w(self) -> aiosqlite.Connection:
        if self._writer is None:
            raise RuntimeError("store is not open")
        return self._writer

    @property
    def _r(self) -> aiosqlite.Connection:
        if self._reader is None:
            raise RuntimeError("store is not open")
        return self._reader

    @asynccontextmanager
    async def transaction(self, now: str) -> AsyncIterator[Tx]:
        """One write transaction (BEGIN IMMEDIATE): committed on success, rolled back on error."""
        async with self._write_lock:
            db = self._w
            await db.execute("BEGIN IMMEDIATE")
            tx = _AioTx(db, now)
            try:
                yield tx
            except BaseException:
                await db.execute("ROLLBACK")
                raise
            try:
                await db.execute("COMMIT")
            except sqlite3.IntegrityError as e:  # deferred constraint at commit
                await db.execute("ROLLBACK")
                raise Conflict(str(e)) from e

    @asynccontextmanager
    async def quick_transaction(self, now: str) -> AsyncIterator[Tx]:
        """A short write transaction run inline on the event loop thread: no thread round trip
        per statement (a code entry is half a dozen statements: about 0.2 ms inline, against a
        round trip each to aiosqlite's thread, every one waiting for a loop iteration).

        For small transactions only; nothing in its body may block. The inline connection never
        waits for the database lock (busy_timeout 0) and never checkpoints (an fsync): when
        another process holds the lock, the transaction runs through `transaction` instead,
        which waits in its thread. Same guarantees either way: BEGIN IMMEDIATE, one COMMIT.
        """
        db = self._inline_connection()
        inline = False
        async with self._write_lock:
            try:
                db.execute("BEGIN IMMEDIATE")
                inline = True
            except sqlite3.OperationalError as e:
                if not _is_busy(e):
                    raise
            if inline:
                tx: Tx = _InlineTx(db, now)
                try:
                    yield tx
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
                try:
                    db.execute("COMMIT")
                except sqlite3.IntegrityError as e:  # deferred constraint at commit
                    db.execute("ROLLBACK")
                    raise Conflict(str(e)) from e
        if not inline:
            async with self.transaction(now) as slow:
                yield slow

    def _inline_connection(self) -> sqlite3.Connection:
        if self._writer is None:
            raise RuntimeError("store is not open")
        if self._inline is None:
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=True)
            db.execute("PRAGMA busy_timeout = 0")
            db.execute("PRAGMA foreign_keys = ON")
            db.execute("PRAGMA synchronous = NORMAL")
            db.execute("PRAGMA wal_autocheckpoint = 0")  # the writer connection checkpoints
            self._inline = db
        return self._inline

    # ---- reads -------------------------------------------------------------------------

    # Each read is one call into the reader's thread that runs the statement to its end. An
    # execute and a fetch as two calls let other coroutines' reads run between them while the
    # first statement is still open, and the reader connection then stays in that statement's
    # read transaction: later reads saw a snapshot from before commits made meanwhile (the MAC
    # index kept a redeemed device as awaiting activation).

    async def _one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        rows = list(await self._r.execute_fetchall(sql, params))
        return rows[0] if rows else None

    async def _all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return list(await self._r.execute_fetchall(sql, params))

    async def get_tenant(self, tenant_id: str) -> Tenant | None:
        row = await self._one("SELECT id, name, created_at FROM tenants WHERE id = ?", (tenant_id,))
        return Tenant(*row) if row else None

    async def list_tenants(self, only: str | None = None) -> list[Tenant]:
        if only is not None:
            rows = await self._all("SELECT id, name, created_at FROM tenants WHERE id = ?", (only,))
        else:
            rows = await self._all("SELECT id, name, created_at FROM tenants ORDER BY id")
        return [Tenant(*r) for r in rows]

    async def get_device(self, mac: str, tenant_id: str | None = None) -> Device | None:
        sql = f"SELECT {_DEVICE_COLS} FROM devices d LEFT JOIN codes c ON c.mac = d.mac WHERE d.mac = ?"
        params: list[Any] = [mac]
        if tenant_id is not None:
            sql += " AND d.tenant_id = ?"
            params.append(tenant_id)
        row = await self._one(sql, params)
        return _device(row) if row else None

    async def list_devices(
        self,
        tenant_id: str,
        state: str | None,
        q: str | None,
        limit: int,
        offset: int = 0,
        after: str | None = None,
        before: str | None = None,
        with_count: bool = True,
    ) -> tuple[int | None, list[Device]]:
        """Up to `limit` of a tenant's devices in MAC order: the first ones `after` a MAC, the last
        ones `before` one (keyset: an index seek however deep the page), or those at `offset`.
        The count of all matches walks the tenant's index entries (about 60 ms per million
        devices), so a caller that has it already skips it."""
        where = ["d.tenant_id = ?"]
        params: list[Any] = [tenant_id]
        if state:
            where.append("d.state = ?")
            params.append(state)
        if q:
            where.append("(d.mac LIKE ? ESCAPE '\\' OR d.location LIKE ? ESCAPE '\\')")
            like = "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            params += [like, like]
        cond = " AND ".join(where)
        count: int | None = None
        if with_count:
            count_row = await self._one(f"SELECT count(*) FROM devices d WHERE {cond}", params)
            count = int(count_row[0])
        order = "d.mac"
        if after is not None:
            cond += " AND d.mac > ?"
            params.append(after)
        if before is not None:
            cond += " AND d.mac < ?"
            params.append(before)
            order = "d.mac DESC"
        rows = await self._all(
            f"SELECT {_DEVICE_COLS} FROM devices d LEFT JOIN codes c ON c.mac = d.mac "
            f"WHERE {cond} ORDER BY {order} LIMIT ? OFFSET ?",
            [*params, limit, offset],
        )
        if before is not None:
            rows.reverse()
        return count, [_device(r) for r in rows]

    async def export_rows(self, tenant_id: str, state: str | None) -> list[tuple[str, str, str]]:
        """(mac, location, state) for the export (its codes come from the provisioning service)."""
        sql = "SELECT d.mac, d.location, d.state FROM devices d WHERE d.tenant_id = ?"
        params: list[Any] = [tenant_id]
        if state:
            sql += " AND d.state = ?"
            params.append(state)
        return await self._all(sql + " ORDER BY d.mac", params)

    async def existing_macs(self, macs: Sequence[str]) -> dict[str, str]:
        """Which of `macs` are registered already: mac -> tenant id."""
        found: dict[str, str] = {}
        for i in range(0, len(macs), 500):
            chunk = macs[i : i + 500]
            marks = ",".join("?" * len(chunk))
            for mac, tenant in await self._all(
                f"SELECT mac, tenant_id FROM devices WHERE mac IN ({marks})", chunk
            ):
                found[mac] = tenant
        return found

    async def macs_in_state(self, tenant_id: str, state: str) -> list[str]:
        rows = await self._all(
            "SELECT mac FROM devices WHERE tenant_id = ? AND state = ? ORDER BY mac",
            (tenant_id, state),
        )
        return [r[0] for r in rows]

    async def devices_in(self, tenant_id: str, macs: Sequence[str]) -> dict[str, Device]:
        """The devices of `tenant_id` among `macs`, by MAC."""
        out: dict[str, Device] = {}
        for i in range(0, len(macs), 500):
            chunk = macs[i : i + 500]
            marks = ",".join("?" * len(chunk))
            for row in await self._all(
                f"SELECT {_DEVICE_COLS} FROM devices d LEFT JOIN codes c ON c.mac = d.mac "
                f"WHERE d.tenant_id = ? AND d.mac IN ({marks})",
                [tenant_id, *chunk],
            ):
                out[row[0]] = _device(row)
        return out

    async def all_device_views(self) -> list[tuple[str, str, str, str, str]]:
        """(mac, tenant_id, tenant_name, state, location) for every device: builds the index."""
        return await self._all(
            "SELECT d.mac, d.tenant_id, t.name, d.state, d.location "
            "FROM devices d JOIN tenants t ON t.id = d.tenant_id"
        )

    async def device_views(self, macs: Sequence[str]) -> list[tuple[str, str, str, str, str]]:
        out: list[tuple[str, str, str, str, str]] = []
        for i in range(0, len(macs), 500):
            chunk = macs[i : i + 500]
            marks = ",".join("?" * len(chunk))
            out += await self._all(
                "SELECT d.mac, d.tenant_id, t.name, d.state, d.location FROM devices d "
                f"JOIN tenants t ON t.id = d.tenant_id WHERE d.mac IN ({marks})",
                chunk,
            )
        return out

    async def max_change_seq(self) -> int:
        row = await self._one("SELECT coalesce(max(seq), 0) FROM registry_changes")
        return int(row[0])

    async def changes_since(self, seq: int, limit: int = 50_000) -> list[tuple[int, str]]:
        return await self._all(
            "SELECT seq, mac FROM registry_changes WHERE seq > ? ORDER BY seq LIMIT ?",
            (seq, limit),
        )

    async def data_version(self) -> int:
        row = await self._one("PRAGMA data_version")
        return int(row[0])

    async def token_by_digest(self, digest: bytes) -> TokenRow | None:
        row = await self._one(
            "SELECT id, role, tenant_id, name, created_at, revoked_at FROM api_tokens "
            "WHERE digest = ?",
            (digest,),
        )
        return TokenRow(*row) if row else None

    async def list_tokens(self) -> list[TokenRow]:
        rows = await self._all(
            "SELECT id, role, tenant_id, name, created_at, revoked_at FROM api_tokens ORDER BY created_at"
        )
        return [TokenRow(*r) for r in rows]

    async def list_audit(
        self, tenant_id: str | None, limit: int, before_id: int | None
    ) -> list[AuditRow]:
        where: list[str] = []
        params: list[Any] = []
        if tenant_id is not None:
            where.append("tenant_id = ?")
            params.append(tenant_id)
        if before_id is not None:
            where.append("id < ?")
            params.append(before_id)
        cond = ("WHERE " + " AND ".join(where)) if where else ""
        rows = await self._all(
            f"SELECT id, at, actor, tenant_id, action, target, before, after FROM audit {cond} "
            "ORDER BY id DESC LIMIT ?",
            [*params, limit],
        )
        return [
            AuditRow(
                r[0],
                r[1],
                r[2],
                r[3],
                r[4],
                r[5],
                json.loads(r[6]) if r[6] else None,
                json.loads(r[7]) if r[7] else None,
            )
            for r in rows
        ]

    # ---- DHCP leases (full mode): the LeaseStore protocol of server/dhcp/pool.py ----------------

    async def load_leases(self) -> list[Lease]:
        rows = await self._all(
            "SELECT ip, mac, client_id, state, expires_at, subnet, updated_at FROM dhcp_leases"
        )
        return [
            Lease(
                ip=r[0],
                mac=r[1],
                client_id=r[2],
                state=LeaseState(r[3]),
                expires_at=r[4],
                subnet=r[5],
                updated_at=r[6],
            )
            for r in rows
        ]

    async def save_leases(self, changes: Sequence[Lease]) -> None:
        """Upsert every lease in one transaction, keyed by ip; later items win."""
        async with self.transaction("") as tx:
            await tx.executemany(
                "INSERT INTO dhcp_leases (ip, mac, client_id, state, expires_at, subnet, "
                "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (ip) DO UPDATE SET "
                "mac = excluded.mac, client_id = excluded.client_id, state = excluded.state, "
                "expires_at = excluded.expires_at, subnet = excluded.subnet, "
                "updated_at = excluded.updated_at",
                [
                    (x.ip, x.mac, x.client_id, x.state.value, x.expires_at, x.subnet, x.updated_at)
                    for x in changes
                ],
            )

    # ---- the discovered list (unregistered MACs seen on the network) ------------------------------

    async def replace_discovered(self, rows: Sequence[SeenDevice]) -> None:
        """Store exactly `rows` as the discovered list, in one transaction."""
        async with self.transaction("") as tx:
            await tx.execute("DELETE FROM discovered")
            await tx.executemany(
                "INSERT INTO discovered (mac, vendor_class, interface, source, first_seen, "
                "last_seen, count) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        r.mac,
                        r.vendor_class,
                        r.interface,
                        r.source,
                        r.first_seen,
                        r.last_seen,
                        r.count,
                    )
                    for r in rows
                ],
            )

    async def list_discovered(self, limit: int | None = None) -> list[SeenDevice]:
        """Most recently seen first."""
        rows = await self._all(
            "SELECT mac, vendor_class, interface, source, first_seen, last_seen, count "
            "FROM discovered ORDER BY last_seen DESC LIMIT ?",
            (-1 if limit is None else limit,),
        )
        return [SeenDevice(r[0], r[1], r[2], r[3], r[4], r[5], r[6]) for r in rows]

    async def integrity_check(self) -> str:
        row = await self._one("PRAGMA integrity_check")
        return str(row[0])


def _split_sql(script: str) -> list[str]:
    """Split a migration file into statements, as SQLite itself sees them (comments, triggers)."""
    statements: list[str] = []
    buf = ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            statements.append(buf.strip())
            buf = ""
    rest = "\n".join(ln for ln in buf.splitlines() if not ln.strip().startswith("--")).strip()
    if rest:
        raise ValueError(f"migration ends in the middle of a statement: {rest[:60]!r}")
    return statements
