#!/usr/bin/env python3
"""Slowloris against the real `imprint serve` (issue 17: "an idle or slow connection costs under
64 KB and is closed within the timeout").

Each probe starts a fresh `imprint serve` on a loopback port over a fresh SQLite file, at the
shipped defaults (TLS on with the self-signed certificate made at first start; `[http]`
head_timeout_s, keepalive_timeout_s, max_connections, max_connections_per_source as shipped),
opens N connections from 127.0.0.1 that hold on in one way, and waits for the server to close
them:

- `idle-tls`: the TLS handshake, then nothing (closed by the head timeout);
- `slow-head`: the handshake, part of a request head, then one more byte of it every
  `--drip-s` seconds (the classic slowloris drip; closed by the head timeout);
- `no-handshake`: a TCP connection that never starts TLS (closed by the TLS handshake timeout,
  which is the head timeout);
- `idle-keepalive`: one complete GET /healthz, then nothing (closed by the keep-alive timeout);
- `slow-body`: a complete head of `POST /ui/login` (public; the sign-in form is read whole
  before anything else) announcing a body of 1024 bytes, then one byte of body
  every `--drip-s` seconds (closed by the body deadline: the head timeout, then 500 bytes a
  second, server/web/limits.py). The probe waits up to `--body-wait` s (default: past the
  longest configured timeout) and reports how many are still open then.

For each: the server's VmRSS before and with all N open (per-connection cost = delta / N), how
long after its idle time began each connection was closed (median and max) against the
configured timeout, `GET /healthz` every 100 ms over a fresh connection meanwhile (p50, answered),
the worst event-loop stall from /metrics scraped before and after, connections refused by the
caps, tracebacks in the server log. It never asserts, sends only to loopback and stops by itself.

    .venv/bin/python bench/reliability/slowloris.py [--connections 250] [--probes idle-tls,slow-head]
        [--drip-s 5] [--body-wait 90] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import os
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from server.config import HttpSettings  # noqa: E402
from tests.helpers.proc import clean_env, free_port  # noqa: E402
from tests.helpers.reliability import (  # noqa: E402
    BUSY_HISTOGRAM,
    TRACEBACK,
    HealthzSampler,
    ProbeResult,
    count_tracebacks,
    lag_buckets,
    rss_kb,
    stall_between,
    table,
)
from tests.helpers.server import imprint_argv, parse_prometheus, to_toml, wait_until  # noqa: E402

PROBES = ("idle-tls", "slow-head", "no-handshake", "idle-keepalive", "slow-body")
DEFAULTS = HttpSettings()
HEAD_PART = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: slowloris\r\n"
BODY_LENGTH = 1024
BODY_HEAD = (
    b"POST /ui/login HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    b"Content-Type: application/x-www-form-urlencoded\r\n"
    b"Content-Length: " + str(BODY_LENGTH).encode() + b"\r\n\r\n"
)
SETTLE_S = 1.0  # after the last connection opened, before RSS is read


def _client_tls() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the server's own self-signed certificate, on loopback
    return ctx


class Server:
    """`imprint serve` on 127.0.0.1 over HTTPS, its store and log under `workdir`."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.log_path = workdir / "imprint-serve.log"
        self.config = workdir / "imprint.toml"
        self.config.write_text(
            to_toml(
                {
                    "store": {"path": str(workdir / "state" / "imprint.db")},
                    "http": {"host": "127.0.0.1", "port": self.port, "public_url": self.url},
                    "tls": {"enabled": True},
                    "log": {"level": "INFO", "format": "human"},
                }
            )
        )
        self.proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> Server:
        env = clean_env()  # this tree's `server` first, whatever editable install is around
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
        with open(self.log_path, "a") as log:
            self.proc = subprocess.Popen(
                [*imprint_argv(), "serve", "--config", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                text=True,
            )
        try:
            wait_until(lambda: self.get("/readyz")[0] == 200, 60, "imprint serve to be ready")
        except BaseException:
            self.stop()
            raise
        return self

    def get(self, path: str, timeout: float = 5.0) -> tuple[int, str]:
        assert self.proc is not None and self.proc.poll() is None, self.log()[-3000:]
        conn = http.client.HTTPSConnection(
            "127.0.0.1", self.port, timeout=timeout, context=_client_tls()
        )
        try:
            conn.request("GET", path)
            r = conn.getresponse()
            return r.status, r.read().decode()
        except OSError:
            return 0, ""
        finally:
            conn.close()

    def metrics(self) -> dict[Any, float]:
        status, text = self.get("/metrics")
        if status != 200:
            raise RuntimeError(f"/metrics answered {status}")
        return parse_prometheus(text)

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class Conn:
    opened: bool = False
    idle_since: float | None = None  # when the server's clock for it began
    closed_at: float | None = None
    settled: asyncio.Event = field(default_factory=asyncio.Event)  # idle, refused or closed


Opener = Callable[[Server, Conn, asyncio.Event, float], Awaitable[None]]


async def _until_closed(reader: asyncio.StreamReader, conn: Conn) -> None:
    with contextlib.suppress(OSError, ssl.SSLError, asyncio.IncompleteReadError):
        while await reader.read(65536):
            pass
    conn.closed_at = time.monotonic()


async def _drip(writer: asyncio.StreamWriter, data: bytes, every: float, conn: Conn) -> None:
    """One byte of `data` every `every` seconds (then the same byte again) until closed."""
    i = 0
    while conn.closed_at is None:
        await asyncio.sleep(every)
        if conn.closed_at is not None:
            return
        try:
            writer.write(data[i % len(data) : i % len(data) + 1])
            await writer.drain()
        except (OSError, RuntimeError, ssl.SSLError):
            return
        i += 1


async def _hold(
    srv: Server, conn: Conn, tls: bool, first: bytes, drip: bytes, every: float, answer: bool
) -> None:
    try:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", srv.port, ssl=_client_tls() if tls else None
        )
    except (OSError, ssl.SSLError):
        conn.settled.set()
        return  # refused (or reset) on arrival
    conn.opened = True
    try:
        if first:
            writer.write(first)
            await writer.drain()
        if answer:  # one request served: idle from its answer on
            await asyncio.wait_for(reader.readuntil(b"}"), 30)
        conn.idle_since = time.monotonic()
        conn.settled.set()
        dripping = asyncio.create_task(_drip(writer, drip, every, conn)) if drip else None
        await _until_closed(reader, conn)
        if dripping is not None:
            dripping.cancel()
    except (TimeoutError, OSError, ssl.SSLError, asyncio.IncompleteReadError):
        conn.closed_at = conn.closed_at or time.monotonic()
    finally:
        conn.settled.set()
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


