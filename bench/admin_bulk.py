#!/usr/bin/env python3
"""Admin work at fleet scale: import, bulk codes, export and list pages of N devices.

For each fleet size (100,000 and 1,000,000 by default) it starts the real server (`imprint
serve`, shipped defaults but TLS off: loopback only) on a fresh temporary state dir and, over
HTTP, imports N devices from CSV, issues codes to all of them, exports them, then reads device
list pages: the REST API's first page, a cursor page from the middle, a search, and the admin
UI's devices page and its Next page. Per operation: wall time (request to last byte), the
server's CPU time, its peak RSS (VmHWM) so far, and the worst /healthz latency meanwhile (the
event loop DHCP and mDNS share). A page's figures are the worst of 5 requests. It never asserts:
each line says PASS or MISS against issue 16's targets.

    .venv/bin/python bench/admin_bulk.py [--devices 100000,1000000] [--json]

--json prints one JSON object per line and operation: devices (the fleet size), operation,
rows, wall_s, server_cpu_s, rss_mb, loop_stall_ms, target_s, verdict, detail.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from server.registry.model import encode_cursor  # noqa: E402  (a cursor from the middle)

TENANT = "bench"
ADMIN, ADMIN_PASSWORD = "bench-ops", "bench-password-1"
PAGE_TRIES = 5
TARGET_PAGE_S = 0.1  # a list page, API or UI
TARGET_STALL_MS = 50.0
TARGET_RSS_MB = 500.0  # at a million rows


def target_bulk_s(rows: int) -> float:
    """Issue 16: 100,000 rows in under 1 s; 1,000,000 rows (streamed) in under 10 s."""
    return 1.0 if rows <= 100_000 else 10.0


@dataclass
class Result:
    devices: int  # registered in the run (the fleet size)
    operation: str
    rows: int
    wall_s: float | None  # None: the operation failed
    server_cpu_s: float
    rss_mb: float
    loop_stall_ms: float
    target_s: float
    detail: str

    @property
    def verdict(self) -> str:
        if self.wall_s is None:
            return "FAIL"
        ok = self.wall_s < self.target_s and self.loop_stall_ms < TARGET_STALL_MS
        return "PASS" if ok else "MISS"

    def as_json(self) -> dict[str, Any]:
        return {
            "devices": self.devices,
            "operation": self.operation,
            "rows": self.rows,
            "wall_s": None if self.wall_s is None else round(self.wall_s, 4),
            "server_cpu_s": round(self.server_cpu_s, 4),
            "rss_mb": round(self.rss_mb, 1),
            "loop_stall_ms": round(self.loop_stall_ms, 1),
            "target_s": self.target_s,
            "verdict": self.verdict,
            "detail": self.detail,
        }


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
    cookies: dict[str, str] | None = None,
) -> tuple[int, bytes]:
    """One HTTP request on a fresh connection; returns (status, the whole body). Cookies the
    server sets are put into `cookies` when it is given."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    headers = {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if content_type:
        headers["Content-Type"] = content_type
    if cookies:
        headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in cookies.items())
    try:
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        if cookies is not None:
            for raw in resp.headers.get_all("Set-Cookie") or []:
                name, _, rest = raw.partition("=")
                cookies[name.strip()] = rest.split(";", 1)[0]
        return resp.status, resp.read()
    finally:
        conn.close()


def ui_login(port: int) -> dict[str, str]:
    """Sign in to the admin UI as a browser would: the login form's CSRF token, then the form."""
    jar: dict[str, str] = {}
    status, page = request(port, "GET", "/ui/login", cookies=jar)
    found = re.search(rb'name="csrf_token" value="([^"]*)"', page)
    if status != 200 or not found:
        raise RuntimeError(f"/ui/login: HTTP {status}, no CSRF token")
    form = urllib.parse.urlencode(
        {
            "username": ADMIN,
            "password": ADMIN_PASSWORD,
            "next": "/ui",
            "csrf_token": found.group(1).decode(),
        }
    ).encode()
    status, body = request(
        port,
        "POST",
        "/ui/login",
        body=form,
        content_type="application/x-www-form-urlencoded",
        cookies=jar,
    )
    if status != 303:
        raise RuntimeError(f"UI sign-in: HTTP {status} {body[:200]!r}")
    return jar


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


