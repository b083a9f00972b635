#!/usr/bin/env python3
"""Admin bulk benchmark: import, bulk code generation and export of N devices over the REST API.

Starts the real server (`imprint serve`) as a subprocess on loopback with a fresh temporary state
dir, drives it over plain HTTP (TLS off: loopback only) and reports wall time per operation and
the server's peak RSS (VmHWM) against the targets. It never asserts: it reports PASS/MISS per line.

    .venv/bin/python bench/admin_bulk.py [--devices 100000] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TARGET_SECONDS = 5.0
TARGET_RSS_MB = 300.0
TENANT = "bench"


@dataclass
class Result:
    name: str
    value: float | None  # None: the operation failed
    unit: str
    target: float
    detail: str

    @property
    def verdict(self) -> str:
        if self.value is None:
            return "FAIL"
        return "PASS" if self.value < self.target else "MISS"


def imprint_cli() -> Path:
    """The `imprint` console script installed next to this interpreter."""
    exe = Path(sys.executable).with_name("imprint")
    if not exe.exists():
        raise SystemExit(f"{exe} not found: install the package (pip install -e .) in this venv")
    return exe


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def write_config(state: Path, port: int) -> Path:
    cfg = state / "imprint.toml"
    cfg.write_text(
        '[store]\npath = "state/imprint.db"\n'
        f'[http]\nhost = "127.0.0.1"\nport = {port}\n'
        # Plain HTTP on loopback only: the bench measures the server, not TLS. `[log]` as
        # shipped (INFO): the figures are what a user's server does.
        "[tls]\nenabled = false\n",
        encoding="utf-8",
    )
    return cfg


def build_csv(n: int) -> bytes:
    """N rows of locally administered, unique MACs (02:00:xx:xx:xx:xx)."""
    lines = ["MAC ID,Location"]
    for i in range(n):
        b = i.to_bytes(4, "big")
        lines.append(f"02:00:{b[0]:02x}:{b[1]:02x}:{b[2]:02x}:{b[3]:02x},Room {i}")
    return ("\r\n".join(lines) + "\r\n").encode()


def request(
    port: int,
    method: str,
    path: str,
    token: str | None = None,
    body: bytes | None = None,
    content_type: str | None = None,
    timeout: float = 600.0,
) -> tuple[int, bytes]:
    """One HTTP request on a fresh connection; returns (status, the whole body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    headers = {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if content_type:
        headers["Content-Type"] = content_type
    try:
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def wait_ready(port: int, proc: subprocess.Popen[bytes], deadline_s: float = 60.0) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before it was ready")
        try:
            status, _ = request(port, "GET", "/readyz", timeout=2)
            if status == 200:
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"server not ready within {deadline_s} s")


def proc_status(pid: int) -> dict[str, str]:
    out: dict[str, str] = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            k, _, v = line.partition(":")
            out[k] = v.strip()
    return out


def kib_to_mb(field: str) -> float:
    return int(field.split()[0]) * 1024 / 1e6


def cpu_seconds(pid: int) -> float:
    """utime + stime of the server process so far (to split wall time into server vs waiting)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class StallProbe:
    """GET /healthz every 20 ms on another thread; the slowest answer shows how long the server's
    event loop (which also runs the DHCP/mDNS responders) was blocked during an operation."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.worst = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            t0 = time.perf_counter()
            with contextlib.suppress(OSError):
                request(self.port, "GET", "/healthz", timeout=60)
            self.worst = max(self.worst, time.perf_counter() - t0)
            self._stop.wait(0.02)

    def __enter__(self) -> StallProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)


def timed(pid: int, port: int, fn: Any) -> tuple[float, float, float, Any]:
    """(wall s, server CPU s, worst /healthz latency s, fn's result)."""
    with StallProbe(port) as probe:
        c0, t0 = cpu_seconds(pid), time.perf_counter()
        out = fn()
        wall, cpu = time.perf_counter() - t0, cpu_seconds(pid) - c0
    return wall, cpu, probe.worst, out