def _probe_args(probe: str, drip_s: float) -> tuple[bool, bytes, bytes, bool, float]:
    """(tls, first bytes, bytes dripped, waits for an answer, the configured timeout)."""
    head, keepalive = DEFAULTS.head_timeout_s, DEFAULTS.keepalive_timeout_s
    if probe == "idle-tls":
        return True, b"", b"", False, head
    if probe == "slow-head":
        return True, HEAD_PART[:20], HEAD_PART[20:], False, head
    if probe == "no-handshake":
        return False, b"", b"", False, head
    if probe == "idle-keepalive":
        return True, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", b"", True, keepalive
    if probe == "slow-body":
        return True, BODY_HEAD, b"a", False, head  # the body deadline, at a drip's few bytes
    raise ValueError(probe)


async def _run_connections(
    srv: Server, probe: str, n: int, drip_s: float, wait_s: float, rss_open: list[int | None]
) -> list[Conn]:
    tls, first, drip, answer, _ = _probe_args(probe, drip_s)
    conns = [Conn() for _ in range(n)]
    gate = asyncio.Semaphore(50)  # opened 50 at a time: under the listen backlog

    async def one(c: Conn) -> None:
        async with gate:  # the next one opens once this one is in its idle state (or gone)
            task = asyncio.create_task(_hold(srv, c, tls, first, drip, drip_s, answer))
            await c.settled.wait()
        await task

    tasks = [asyncio.create_task(one(c)) for c in conns]
    # Every connection opened (or refused) and in its idle state: read RSS then.
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*(c.settled.wait() for c in conns)), 120)
    await asyncio.sleep(SETTLE_S)
    assert srv.proc is not None
    rss_open.append(rss_kb(srv.proc.pid))
    with contextlib.suppress(TimeoutError):  # those still open are reported as such
        await asyncio.wait_for(asyncio.gather(*tasks), wait_s)
    return conns


