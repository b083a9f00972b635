#!/usr/bin/env python3
"""SIGKILL during imports, code generation and redemption storms (issue 17): the crash tests
at bench size, several rounds each.

Every probe runs the real `imprint serve` over a fresh temporary SQLite file, kills it with
SIGKILL at a point observed from outside (the write lock held or not, the -wal's growth, the
answer arrived or not), restarts it on the same file and checks what survived. The machinery
and the checks are tests/helpers/crash.py, shared with the CI tests
(tests/integration/registry/test_crash_import.py, tests/integration/provisioning/
test_crash_codes.py and test_crash_redeem.py), which run the same probes smaller.

- `import`: per round, four fresh servers each importing --import-rows rows from CSV, killed
  after the 201, during the parse, early in the write transaction and near its COMMIT.
- `codes`: per round, --codes devices with codes, then one generation for all of them killed
  after the 201, before the transaction, early in it, near COMMIT, then an export killed in
  flight, all on one file.
- `redeem`: per round, a storm of --storm devices entering their codes from 32 threads (each
  from its own loopback address, every 10th raced by a second client, every 40th never reading
  its answer), killed once 30 %, 50 % or 70 % (by round) got a 200; after the restart every
  unanswered device enters its code again.

It never asserts. Per probe one `ProbeResult` (tests/helpers/reliability.py): `sent` =
operations attempted (rows imported, codes asked for, code entries sent before the kill),
`valid_sent` = operations acknowledged (a 201 or 200) before the kill, `valid_answered` = those
found intact after the restart (the rows, the codes the 201 gave, the device provisioned with
the credentials its 200 carried), `crashes` = restarts that failed, `tracebacks` in the
servers' logs, RSS of the first server before its first kill and of the last restarted one.
`extra`: `rounds`, `kills`, `lost` (acknowledged, not intact), `double` (applied twice: rows or
codes beyond one per device, a device provisioned twice), `partial` (a kill that left some of
one operation's writes: neither all nor none), `integrity` ("ok" when every `PRAGMA
integrity_check` and foreign-key check was clean), `seconds`, and probe-specific counts.

    .venv/bin/python bench/reliability/crash.py [--rounds 3] [--probes import,codes,redeem]
        [--import-rows 100000] [--codes 100000] [--storm 1000] [--json]

--json prints one JSON object per probe per line; otherwise a Markdown table, then each
probe's `extra`. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.helpers.crash import (  # noqa: E402
    BEFORE_TX,
    IN_TX,
    CrashProbeError,
    RestartFailed,
    build_csv,
    codes_round,
    import_round,
    storm_round,
)
from tests.helpers.reliability import ProbeResult, count_tracebacks, table  # noqa: E402

PROBES = ("import", "codes", "redeem")
IMPORT_PLAN = (
    ("after 201", "response", 0.0),
    ("during parse", "early", 0.0),
    ("early in tx", "tx", 0.25),
    ("near commit", "tx", 0.9),
)
STORM_KILL_AFTER = (0.3, 0.5, 0.7)


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


class Tally:
    """One probe's figures, as rounds add to them."""

    def __init__(self, probe: str) -> None:
        self.result = ProbeResult(probe, valid_sent=0, valid_answered=0)
        self.extra: dict[str, Any] = {
            "rounds": 0,
            "kills": 0,
            "lost": 0,
            "double": 0,
            "partial": 0,
            "integrity": "ok",
        }
        self.bad_integrity: list[str] = []
        self.errors: list[str] = []
        self.started = time.monotonic()

    def integrity(self, where: str, answer: str, fk: int = 0) -> None:
        if answer != "ok" or fk:
            self.bad_integrity.append(f"{where}: {answer}, {fk} foreign-key violations")

    def add(self, key: str, n: int = 1) -> None:
        self.extra[key] = self.extra.get(key, 0) + n

    def finish(self, root: Path) -> ProbeResult:
        r = self.result
        assert r.valid_sent is not None and r.valid_answered is not None
        self.extra["lost"] += r.valid_sent - r.valid_answered
        if self.bad_integrity:
            self.extra["integrity"] = "; ".join(self.bad_integrity)
        if self.errors:
            self.extra["errors"] = self.errors
        self.extra["seconds"] = round(time.monotonic() - self.started, 1)
        r.tracebacks = sum(
            count_tracebacks(p.read_text(errors="replace")) for p in root.rglob("server-*.log")
        )
        r.extra = self.extra
        return r


