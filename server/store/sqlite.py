"""SQLite store: connections, transactions and migrations (the shared reads: server/store/reads.py).

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
import logging
import os
import sqlite3
import stat
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite

from server.store.base import Conflict, SchemaTooNew, Tx
from server.store.reads import SqlReads

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


def migrations() -> list[tuple[int, str, str]]:
    """Numbered migration files shipped in the package, in order: (number, name, sql)."""
    found = []
    for entry in importlib.resources.files("server.store").joinpath("migrations").iterdir():
        name = entry.name
        if name.endswith(".sql") and name[:4].isdigit():
            found.append((int(name[:4]), name, entry.read_text(encoding="utf-8")))
    return sorted(found)


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


class SqliteStore(SqlReads):
    """The embedded default store."""

    def __init__(self, path: Path, busy_timeout_ms: int = 5000) -> None:
        self.path = path
        self.busy_timeout_ms = busy_timeout_ms
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._inline: sqlite3.Connection | None = None  # quick_transaction's, loop thread only
        self._write_lock = asyncio.Lock()
        self.applied: list[str] = []  # the migrations the last open applied

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

    @property
    def location(self) -> str:
        return str(self.path)

    async def schema_version(self) -> int:
        """The newest migration applied (0 for an empty database)."""
        row = await self._one("SELECT coalesce(max(version), 0) FROM schema_migrations")
        return int(row[0])

    async def _migrate(self) -> None:
        db = self._w
        await db.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations "
            "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
        )
        async with db.execute("SELECT version FROM schema_migrations") as cur:
            done = {r[0] for r in await cur.fetchall()}
        known = migrations()
        newest = max((v for v, _, _ in known), default=0)
        if done and max(done) > newest:
            raise SchemaTooNew(str(self.path), max(done), newest)
        for version, name, sql in known:
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
            self.applied.append(name)

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

    # ---- reads (the shared ones are server/store/reads.py's) --------------------------------

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

    async def data_version(self) -> int:
        row = await self._one("PRAGMA data_version")
        return int(row[0])

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
