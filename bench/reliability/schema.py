#!/usr/bin/env python3
"""Schemathesis over the whole API with many examples: the CI check of
tests/integration/api/test_schemathesis.py (20 examples per operation) at bench size.

Starts the real `imprint serve` on a loopback port over a fresh SQLite file, seeded as the test
seeds it (tenants, devices, codes, a provisioned device with a pending sign-in, a user), then for
each probe (caller) runs every operation of the server's own /api/v1/openapi.json through
schemathesis' examples, coverage and fuzzing phases, valid and invalid data, with the same checks
as the test: no 5xx, documented statuses, content types, headers and body schemas, errors in the
audience's format, and 401 without a valid token. Probes: `operator` (a valid operator token),
`no_auth`, `bad_token`. Derandomized: the same run every time for the same --examples.

It never asserts. It prints one line per probe (operations, requests sent, 5xx, distinct
violations, time), then every violation with a curl command that reproduces it; with --json,
one JSON object per probe per line with the keys `probe`, `operations`, `requests`,
`server_errors`, `violations` (the violations themselves go to stderr).

    .venv/bin/python bench/reliability/schema.py [--examples 500] [--probes operator,no_auth] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.helpers.schemaprobe import PROBES, SeededServer, run_probe  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--examples", type=int, default=500, help="fuzzing examples per operation and probe"
    )
    parser.add_argument(
        "--probes", default=",".join(PROBES), help=f"comma-separated, of {', '.join(PROBES)}"
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per probe per line")
    args = parser.parse_args(argv)
    probes = [p.strip() for p in args.probes.split(",") if p.strip()]
    unknown = sorted(set(probes) - set(PROBES))
    if unknown or args.examples < 1:
        parser.error(f"unknown probes {unknown}" if unknown else "--examples must be at least 1")

    with (
        tempfile.TemporaryDirectory(prefix="imprint-schema-bench-") as tmp,
        SeededServer(Path(tmp)) as srv,
    ):
        for probe in probes:
            report = run_probe(srv, probe, args.examples)
            s = report.summary()
            details = report.describe().split("\n", 1)[1:]
            if args.json:
                keys = ("probe", "operations", "requests", "server_errors", "violations")
                print(json.dumps({k: s[k] for k in keys}), flush=True)
                for text in details:
                    print(text, file=sys.stderr)
            else:
                print(
                    f"{probe:<10} operations {s['operations']:>3}  requests {s['requests']:>7}"
                    f"  5xx {s['server_errors']:>4}  violations {s['violations']:>3}"
                    f"  ({s['failed_requests']} failing requests)  {s['seconds']:>7.1f} s",
                    flush=True,
                )
                for text in details:
                    print(text)
        for line in srv.log().splitlines():
            if "unhandled error" in line:
                print(f"server log: {line}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