def run_rounds(t: Tally, rounds: int, one: Callable[[int], None]) -> None:
    for i in range(rounds):
        try:
            one(i)
        except RestartFailed as e:
            t.result.crashes += 1
            t.errors.append(f"round {i}: {str(e)[:300]}")
            say(f"  round {i}: RESTART FAILED: {str(e)[:300]}")
        except CrashProbeError as e:
            t.errors.append(f"round {i}: {str(e)[:300]}")
            say(f"  round {i}: probe error: {str(e)[:300]}")
        t.extra["rounds"] += 1


def probe_import(root: Path, rounds: int, rows: int) -> ProbeResult:
    t = Tally("crash_import")
    body = build_csv(rows)
    wal_full = 0

    def one(i: int) -> None:
        nonlocal wal_full
        for j, (label, mode, fraction) in enumerate(IMPORT_PLAN):
            r = import_round(root / f"r{i}k{j}", "crash", body, mode, wal_full, fraction)
            c = r.check
            t.extra["kills"] += 1
            t.result.sent += rows
            if t.result.rss_before_kb is None:
                t.result.rss_before_kb = r.rss_before_kb
            t.result.rss_after_kb = r.rss_after_kb
            stored = c.db_devices
            if r.kill.status == 201:
                assert t.result.valid_sent is not None and t.result.valid_answered is not None
                t.result.valid_sent += rows
                t.result.valid_answered += stored if stored == rows else 0
                if mode == "response" and not wal_full:
                    wal_full = r.wal_at_kill
            t.add("double", max(0, stored - rows))
            t.add("partial", int(stored not in (0, rows)))
            t.add("kills_in_tx", int(r.kill.phase == IN_TX))
            if (c.api_count, c.index_count, c.db_changes, c.db_audit) != (stored,) * 4:
                t.add("views_disagree")
            t.integrity(f"round {i} {label}", c.integrity, c.fk_violations)
            say(
                f"  import round {i} {label}: killed {r.kill.phase}"
                f"{f' (HTTP {r.kill.status})' if r.kill.status else ''}, WAL "
                f"+{r.kill.wal_growth / 1e6:.1f} MB -> {stored} of {rows} rows, "
                f"integrity {c.integrity!r}"
            )

    run_rounds(t, rounds, one)
    return t.finish(root)


def probe_codes(root: Path, rounds: int, devices: int) -> ProbeResult:
    t = Tally("crash_codes")

    def one(i: int) -> None:
        r = codes_round(root / f"r{i}", "crash", devices)
        if t.result.rss_before_kb is None:
            t.result.rss_before_kb = r.rss_before_kb
        t.result.rss_after_kb = r.rss_after_kb
        t.add("redeemed_after", int(r.redeemed == 200))
        for c in r.checks:
            t.extra["kills"] += 1
            export = c.label == "during export"
            if export:
                t.add("exports_killed")
                t.add("changed_by_export", int(c.landed != "none" or c.audit != c.audit_before))
            else:
                t.result.sent += devices
                t.add("kills_in_tx", int(c.kill.phase == IN_TX))
            if c.kill.status == 201:
                assert t.result.valid_sent is not None and t.result.valid_answered is not None
                t.result.valid_sent += devices
                t.result.valid_answered += c.as_answered or 0
            expected = c.audit_before + (devices if c.landed == "all" else 0)
            t.add("double", max(0, c.audit - expected))
            t.add("partial", int(c.landed == "partial" or c.generations != 1))
            t.add("audit_inconsistent", int(not c.audit_consistent))
            t.add("invalid_codes", c.devices - c.valid)
            if (c.api_awaiting, c.index_awaiting) != (devices, devices):
                t.add("views_disagree")
            if c.kill.phase == BEFORE_TX and c.landed != "none":
                t.add("landed_before_tx")
            t.integrity(f"round {i} {c.label}", c.integrity, c.fk_violations)
            say(
                f"  codes round {i} {c.label}: killed {c.kill.phase}"
                f"{f' (HTTP {c.kill.status})' if c.kill.status else ''}, WAL "
                f"+{c.kill.wal_growth / 1e6:.1f} MB -> {c.new} new, {c.old} old "
                f"({c.landed}), {c.valid} valid, integrity {c.integrity!r}"
            )

    run_rounds(t, rounds, one)
    return t.finish(root)


