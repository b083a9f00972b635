"""Issue 2: a SIGKILL while a 100,000-row CSV import is in flight stores all rows or none.

The real server (`imprint serve`) runs as a subprocess over a temporary SQLite file; the import
goes over a real loopback socket. Each round kills the server at a different point: after the
201 (committed data must survive), while the body is being parsed (no write transaction yet),
and twice inside the import's single write transaction (early, and near COMMIT). The kill point
is observed, not assumed: a second SQLite connection probes the write lock (`BEGIN IMMEDIATE`
fails while the import transaction holds it) and the `-wal` file's growth shows how far the
transaction got. After each kill the server is restarted on the same file: the tenant must hold
exactly 0 or exactly 100,000 devices, in the API, the in-memory index (/metrics), the change
feed and the audit log alike, and `PRAGMA integrity_check` must say 'ok'.

The kill/observe/restart machinery is tests/helpers/crash.py, shared with the other crash tests
and bench/reliability/crash.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.crash import AFTER_RESPONSE, BEFORE_TX, IN_TX, build_csv, import_round

ROWS = 100_000
TENANT = "crash"


@pytest.mark.timeout(240)
def test_sigkill_during_import_stores_all_rows_or_none(tmp_path: Path) -> None:
    body = build_csv(ROWS)
    plan = [
        ("after 201", "response", 0.0),
        ("during parse", "early", 0.0),
        ("early in tx", "tx", 0.25),
        ("near commit", "tx", 0.9),
    ]
    wal_full = 0
    landed_in_tx = 0
    print()
    for i, (label, mode, fraction) in enumerate(plan):
        r = import_round(tmp_path / f"round{i}", TENANT, body, mode, wal_full, fraction)
        kill, out = r.kill, r.check
        stored = out.db_devices
        print(
            f"round {i} ({label}): killed {kill.phase}"
            f"{f' (HTTP {kill.status})' if kill.status else ''}, WAL +{kill.wal_growth / 1e6:.1f} MB"
            f"{f' of ~{wal_full / 1e6:.1f} MB' if wal_full else ''} -> after restart "
            f"{stored} devices ({'ALL' if stored == ROWS else 'NONE' if stored == 0 else 'PARTIAL'}), "
            f"integrity_check {out.integrity!r}"
        )
        assert out.integrity == "ok"
        assert out.fk_violations == 0
        assert stored in (0, ROWS), f"partial import survived a crash: {stored} of {ROWS}"
        # Every view of the registry agrees: rows, change feed, audit, the server's own answer
        # and the in-memory index the DHCP/mDNS hot path reads.
        assert (out.api_count, out.index_count, out.db_changes, out.db_audit) == (stored,) * 4
        if mode == "response":
            # A 201 promised the rows are stored: they must survive the crash.
            assert kill.phase == AFTER_RESPONSE
            assert kill.status == 201
            assert stored == ROWS
            wal_full = r.wal_at_kill
            assert wal_full > 0
        if kill.phase == BEFORE_TX:
            assert stored == 0
        if kill.phase == IN_TX:
            landed_in_tx += 1
    # Without this the test could pass while never killing inside the transaction.
    assert landed_in_tx >= 2, "no kill landed while the import transaction was open"