def run(n: int) -> list[Result]:
    cli = imprint_cli()
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="imprint-bench-") as tmp:
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
        subprocess.run(
            [str(cli), "admins", "create", "--username", ADMIN, "--password", ADMIN_PASSWORD]
            + ["--role", "operator", "--config", str(cfg)],
            check=True,
            capture_output=True,
        )
        log = (state / "server.log").open("wb")
        proc = subprocess.Popen(
            [str(cli), "serve", "--config", str(cfg)], stdout=log, stderr=subprocess.STDOUT
        )

        def record(
            op: str,
            rows: int,
            ok: bool,
            wall: float,
            cpu: float,
            stall: float,
            target: float,
            detail: str,
        ) -> None:
            rss = kib_to_mb(proc_status(proc.pid)["VmHWM"])
            results.append(
                Result(n, op, rows, wall if ok else None, cpu, rss, stall * 1000, target, detail)
            )

        def api(
            method: str, path: str, body: bytes | None = None, content_type: str | None = None
        ) -> tuple[int, bytes]:
            return request(port, method, path, token, body, content_type)

        def pages(op: str, fetch: Any, check: Any) -> None:
            """The worst of PAGE_TRIES reads of one page."""
            walls: list[float] = []
            cpu_total, stall_worst, ok, rows, detail = 0.0, 0.0, True, 0, ""
            for _ in range(PAGE_TRIES):
                wall, cpu, stall, (status, body) = timed(proc.pid, port, fetch)
                walls.append(wall)
                cpu_total += cpu
                stall_worst = max(stall_worst, stall)
                good, rows, detail = check(status, body)
                ok = ok and good
            walls.sort()
            record(
                op,
                rows,
                ok,
                walls[-1],
                cpu_total / PAGE_TRIES,
                stall_worst,
                TARGET_PAGE_S,
                f"median {walls[len(walls) // 2] * 1000:.1f} ms of {PAGE_TRIES}; {detail}",
            )

        try:
            wait_ready(port, proc)
            status, body = api(
                "POST",
                "/api/v1/tenants",
                json.dumps({"id": TENANT, "name": "Bench Ltd"}).encode(),
                "application/json",
            )
            if status != 201:
                raise RuntimeError(f"create tenant: HTTP {status} {body[:200]!r}")
            csv_body = build_csv(n)
            base = f"/api/v1/tenants/{TENANT}/devices"

            # Import: wall time until the 201 (the whole transaction has committed).
            wall, cpu, stall, (status, body) = timed(
                proc.pid, port, lambda: api("POST", f"{base}/import", csv_body, "text/csv")
            )
            ok = status == 201 and json.loads(body).get("created") == n
            record(
                "import",
                n,
                ok,
                wall,
                cpu,
                stall,
                target_bulk_s(n),
                f"HTTP {status}, CSV {len(csv_body) / 1e6:.1f} MB"
                + ("" if ok else f": {body[:200]!r}"),
            )

            # Codes for every device awaiting activation (the JSON answer lists them all).
            wall, cpu, stall, (status, body) = timed(
                proc.pid,
                port,
                lambda: api(
                    "POST",
                    f"/api/v1/tenants/{TENANT}/verification-codes",
                    json.dumps({"all_awaiting_activation": True}).encode(),
                    "application/json",
                ),
            )
            issued = len(json.loads(body)) if status == 201 else 0
            record(
                "codes",
                n,
                issued == n,
                wall,
                cpu,
                stall,
                target_bulk_s(n),
                f"HTTP {status}, {issued} codes, {len(body) / 1e6:.1f} MB",
            )

            # Export: the whole CSV read by the client.
            wall, cpu, stall, (status, body) = timed(
                proc.pid, port, lambda: api("GET", f"{base}/export.csv")
            )
            lines = body.decode("utf-8").splitlines() if status == 200 else []
            with_code = sum(1 for ln in lines[1:] if ln.split(",")[2])
            record(
                "export",
                n,
                len(lines) == n + 1 and with_code == n,
                wall,
                cpu,
                stall,
                target_bulk_s(n),
                f"HTTP {status}, {with_code} rows with a code, {len(body) / 1e6:.1f} MB",
            )

            def api_check(want_count: bool) -> Any:
                def check(status: int, body: bytes) -> tuple[bool, int, str]:
                    if status != 200:
                        return False, 0, f"HTTP {status} {body[:120]!r}"
                    page = json.loads(body)
                    rows = len(page["results"])
                    counted = page["count"] is not None
                    return rows > 0 and counted == want_count, rows, f"count {page['count']}"

                return check

            pages("api page: first", lambda: api("GET", f"{base}?limit=100"), api_check(True))
            middle = mac_of(n // 2)
            cursor = encode_cursor(middle)
            pages(
                "api page: cursor, middle",
                lambda: api("GET", f"{base}?limit=100&cursor={cursor}"),
                api_check(False),
            )
            q = urllib.parse.quote(f"Room {n // 3}")
            pages(
                "api search: first page",
                lambda: api("GET", f"{base}?limit=100&q={q}"),
                api_check(True),
            )

            jar = ui_login(port)
            ui_base = f"/ui/tenants/{TENANT}/devices"
            ui_next: list[str] = []

            def ui_check(status: int, body: bytes) -> tuple[bool, int, str]:
                rows = len(re.findall(rb'name="mac" value="', body))  # a checkbox per device
                found = re.search(rb'<a href="([^"]+)" rel="next">', body)
                if found and not ui_next:
                    ui_next.append(found.group(1).decode().replace("&amp;", "&"))
                return status == 200 and rows > 0, rows, f"HTTP {status}, {len(body) / 1e3:.0f} kB"

            pages(
                "ui devices page: first",
                lambda: request(port, "GET", ui_base, cookies=dict(jar)),
                ui_check,
            )
            if ui_next:
                nxt = ui_next[0]
                pages(
                    "ui devices page: next",
                    lambda: request(port, "GET", nxt, cookies=dict(jar)),
                    ui_check,
                )
            pages(
                "ui devices search",
                lambda: request(port, "GET", f"{ui_base}?q={q}", cookies=dict(jar)),
                ui_check,
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
    return results


def mac_of(i: int) -> str:
    b = i.to_bytes(4, "big")
    return f"02:00:{b[0]:02x}:{b[1]:02x}:{b[2]:02x}:{b[3]:02x}"


def table(results: list[Result]) -> str:
    head = (
        "devices",
        "operation",
        "rows",
        "wall s",
        "server CPU s",
        "peak RSS MB",
        "worst loop stall ms",
        "target s",
        "verdict",
        "detail",
    )
    rows = [head]
    for r in results:
        rows.append(
            (
                f"{r.devices:,}",
                r.operation,
                f"{r.rows:,}",
                "-" if r.wall_s is None else f"{r.wall_s:.3f}",
                f"{r.server_cpu_s:.3f}",
                f"{r.rss_mb:.0f}",
                f"{r.loop_stall_ms:.0f}",
                f"< {r.target_s:g}",
                r.verdict,
                r.detail,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(head) - 1)]
    out = []
    for i, row in enumerate(rows):
        out.append(
            "  ".join(c.ljust(w) for c, w in zip(row[:-1], widths, strict=True)) + "  " + row[-1]
        )
        if i == 0:
            out.append("  ".join("-" * w for w in widths) + "  ------")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--devices",
        default="100000,1000000",
        help="fleet sizes to run, comma-separated (default 100000,1000000)",
    )
    ap.add_argument("--json", action="store_true", help="one JSON object per line and operation")
    a = ap.parse_args(argv)
    try:
        sizes = [int(x) for x in a.devices.split(",") if x.strip()]
    except ValueError:
        ap.error(f"--devices: whole numbers separated by commas, got {a.devices!r}")
    if not sizes or any(not 1 <= n <= 2**32 for n in sizes):
        ap.error("--devices: each size must be between 1 and 2^32")
    results: list[Result] = []
    for n in sizes:
        got = run(n)
        results += got
        if a.json:
            for r in got:
                print(json.dumps(r.as_json()), flush=True)
    if not a.json:
        print(f"Imprint admin work at fleet scale: {', '.join(f'{n:,}' for n in sizes)} devices")
        print(table(results))
    # Misses are reported, not failed; only an operation that did not complete is an error.
    return 1 if any(r.verdict == "FAIL" for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