def probe_redeem(root: Path, rounds: int, devices: int) -> ProbeResult:
    t = Tally("crash_redeem")

    def one(i: int) -> None:
        kill_after = STORM_KILL_AFTER[i % len(STORM_KILL_AFTER)]
        r = storm_round(root / f"r{i}", "storm", devices, kill_after=kill_after)
        assert t.result.valid_sent is not None and t.result.valid_answered is not None
        t.extra["kills"] += 1
        t.result.sent += r.sent
        t.result.valid_sent += r.acked
        t.result.valid_answered += r.intact
        if t.result.rss_before_kb is None:
            t.result.rss_before_kb = r.rss_before_kb
        t.result.rss_after_kb = r.rss_after_kb
        t.add("double", len(r.double))
        t.add("response_lost", r.response_lost)
        t.add("not_committed", r.not_committed)
        t.add("unsent", r.unsent)
        t.add("completed_after_restart", r.completed)
        t.add("retries", r.retries)
        t.add("problems", len(r.unexpected) + len(r.inconsistent) + len(r.final_problems))
        t.add("other_source_not_refused", int(r.other_source not in (None, 409)))
        t.integrity(f"round {i} after the kill", r.integrity)
        t.integrity(f"round {i} at the end", r.final_integrity)
        for p in [*r.unexpected, *r.inconsistent, *r.final_problems]:
            t.errors.append(f"round {i}: {p}")
        say(
            f"  redeem round {i} (kill at {kill_after:.0%}): {r.sent} of {r.entries} entries "
            f"sent, {r.acked} acknowledged, {r.intact} intact, {len(r.lost)} lost, "
            f"{len(r.double)} double; {r.response_lost} responses lost, {r.not_committed} "
            f"uncommitted, {r.unsent} unsent; {r.completed} of {devices} provisioned after "
            f"the retries, integrity {r.integrity!r}/{r.final_integrity!r}"
        )

    run_rounds(t, rounds, one)
    return t.finish(root)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds per probe")
    parser.add_argument(
        "--probes", default=",".join(PROBES), help=f"comma-separated, of {', '.join(PROBES)}"
    )
    parser.add_argument("--import-rows", type=int, default=100_000, help="rows per import")
    parser.add_argument("--codes", type=int, default=100_000, help="devices per generation")
    parser.add_argument("--storm", type=int, default=1000, help="devices per redemption storm")
    parser.add_argument("--json", action="store_true", help="one JSON object per probe per line")
    args = parser.parse_args(argv)
    probes = [p.strip() for p in args.probes.split(",") if p.strip()]
    unknown = sorted(set(probes) - set(PROBES))
    if unknown:
        parser.error(f"unknown probes {unknown}")
    if min(args.rounds, args.import_rows, args.codes, args.storm) < 1:
        parser.error("--rounds and the sizes must be at least 1")

    results = []
    with tempfile.TemporaryDirectory(prefix="imprint-crash-bench-") as tmp:
        for probe in probes:
            root = Path(tmp) / probe
            say(f"{probe}: {args.rounds} rounds")
            if probe == "import":
                result = probe_import(root, args.rounds, args.import_rows)
            elif probe == "codes":
                result = probe_codes(root, args.rounds, args.codes)
            else:
                result = probe_redeem(root, args.rounds, args.storm)
            results.append(result)
            if args.json:
                print(json.dumps(result.as_json()), flush=True)
    if not args.json:
        print(table(results))
        print()
        for r in results:
            misses = r.misses()
            if r.extra["lost"] or r.extra["double"] or r.extra["partial"]:
                misses.append("lost, double or partial writes")
            if r.extra["integrity"] != "ok":
                misses.append("integrity check failed")
            print(f"{r.probe}: {json.dumps(r.extra)}")
            print(f"  {'MISS: ' + '; '.join(misses) if misses else 'PASS'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
