"""Issue 17: a SIGKILL during bulk code generation for 20,000 devices issues all codes or none.

The real server (`imprint serve`) over a temporary SQLite file; 20,000 devices with codes, then
one `POST /verification-codes` for all of them per kill point, on the same file: after the 201,
before the write transaction (codes are minted first, off the event loop), early in it and near
its COMMIT (seen from outside as in test_crash_import.py: the write lock held, the -wal grown
by a share of what a whole generation writes), and once during an export (a read). After each
kill the server restarts on the same file, and the next kill point starts from what it holds:

- every device shows a new code in the export, or every device still shows its old one (and
  every exported code is one the store would accept: digest, unused, unexpired, no misses);
- after a 201, the codes it gave are the ones stored;
- the codes of the tenant share one created_at (one batch), one `code.generate` audit entry per
  device per batch that landed and none for one that did not;
- the API and the in-memory index still count every device awaiting activation;
- `PRAGMA integrity_check` says 'ok', no foreign-key violations, no traceback in the logs;
- at the end an exported code is accepted at POST /provision.

20,000 devices keep the generation's write transaction open for about 0.2 s here (6 MB of WAL),
long enough for the probe to land inside it; the bench (bench/reliability/crash.py) runs the
same at 100,000.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.crash import AFTER_RESPONSE, BEFORE_TX, IN_TX, codes_round

DEVICES = 20_000
TENANT = "crash"


@pytest.mark.timeout(240)
def test_sigkill_during_code_generation_issues_all_codes_or_none(tmp_path: Path) -> None:
    r = codes_round(tmp_path / "round", TENANT, DEVICES)
    print()
    landed_in_tx = 0
    for c in r.checks:
        print(
            f"{c.label}: killed {c.kill.phase}"
            f"{f' (HTTP {c.kill.status})' if c.kill.status else ''}, WAL "
            f"+{c.kill.wal_growth / 1e6:.1f} MB of ~{r.wal_full / 1e6:.1f} MB -> after restart "
            f"{c.new} new, {c.old} old, {c.none} without a code ({c.landed.upper()}), "
            f"{c.valid} valid, audit {c.audit_before} -> {c.audit}, integrity {c.integrity!r}"
        )
        assert c.integrity == "ok" and c.fk_violations == 0
        assert c.landed in ("all", "none"), f"{c.label}: {c.new} new codes, {c.old} old"
        assert c.none == 0
        # Old or new, every device holds a code the store would accept.
        assert c.valid == DEVICES
        assert c.generations == 1, f"{c.label}: codes from {c.generations} batches"
        assert c.audit_consistent, f"{c.label}: audit {c.audit_before} -> {c.audit}"
        assert (c.api_awaiting, c.index_awaiting) == (DEVICES, DEVICES)
        if c.label == "after 201":
            # A 201 promised these codes: they are the ones stored.
            assert c.kill.phase == AFTER_RESPONSE and c.kill.status == 201
            assert c.landed == "all" and c.as_answered == DEVICES
        if c.label == "during export":
            # A read: it never takes the write lock, and changes nothing.
            assert c.kill.phase == BEFORE_TX, c.kill
            assert c.landed == "none" and c.audit == c.audit_before
        if c.kill.phase == BEFORE_TX:
            assert c.landed == "none"
        if c.kill.phase == IN_TX:
            landed_in_tx += 1
    # Without this the test could pass while never killing inside the transaction.
    assert landed_in_tx >= 2, "no kill landed while the generation's transaction was open"
    assert r.redeemed == 200
    assert r.crashes == 0 and r.tracebacks == 0
