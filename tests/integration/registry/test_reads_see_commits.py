"""A read issued after a commit sees it, however many other reads share the reader connection.

The MAC index the DHCP and mDNS hot paths read is refreshed from the store right after each
commit; a read that saw an older snapshot left a redeemed device "awaiting activation" there.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from server.store.sqlite import SqliteStore

NOW = "2026-12-07T00:00:00Z"


async def test_a_read_after_a_commit_sees_it_while_other_reads_run(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "imprint.db")
    await store.open()
    try:
        async with store.transaction(NOW) as tx:
            await tx.execute("INSERT INTO tenants VALUES ('t', 'T', ?)", (NOW,))
        busy = asyncio.Event()
        stop = False

        async def reader() -> None:  # reads through the same connection, all the time
            while not stop:
                await asyncio.gather(*(store.list_tenants() for _ in range(4)))
                busy.set()

        readers = [asyncio.create_task(reader()) for _ in range(4)]
        try:
            await asyncio.wait_for(busy.wait(), 10)
            for i in range(200):
                mac = f"02:00:5e:00:{i >> 8:02x}:{i & 255:02x}"
                async with store.quick_transaction(NOW) as tx:
                    await tx.execute(
                        "INSERT INTO devices (mac, device_id, tenant_id, state, created_at, "
                        "updated_at) VALUES (?, ?, 't', 'awaiting_activation', ?, ?)",
                        (mac, f"dev_{i}", NOW, NOW),
                    )
                assert await store.get_device(mac) is not None, f"commit {i} not seen"
        finally:
            stop = True
            await asyncio.gather(*readers)
    finally:
        await store.close()