def run(n: int) -> tuple[list[Result], dict[str, Any]]:
    cli = imprint_cli()
    results: list[Result] = []
    info: dict[str, Any] = {"devices": n}
    with tempfile.TemporaryDirectory(prefix="imprint-bench-") as tmp:
        state = Path(tmp)
        port = free_port()
        cfg = write_config(state, port)
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
            info["idle_rss_mb"] = round(kib_to_mb(proc_status(proc.pid)["VmRSS"]), 1)
            status, body = request(
                port,
                "POST",
                "/api/v1/tenants",
                token,
                json.dumps({"id": TENANT, "name": "Bench Ltd"}).encode(),
                "application/json",
            )
            if status != 201:
                raise RuntimeError(f"create tenant: HTTP {status} {body[:200]!r}")
            csv_body = build_csv(n)
            info["csv_bytes"] = len(csv_body)

            # 1. import: wall time until the 201 (the whole transaction has committed).
            wall, cpu, stall, (status, body) = timed(
                proc.pid,
                port,
                lambda: request(
                    port,
                    "POST",
                    f"/api/v1/tenants/{TENANT}/devices/import",
                    token,
                    csv_body,
                    "text/csv",
                ),
            )
            ok = status == 201 and json.loads(body).get("created") == n
            results.append(
                Result(
                    "import",
                    wall if ok else None,
                    "s",
                    TARGET_SECONDS,
                    f"HTTP {status}, server CPU {cpu:.2f} s, loop stall {stall:.2f} s"
                    + ("" if ok else f": {body[:200]!r}"),
                )
            )

            # 2. bulk code generation for every device awaiting activation.
            wall, cpu, stall, (status, body) = timed(
                proc.pid,
                port,
                lambda: request(
                    port,
                    "POST",
                    f"/api/v1/tenants/{TENANT}/verification-codes",
                    token,
                    json.dumps({"all_awaiting_activation": True}).encode(),
                    "application/json",
                ),
            )
            issued = len(json.loads(body)) if status == 201 else 0
            ok = issued == n
            results.append(
                Result(
                    "codes (all_awaiting_activation)",
                    wall if ok else None,
                    "s",
                    TARGET_SECONDS,
                    f"HTTP {status}, {issued} codes, {len(body) / 1e6:.1f} MB, server CPU {cpu:.2f} s, loop stall {stall:.2f} s",
                )
            )

            # 3. export: the whole CSV read by the client.
            wall, cpu, stall, (status, body) = timed(
                proc.pid,
                port,
                lambda: request(port, "GET", f"/api/v1/tenants/{TENANT}/devices/export.csv", token),
            )
            lines = body.decode("utf-8").splitlines() if status == 200 else []
            with_code = sum(1 for ln in lines[1:] if ln.split(",")[2])
            ok = len(lines) == n + 1 and with_code == n
            results.append(
                Result(
                    "export.csv",
                    wall if ok else None,
                    "s",
                    TARGET_SECONDS,
                    f"HTTP {status}, {len(lines) - 1} rows ({with_code} with a code), "
                    f"{len(body) / 1e6:.1f} MB, server CPU {cpu:.2f} s, loop stall {stall:.2f} s",
                )
            )

            st = proc_status(proc.pid)
            results.append(
                Result(
                    "server peak RSS (VmHWM)",
                    kib_to_mb(st["VmHWM"]),
                    "MB",
                    TARGET_RSS_MB,
                    f"idle after start {info['idle_rss_mb']} MB, now {kib_to_mb(st['VmRSS']):.1f} MB",
                )
            )
            db = state / "state" / "imprint.db"
            info["db_mb"] = round(db.stat().st_size / 1e6, 1)
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            log.close()
    return results, info


def table(results: list[Result], info: dict[str, Any]) -> str:
    rows = [("metric", "value", "target", "verdict", "detail")]
    for r in results:
        value = "-" if r.value is None else f"{r.value:.2f} {r.unit}"
        rows.append((r.name, value, f"< {r.target:g} {r.unit}", r.verdict, r.detail))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    out = [
        f"Imprint admin bulk benchmark: {info['devices']} devices, "
        f"CSV {info.get('csv_bytes', 0) / 1e6:.1f} MB, DB after run {info.get('db_mb', '?')} MB"
    ]
    for i, row in enumerate(rows):
        out.append(
            "  ".join(c.ljust(w) for c, w in zip(row[:4], widths, strict=True)) + "  " + row[4]
        )
        if i == 0:
            out.append("  ".join("-" * w for w in widths) + "  ------")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--devices", type=int, default=100_000, help="devices to import (default 100000)"
    )
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    a = ap.parse_args(argv)
    if a.devices < 1 or a.devices > 2**32:
        ap.error("--devices must be between 1 and 2^32")
    results, info = run(a.devices)
    if a.json:
        json.dump(
            {
                **info,
                "results": [
                    {
                        "metric": r.name,
                        "value": None if r.value is None else round(r.value, 3),
                        "unit": r.unit,
                        "target": r.target,
                        "verdict": r.verdict,
                        "detail": r.detail,
                    }
                    for r in results
                ],
            },
            sys.stdout,
            indent=2,
        )
        print()
    else:
        print(table(results, info))
    # Misses are reported, not failed; only an operation that did not complete is an error.
    return 1 if any(r.verdict == "FAIL" for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