def run_probe(probe: str, n: int, drip_s: float, body_wait: float) -> ProbeResult:
    timeout = _probe_args(probe, drip_s)[4]
    wait_s = body_wait if probe == "slow-body" else timeout + 20
    with (
        tempfile.TemporaryDirectory(prefix=f"imprint-slowloris-{probe}-") as tmp,
        Server(Path(tmp)) as srv,
    ):
        assert srv.proc is not None
        time.sleep(1.0)  # past start-up work
        before = srv.metrics()
        rss_before = rss_kb(srv.proc.pid)
        rss_open: list[int | None] = []

        def healthz() -> int:
            return srv.get("/healthz")[0]

        with HealthzSampler(healthz) as sampler:
            conns = asyncio.run(_run_connections(srv, probe, n, drip_s, wait_s, rss_open))
        after = srv.metrics()
        rss_after = rss_kb(srv.proc.pid)
        worst, over = stall_between(lag_buckets(before), lag_buckets(after))
        busy = stall_between(
            lag_buckets(before, BUSY_HISTOGRAM), lag_buckets(after, BUSY_HISTOGRAM)
        )[0]
        crashed = srv.proc.poll() is not None
        srv.stop()  # what it logs while stopping counts too
        log_text = srv.log()
    if count_tracebacks(log_text):  # the first one, for whoever reads the report
        at = log_text.index(TRACEBACK)
        start = log_text.rfind("\n", 0, max(0, at - 1)) + 1
        print(f"{probe}: first traceback in the server log:", file=sys.stderr)
        print("\n".join(log_text[start:].splitlines()[:40]), file=sys.stderr)

    def counter(samples: dict[Any, float], name: str) -> float:
        return sum(v for (k, _), v in samples.items() if k == name)

    refused = counter(after, "imprint_http_connections_refused_total") - counter(
        before, "imprint_http_connections_refused_total"
    )
    head_timeouts = counter(after, "imprint_http_head_timeouts_total") - counter(
        before, "imprint_http_head_timeouts_total"
    )
    closed = [
        c.closed_at - c.idle_since
        for c in conns
        if c.closed_at is not None and c.idle_since is not None
    ]
    opened = sum(c.opened for c in conns)
    still_open = sum(c.opened and c.closed_at is None for c in conns)
    open_kb = rss_open[0] if rss_open else None
    per_conn = (
        round((open_kb - rss_before) / opened, 1)
        if open_kb is not None and rss_before is not None and opened
        else None
    )
    answered = len(sampler.times_ms) - sampler.misses
    return ProbeResult(
        probe=probe,
        sent=opened,
        valid_sent=len(sampler.times_ms),
        valid_answered=answered,
        worst_stall_ms=worst,
        worst_busy_stall_ms=busy,
        stalls_over_50ms=over,
        healthz_p50_ms=sampler.p50_ms,
        rss_before_kb=rss_before,
        rss_after_kb=rss_after,
        crashes=int(crashed),
        tracebacks=count_tracebacks(log_text),
        extra={
            "rss_open_kb": open_kb,
            "per_conn_kb": per_conn,
            "closed_after_s": {
                "median": round(statistics.median(closed), 1) if closed else None,
                "max": round(max(closed), 1) if closed else None,
            },
            "timeout_s": timeout,
            "still_open": still_open,
            "still_open_after_s": wait_s if still_open else None,
            "refused": int(refused),
            "head_timeouts": int(head_timeouts),
        },
    )


def extras_table(results: list[ProbeResult]) -> str:
    head = ("probe", "per_conn_kb", "closed median s", "closed max s", "timeout_s", "still_open")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        e = r.extra
        cells = (
            r.probe,
            e["per_conn_kb"],
            e["closed_after_s"]["median"],
            e["closed_after_s"]["max"],
            e["timeout_s"],
            e["still_open"]
            if not e["still_open"]
            else f"{e['still_open']} at {e['still_open_after_s']:g} s",
        )
        lines.append("| " + " | ".join("-" if c is None else str(c) for c in cells) + " |")
    lines.append("")
    lines.append(
        "refused by the caps: " + ", ".join(f"{r.probe} {r.extra['refused']}" for r in results)
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=250, help="connections per probe")
    parser.add_argument(
        "--probes", default=",".join(PROBES), help=f"comma-separated, of {', '.join(PROBES)}"
    )
    parser.add_argument(
        "--drip-s", type=float, default=5.0, help="seconds between dripped bytes (slow-*)"
    )
    parser.add_argument(
        "--body-wait",
        type=float,
        default=DEFAULTS.keepalive_timeout_s + 30,
        help="seconds slow-body waits for the server to close its connections",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per probe per line")
    args = parser.parse_args(argv)
    probes = [p.strip() for p in args.probes.split(",") if p.strip()]
    unknown = sorted(set(probes) - set(PROBES))
    if unknown or args.connections < 1:
        parser.error(f"unknown probes {unknown}" if unknown else "--connections must be 1 or more")
    results = []
    for probe in probes:
        result = run_probe(probe, args.connections, args.drip_s, args.body_wait)
        results.append(result)
        if args.json:
            print(json.dumps(result.as_json()), flush=True)
    if not args.json:
        print(table(results))
        print()
        print(extras_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
