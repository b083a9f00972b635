"""Online, consistent backups of the SQLite store, safe while `imprint serve` keeps writing.

SQLite's backup API copies the database as of one read transaction; in WAL mode a reader never
blocks the server's writers, so the copy is a snapshot of committed transactions only (never
half an import) and the server keeps answering. The copy is written beside the target, checked
with `PRAGMA integrity_check`, switched to a rollback journal so it is one self-contained file,
then renamed into place: a reader of FILE never sees a partial backup.

Restore is a file copy with the server stopped (README, "Operations"): stop, copy the backup over
[store] path, delete any stale `-wal`/`-shm` beside it, start.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path


class BackupError(Exception):
    """The backup could not be made; str(self) says why and what to do."""


@dataclass(frozen=True, slots=True)
class BackupInfo:
    """What `backup_database` wrote."""

    path: Path
    size_bytes: int
    pages: int
    devices: int  # rows in `devices`: a quick sanity figure for the operator


def check_database(path: Path) -> list[str]:
    """`PRAGMA integrity_check` of the SQLite file at `path`: [] when it is sound."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = [str(r[0]) for r in conn.execute("PRAGMA integrity_check")]
    finally:
        conn.close()
    return [] if rows == ["ok"] else rows


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def backup_database(source: Path, dest: Path, *, busy_timeout_ms: int = 5000) -> BackupInfo:
    """Copy the live database at `source` to `dest` consistently (blocking; see the module doc)."""
    if not source.is_file():
        raise BackupError(f"no database at {source} (check [store] path)")
    if dest.exists() and dest.resolve() == source.resolve():
        raise BackupError(f"{dest} is the live database itself; give another file")
    if dest.is_dir():
        raise BackupError(f"{dest} is a directory; give a file name")
    if not dest.parent.is_dir():
        raise BackupError(f"folder {dest.parent} does not exist")
    tmp = dest.with_name(f".{dest.name}.partial-{os.getpid()}")
    timeout = busy_timeout_ms / 1000
    try:
        # mode=rw: never create an empty database where the store should be.
        src = sqlite3.connect(f"file:{source}?mode=rw", uri=True, timeout=timeout)
        try:
            out = sqlite3.connect(tmp, timeout=timeout)
            try:
                # pages=-1 (the default): one step, one read transaction, one snapshot.
                src.backup(out)
                out.execute("PRAGMA journal_mode = DELETE")
                problems = [str(r[0]) for r in out.execute("PRAGMA integrity_check")]
                if problems != ["ok"]:
                    raise BackupError(
                        f"the copy failed its integrity check ({'; '.join(problems[:5])}); "
                        f"check the live database with `sqlite3 {source} 'PRAGMA integrity_check'`"
                    )
                pages = int(out.execute("PRAGMA page_count").fetchone()[0])
                try:
                    devices = int(out.execute("SELECT count(*) FROM devices").fetchone()[0])
                except sqlite3.OperationalError:
                    devices = 0  # a store that was never migrated
            finally:
                out.close()
        finally:
            src.close()
        # The copy holds token digests and sealed codes: readable by the owner only.
        os.chmod(tmp, 0o600)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, dest)
        _fsync_dir(dest.parent)
    except sqlite3.Error as e:
        raise BackupError(f"backup of {source} to {dest} failed: {e}") from e
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return BackupInfo(dest, dest.stat().st_size, pages, devices)


async def online_backup(source: Path, dest: Path, *, busy_timeout_ms: int = 5000) -> BackupInfo:
    """`backup_database` in a worker thread, so an event loop keeps running meanwhile."""
    return await asyncio.to_thread(backup_database, source, dest, busy_timeout_ms=busy_timeout_ms)
