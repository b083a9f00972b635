"""PostgreSQL store: the same methods and transaction semantics as SqliteStore, on asyncpg.

Chosen by `[store] url = "postgresql://..."`, so that several Imprint servers (sites) share one
registry. The SQL is the house SQL every capability writes once against `Tx` ('?' placeholders,
syntax both engines accept); `_sql` turns it into PostgreSQL's `$1..$n` once per statement text.

Write transactions are serialised, as SQLite's single writer (BEGIN IMMEDIATE) serialises them
today: each takes `pg_advisory_xact_lock(WRITE_LOCK)` first, held to its COMMIT or ROLLBACK,
across every server on the database. The code relies on that in more places than a row lock
would cover: check-then-write bodies (a MAC not registered yet, a code's attempt count), imports
that must be all or nothing against concurrent ones, and `registry_changes` rows whose `seq`
order is their commit order (the change feed reads `seq > cursor`; with writers interleaved a
later-committed lower seq would be skipped). SERIALIZABLE with retry would need the body rerun,
and a body here is the caller's code inside `async with`, not a function the store can call
again. Reads run on any pool connection, at READ COMMITTED: each sees every commit made before it.

Migrations: server/store/migrations_pg/NNNN_*.sql, one per SQLite migration with the same
number, applied at open under a session advisory lock (two servers starting together apply each
once); a database migrated by a newer Imprint is refused (SchemaTooNew).
"""

from __future__ import annotations

import importlib.resources
import logging
import re
import urllib.parse
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

from server.store.base import Conflict, IntegrityError, SchemaTooNew, StoreError, Tx
from server.store.reads import SqlReads

log = logging.getLogger("imprint.store")

# Advisory lock keys (one 64-bit space per database): "imprint" write path, migrations.
WRITE_LOCK = 0x696D7072696E7401
MIGRATE_LOCK = 0x696D7072696E7402

_TOKEN = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|--[^\n]*|\?")
_translated: dict[str, str] = {}


def _sql(sql: str) -> str:
    """The house SQL with '?' placeholders numbered $1..$n (none inside literals, quoted names
    or comments); cached per statement text (chunked IN lists give a few hundred texts)."""
    out = _translated.get(sql)
    if out is None:
        n = 0

        def number(m: re.Match[str]) -> str:
            nonlocal n
            if m.group(0) != "?":
                return m.group(0)
            n += 1
            return f"${n}"

        out = _TOKEN.sub(number, sql)
        if len(_translated) < 4096:
            _translated[sql] = out
    return out


def redact(url: str) -> str:
    """`url` without its password, for logs and messages."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "postgresql://(unparsable url)"
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def migrations() -> list[tuple[int, str, str]]:
    """PostgreSQL's numbered migration files, in order: (number, name, sql)."""
    found = []
    for entry in importlib.resources.files("server.store").joinpath("migrations_pg").iterdir():
        name = entry.name
        if name.endswith(".sql") and name[:4].isdigit():
            found.append((int(name[:4]), name, entry.read_text(encoding="utf-8")))
    return sorted(found)


class _Status:
    """What a caller reads off an executed statement: `rowcount`, like a DB-API cursor."""

    __slots__ = ("rowcount",)

    def __init__(self, status: str) -> None:
        tail = status.rsplit(" ", 1)[-1]
        self.rowcount = int(tail) if tail.isdigit() else -1


def _integrity(e: asyncpg.IntegrityConstraintViolationError) -> IntegrityError:
    detail = getattr(e, "detail", None)
    return IntegrityError(f"{e}" + (f" ({detail})" if detail else ""))


class _PgTx(Tx):
    """A write transaction on one pooled connection, holding the write lock."""

    def __init__(
        self, conn: asyncpg.Connection[Any] | asyncpg.pool.PoolConnectionProxy[Any], now: str
    ) -> None:
        super().__init__(now)
        self.conn = conn

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        try:
            return _Status(await self.conn.execute(_sql(sql), *params))
        except asyncpg.IntegrityConstraintViolationError as e:
            raise _integrity(e) from e

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        batch = list(rows)
        if not batch:
            return
        try:
            await self.conn.executemany(_sql(sql), batch)
        except asyncpg.IntegrityConstraintViolationError as e:
            raise _integrity(e) from e

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Any:
        try:
            row = await self.conn.fetchrow(_sql(sql), *params)
        except asyncpg.IntegrityConstraintViolationError as e:
            raise _integrity(e) from e
        return None if row is None else tuple(row)

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        try:
            rows = await self.conn.fetch(_sql(sql), *params)
        except asyncpg.IntegrityConstraintViolationError as e:
            raise _integrity(e) from e
        return [tuple(r) for r in rows]

    async def mark_changed(self, macs: Sequence[str]) -> None:
        """One statement whatever the count; under the write lock, our seqs are the newest."""
        if not macs:
            return
        self.changed_macs.extend(macs)
        seq = await self.conn.fetchval(
            "WITH ins AS (INSERT INTO registry_changes (mac) SELECT unnest($1::text[]) "
            "RETURNING seq) SELECT max(seq) FROM ins",
            list(macs),
        )
        self.last_seq = int(seq or 0)


