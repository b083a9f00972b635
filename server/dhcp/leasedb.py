"""Full-mode lease batches written on the event loop thread: one short SQLite transaction each.

Why not through the store's aiosqlite connection: every save there is three round trips to its
thread (BEGIN, executemany, COMMIT), and while the loop is busy answering datagrams each round
trip waits for a loop iteration and a GIL hand-over. Measured under load: 5-7 ms per save,
against 25-60 us for the same transaction done inline (WAL with synchronous=NORMAL, so a commit
is a write() to the WAL and no fsync). The table is the store's (`dhcp_leases`, migration
0002), and the rows written are the ones `SqliteStore.save_leases` would write.

The loop never waits on another writer: busy_timeout is 0, so when the write lock is held
elsewhere (an admin import, the CLI) `save_now` returns False and the caller falls back to the
store's async path, which waits in its own thread. Checkpoints, which fsync, never run inline:
autocheckpoint is off on this connection and `checkpoint()` runs one in a thread: PASSIVE, then
RESTART once the WAL passes 16 MiB, so it starts over instead of growing for as long as commits
keep coming.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from server.dhcp.pool import Lease

# The rows SqliteStore.save_leases would leave, in two statements: most writes renew or rebind
# an address to the MAC that already holds it, and leaving `mac` out of that update spares the
# dhcp_leases_by_mac index page, a 4 KiB WAL frame per row (measured: 55 -> 32 KiB of WAL and
# 114 -> 98 us for a 10-row batch). The second statement moves addresses to another MAC.
_UPSERT_SAME_MAC = (
    "INSERT INTO dhcp_leases (ip, mac, client_id, state, expires_at, subnet, updated_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (ip) DO UPDATE SET "
    "client_id = excluded.client_id, state = excluded.state, expires_at = excluded.expires_at, "
    "subnet = excluded.subnet, updated_at = excluded.updated_at WHERE mac = excluded.mac"
)
_MOVE_TO_MAC = (
    "UPDATE dhcp_leases SET mac = ?, client_id = ?, state = ?, expires_at = ?, subnet = ?, "
    "updated_at = ? WHERE ip = ? AND mac != ?"
)
# Take a checkpoint after this many inline commits, or this long after the first unflushed one.
CHECKPOINT_COMMITS = 500
CHECKPOINT_SECONDS = 1.0
# A WAL larger than this is started over after the checkpoint (see _checkpoint_blocking); how
# long that RESTART waits for the writer in flight and for readers of old frames.
WAL_RESTART_BYTES = 16 << 20
CHECKPOINT_WAIT_MS = 200


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return (code & 0xFF) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return "locked" in str(exc) or "busy" in str(exc)


class SqliteLeaseWriter:
    """Synchronous lease upserts into an already migrated store database (WAL mode)."""

    def __init__(self, path: Path, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = Path(path)
        self._clock = clock
        self._db: sqlite3.Connection | None = None
        self._since_checkpoint = 0
        self._first_unflushed = 0.0
        self._checkpointing = False
        self.busy = 0  # saves refused because another connection held the write lock

    def open(self) -> None:
        """Connect; raises sqlite3.Error if the file is missing or not a WAL store database."""
        # mode=rw: never create an empty database next to the real one.
        db = sqlite3.connect(
            f"file:{self.path}?mode=rw", uri=True, isolation_level=None, check_same_thread=True
        )
        try:
            mode = db.execute("PRAGMA journal_mode").fetchone()
            if mode is None or str(mode[0]).lower() != "wal":
                raise sqlite3.OperationalError(f"{self.path}: not in WAL mode")
            db.execute("PRAGMA busy_timeout = 0")
            db.execute("PRAGMA synchronous = NORMAL")
            db.execute("PRAGMA wal_autocheckpoint = 0")
            db.execute("SELECT 1 FROM dhcp_leases LIMIT 1").fetchall()
        except BaseException:
            db.close()
            raise
        self._db = db

    def close(self) -> None:
        """Close the connection (a running checkpoint keeps its own)."""
        if self._db is not None:
            self._db.close()
            self._db = None

    @property
    def is_open(self) -> bool:
        return self._db is not None

    def save_now(self, changes: Sequence[Lease]) -> bool:
        """Upsert `changes` in one transaction; False (nothing written) if the lock is held."""
        db = self._db
        if db is None:
            raise RuntimeError("lease writer is not open")
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as e:
            if _is_busy(e):
                self.busy += 1
                return False
            raise
        try:
            rows = [
                (x.ip, x.mac, x.client_id, x.state.value, x.expires_at, x.subnet, x.updated_at)
                for x in changes
            ]
            db.executemany(_UPSERT_SAME_MAC, rows)
            db.executemany(_MOVE_TO_MAC, [(*r[1:], r[0], r[1]) for r in rows])
            db.execute("COMMIT")
        except BaseException as e:
            if db.in_transaction:
                db.execute("ROLLBACK")
            if isinstance(e, sqlite3.OperationalError) and _is_busy(e):
                self.busy += 1
                return False  # nothing was written: the store's path saves it instead
            raise
        if self._since_checkpoint == 0:
            self._first_unflushed = self._clock()
        self._since_checkpoint += 1
        return True

    def checkpoint_due(self) -> bool:
        """True when enough has been written inline since the last checkpoint."""
        n = self._since_checkpoint
        if n == 0 or self._checkpointing:
            return False
        return (
            n >= CHECKPOINT_COMMITS or self._clock() - self._first_unflushed >= CHECKPOINT_SECONDS
        )

    async def checkpoint(self) -> None:
        """Copy the WAL into the database file; past WAL_RESTART_BYTES, start it over."""
        if self._checkpointing:
            return
        self._checkpointing = True
        self._since_checkpoint = 0
        try:
            await asyncio.to_thread(self._checkpoint_blocking)
        finally:
            self._checkpointing = False

    def _checkpoint_blocking(self) -> None:
        # Its own connection, used only in this worker thread, so the loop's is never shared.
        db = sqlite3.connect(self.path, isolation_level=None)
        try:
            # PASSIVE copies what it can without holding anyone up.
            db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            # Under a steady stream of commits a PASSIVE checkpoint never catches up with the
            # last frame, so the WAL is never started over and grows without bound (measured:
            # 12 MB/s at 3,000 DORA/s). Past WAL_RESTART_BYTES, RESTART finishes the few frames
            # left, syncs, and lets the next commit write from the WAL's start again. It holds
            # new writers back only that long (an inline save refused meanwhile is retried).
            wal = self.path.with_name(self.path.name + "-wal")
            if wal.exists() and wal.stat().st_size > WAL_RESTART_BYTES:
                db.execute(f"PRAGMA busy_timeout = {CHECKPOINT_WAIT_MS}")
                db.execute("PRAGMA wal_checkpoint(RESTART)").fetchall()
        finally:
            db.close()
