"""Issue 17: the database and its WAL and shared-memory files are not readable by other users."""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from server.store.sqlite import SqliteStore


@pytest.fixture
def open_umask() -> Iterator[None]:
    """The usual 022 umask, which left the files 0644 before (group and world readable)."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


async def test_a_new_store_is_0600_with_its_wal_and_shm_in_a_0750_directory(
    tmp_path: Path, open_umask: None
) -> None:
    path = tmp_path / "state" / "imprint.db"
    store = SqliteStore(path)
    await store.open()
    try:
        async with store.transaction(datetime.now(UTC).isoformat()) as tx:
            await tx.execute(
                "INSERT INTO tenants (id, name, created_at) VALUES (?, ?, ?)", ("acme", "Acme", "t")
            )
        wal, shm = Path(f"{path}-wal"), Path(f"{path}-shm")
        assert {p.name: _mode(p) for p in (path, wal, shm)} == {
            path.name: 0o640,
            wal.name: 0o640,
            shm.name: 0o640,
        }
        assert _mode(path.parent) == 0o750
    finally:
        await store.close()


async def test_an_existing_world_readable_store_is_named_with_the_fix(
    tmp_path: Path, open_umask: None, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "imprint.db"
    path.touch(mode=0o644)
    store = SqliteStore(path)
    with caplog.at_level(logging.WARNING, logger="imprint.store"):
        await store.open()
    await store.close()
    assert _mode(path) == 0o644  # not changed behind the operator's back
    assert f"chmod 640 {path}" in caplog.text and "mode 0644" in caplog.text
