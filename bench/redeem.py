#!/usr/bin/env python3
"""Code entry: latency of one technician's redemption, and exactly-once under a 16-way race.

Starts the real server (`imprint serve`) on loopback with its shipped defaults (TLS on, a
self-signed certificate, `[log]` as shipped) except `[provision] rate_per_source` and
`burst_per_source`, raised out of reach: every entry here comes from 127.0.0.1, and the default
limit (2 per second per source) would measure the limiter, not the redemption. Registers
--devices devices, generates their codes over the API, then:

1. one POST /provision per device, one after the other, on one kept-alive HTTPS connection:
   p50, p99 and max latency from send to the whole answer, and the server's CPU time per entry;
2. --races rounds of 16 threads entering the same fresh code at once (each its own connection,
   released together by a barrier): how many got 200 (exactly one each round is right).

It never asserts; it prints a table, and with --json one JSON object per line with the keys
`operation`, `rows`, `p50_ms`, `p99_ms`, `max_ms`, `server_cpu_ms`, `successes`.

    .venv/bin/python bench/redeem.py [--devices 2000] [--races 10] [--json]
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from admin_bulk import (  # noqa: E402 - beside this file
    build_csv,
    cpu_seconds,
    free_port,
    imprint_cli,
)

TENANT = "bench"
RACERS = 16


def percentile(values: list[float], pct: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered), max(1, math.ceil(pct / 100 * len(ordered)))) - 1]


def connect(port: int) -> http.client.HTTPSConnection:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the server's own self-signed certificate, on loopback
    return http.client.HTTPSConnection("127.0.0.1", port, timeout=60, context=ctx)


def call(
    conn: http.client.HTTPSConnection,
    method: str,
    path: str,
    body: Any = None,
    token: str | None = None,
    content_type: str = "application/json",
) -> tuple[int, bytes]:
    headers = {"Content-Type": content_type}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    conn.request(method, path, body=data, headers=headers)
    resp = conn.getresponse()
    return resp.status, resp.read()


def write_config(state: Path, port: int) -> Path:
    cfg = state / "imprint.toml"
    cfg.write_text(
        '[store]\npath = "state/imprint.db"\n'
        f'[http]\nhost = "127.0.0.1"\nport = {port}\npublic_url = "https://127.0.0.1:{port}"\n'
        "[provision]\nrate_per_source = 1e9\nburst_per_source = 1e9\n",
        encoding="utf-8",
    )
    return cfg


def wait_ready(port: int, proc: subprocess.Popen[bytes], deadline_s: float = 60.0) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before it was ready")
        try:
            conn = connect(port)
            try:
                if call(conn, "GET", "/readyz")[0] == 200:
                    return
            finally:
                conn.close()
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"server not ready within {deadline_s} s")


def issue_codes(port: int, token: str, macs: list[str] | None) -> dict[str, str]:
    conn = connect(port)
    try:
        body: dict[str, Any] = {"macs": macs} if macs else {"all_awaiting_activation": True}
        status, raw = call(
            conn, "POST", f"/api/v1/tenants/{TENANT}/verification-codes", body, token
        )
        if status != 201:
            raise RuntimeError(f"codes: HTTP {status} {raw[:200]!r}")
        return {c["mac"]: c["code"] for c in json.loads(raw)}
    finally:
        conn.close()


def race(port: int, mac: str, code: str) -> int:
    """16 entries of one code at once; how many succeeded."""
    barrier = threading.Barrier(RACERS)
    statuses: list[int] = []
    lock = threading.Lock()
    conns = [connect(port) for _ in range(RACERS)]
    for c in conns:
        c.connect()

    def one(conn: http.client.HTTPSConnection) -> None:
        barrier.wait()
        status, _ = call(conn, "POST", "/provision", {"mac": mac, "code": code})
        with lock:
            statuses.append(status)

    threads = [threading.Thread(target=one, args=(c,)) for c in conns]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for c in conns:
        c.close()
    return sum(1 for s in statuses if s == 200)


def run(n: int, races: int, cli: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="imprint-bench-redeem-") as tmp:
        state = Path(tmp)
        port = free_port()
        cfg = write_config(state, port)
        subprocess.run(
            [str(cli), "db", "init", "--config", str(cfg)], check=True, capture_output=True
        )
        token = subprocess.run(
            [str(cli), "tokens", "create", "--role", "operator", "--config", str(cfg)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        log = (state / "server.log").open("wb")
        proc = subprocess.Popen(
            [str(cli), "serve", "--config", str(cfg)], stdout=log, stderr=subprocess.STDOUT
        )
        try:
            wait_ready(port, proc)
            conn = connect(port)
            status, raw = call(conn, "POST", "/api/v1/tenants", {"id": TENANT, "name": "B"}, token)
            if status != 201:
                raise RuntimeError(f"tenant: HTTP {status} {raw[:200]!r}")
            csv = build_csv(n + races)
            status, raw = call(
                conn, "POST", f"/api/v1/tenants/{TENANT}/devices/import", csv, token, "text/csv"
            )
            if status != 201:
                raise RuntimeError(f"import: HTTP {status} {raw[:200]!r}")
            conn.close()
            codes = issue_codes(port, token, None)
            macs = sorted(codes)
            single, racing = macs[:n], macs[n : n + races]

            conn = connect(port)
            latencies: list[float] = []
            ok = 0
            c0 = cpu_seconds(proc.pid)
            for mac in single:
                t0 = time.perf_counter()
                status, _ = call(conn, "POST", "/provision", {"mac": mac, "code": codes[mac]})
                latencies.append((time.perf_counter() - t0) * 1000)
                ok += status == 200
            cpu = cpu_seconds(proc.pid) - c0
            conn.close()
            rows.append(
                {
                    "operation": "redeem (one at a time)",
                    "rows": n,
                    "p50_ms": round(percentile(latencies, 50), 3),
                    "p99_ms": round(percentile(latencies, 99), 3),
                    "max_ms": round(max(latencies), 3),
                    "server_cpu_ms": round(cpu * 1000 / max(n, 1), 3),
                    "successes": ok,
                }
            )
            wins = [race(port, mac, codes[mac]) for mac in racing]
            rows.append(
                {
                    "operation": f"redeem race ({RACERS} entries of one code)",
                    "rows": races,
                    "p50_ms": None,
                    "p99_ms": None,
                    "max_ms": None,
                    "server_cpu_ms": None,
                    "successes": wins,
                }
            )
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            log.close()
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=2000, help="redemptions one at a time")
    ap.add_argument("--races", type=int, default=10, help="rounds of 16 entries of one code")
    ap.add_argument("--json", action="store_true", help="one JSON object per line")
    ap.add_argument("--imprint", type=Path, help="the imprint command (default: this venv's)")
    args = ap.parse_args(argv)
    rows = run(args.devices, args.races, args.imprint or imprint_cli())
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return 0
    for row in rows:
        if row["p50_ms"] is not None:
            print(
                f"{row['operation']}: {row['rows']} entries, {row['successes']} succeeded, "
                f"p50 {row['p50_ms']:.2f} ms, p99 {row['p99_ms']:.2f} ms, max {row['max_ms']:.2f} ms, "
                f"server CPU {row['server_cpu_ms']:.2f} ms per entry"
            )
        else:
            exact = sum(1 for w in row["successes"] if w == 1)
            print(
                f"{row['operation']}: {row['rows']} rounds, successes per round "
                f"{row['successes']} ({exact} of {row['rows']} exactly one)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