class PgStore(SqlReads):
    """The shared store: PostgreSQL through an asyncpg connection pool."""

    _LIKE = "ILIKE"

    def __init__(self, url: str, pool_size: int = 10, lock_timeout_ms: int = 5000) -> None:
        self.url = url
        self.pool_size = pool_size
        self.lock_timeout_ms = lock_timeout_ms
        self._pool: asyncpg.Pool | None = None
        self.applied: list[str] = []  # the migrations the last open applied

    @property
    def location(self) -> str:
        return redact(self.url)

    @property
    def is_open(self) -> bool:
        return self._pool is not None

    async def open(self) -> None:
        """Connect the pool, then apply pending migrations (refusing a newer schema)."""
        try:
            self._pool = await asyncpg.create_pool(
                self.url,
                min_size=1,
                max_size=self.pool_size,
                # The write lock waits like SQLite's busy_timeout, then fails with a message.
                server_settings={"lock_timeout": str(int(self.lock_timeout_ms))},
            )
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, ValueError) as e:
            raise StoreError(
                f"cannot connect to the PostgreSQL store {self.location}: {e}; check [store] "
                "url (IMPRINT_STORE__URL), that the server runs and that this user may log in"
            ) from e
        try:
            await self._migrate()
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    @property
    def _p(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("store is not open")
        return self._pool

    async def _migrate(self) -> None:
        async with self._p.acquire() as conn:
            await conn.execute("SELECT pg_advisory_lock($1)", MIGRATE_LOCK)
            try:
                await conn.execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, "
                    "name TEXT NOT NULL, applied_at TEXT NOT NULL)"
                )
                done = {r[0] for r in await conn.fetch("SELECT version FROM schema_migrations")}
                known = migrations()
                newest = max((v for v, _, _ in known), default=0)
                if done and max(done) > newest:
                    raise SchemaTooNew(self.location, max(done), newest)
                for version, name, sql in known:
                    if version in done:
                        continue
                    async with conn.transaction():
                        await conn.execute(sql)  # simple protocol: the whole file, one tx
                        await conn.execute(
                            "INSERT INTO schema_migrations VALUES ($1, $2, "
                            "to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS'))",
                            version,
                            name,
                        )
                    self.applied.append(name)
                    log.info("store: applied migration %s", name)
            finally:
                await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATE_LOCK)

    async def schema_version(self) -> int:
        row = await self._one("SELECT coalesce(max(version), 0) FROM schema_migrations")
        return int(row[0])

    @asynccontextmanager
    async def transaction(self, now: str) -> AsyncIterator[Tx]:
        """One write transaction, serialised with every other writer on the database."""
        async with self._p.acquire() as conn:
            tr = conn.transaction()
            await tr.start()
            try:
                await conn.execute("SELECT pg_advisory_xact_lock($1)", WRITE_LOCK)
                yield _PgTx(conn, now)
            except BaseException:
                await tr.rollback()
                raise
            try:
                await tr.commit()
            except asyncpg.IntegrityConstraintViolationError as e:  # deferred, at commit
                raise Conflict(str(e)) from e

    # A code entry is a short transaction either way; there is no inline path to take here.
    quick_transaction = transaction

    async def _one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        row = await self._p.fetchrow(_sql(sql), *params)
        return None if row is None else tuple(row)

    async def _all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return [tuple(r) for r in await self._p.fetch(_sql(sql), *params)]

    async def data_version(self) -> int:
        """Changes when a device change commits: the change feed's newest seq (commits are
        serialised, so seq order is commit order)."""
        return await self.max_change_seq()

    async def integrity_check(self) -> str:
        """PostgreSQL checks its own pages; this only proves the database answers."""
        await self._one("SELECT 1")
        return "ok"
