#!/usr/bin/env python3
"""mDNS benchmark: legacy-unicast PTR queries answered per second and their latency, on loopback.

Starts the real server (`imprint serve --config FILE`, mDNS on 127.0.0.1:<free UDP port>, one
registered MAC that every bench source address stands for via `[mdns] static_neighbours`) and
drives it from a second process (this file run as `run.py generate ...`): an open-loop generator
that sends a dnslib-built PTR query for `_imprint._tcp.local` from ephemeral ports (RFC 6762
§6.7 legacy unicast) at a fixed rate, matches answers by DNS ID and measures their latency.

Two scenarios, each on a freshly started server:

* `limited`: the server's default per-source limit (`[mdns] rate_per_source = 1`,
  `burst_per_source = 8`). From one source address almost every query is dropped by the limiter;
  the bench reports answers against the limiter's budget, the server's rate-limited count (from
  /metrics) and what the kernel dropped before the server read it.
* `raised`: the limit raised out of reach (`rate_per_source = burst_per_source = 1e9`), so every
  query takes the answering path; the figure of merit is the highest rate with at most
  --max-loss-pct unanswered and the p99 latency there.

Every step uses its own source address (127.0.1.N), so each starts with a full token bucket.
Figures only, no assertions; loopback only; bounded by --budget seconds. See bench/mdns/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import queue
import select
import shlex
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
SERVICE = "_imprint._tcp.local"
MAC = "02:00:5e:00:01:01"
SERVER_HOST = "127.0.0.1"
PROBE_SOURCE = "127.0.0.2"  # readiness probe: its own token bucket
WARMUP_SOURCE = "127.0.0.3"
MAX_STEPS = 64  # source addresses 127.0.1.1 .. 127.0.1.64, one per step
MAX_ID = 65535  # DNS IDs 1..65535 per sender socket; 0 is never used
DEFAULT_LIMITED_RATES = "10,1000,10000,40000"
DEFAULT_RAISED_RATES = "1000,2000,5000,10000,20000,40000"


def step_source(n: int) -> str:
    """Source address of the n-th step (1-based) of a run."""
    return f"127.0.1.{n}"


# --------------------------------------------------------------------------------------------
# Shared helpers


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile of already sorted values (NaN when empty)."""
    if not values:
        return math.nan
    rank = max(1, math.ceil(pct / 100.0 * len(values)))
    return values[min(rank, len(values)) - 1]


def _proc_hex_ipv4(ip: str) -> str:
    # /proc/net/udp prints the network-order address as a native-endian 32-bit hex number.
    return f"{int.from_bytes(socket.inet_aton(ip), sys.byteorder):08X}"


def udp_socket_drops(endpoints: set[tuple[str, int]]) -> int | None:
    """Sum of the kernel's per-socket receive drops (/proc/net/udp) of the bound `endpoints`."""
    wanted = {f"{_proc_hex_ipv4(ip)}:{port:04X}" for ip, port in endpoints}
    try:
        lines = Path("/proc/net/udp").read_text().splitlines()[1:]
    except OSError:
        return None
    total, seen = 0, 0
    for line in lines:
        fields = line.split()
        if len(fields) >= 13 and fields[1] in wanted:
            total += int(fields[12])
            seen += 1
    return total if seen else None


def build_query() -> bytes:
    """The PTR query for our service type as dnslib packs it (ID patched per datagram)."""
    from dnslib import DNSRecord

    return bytes(DNSRecord.question(SERVICE, "PTR").pack())


def answer_problem(data: bytes, qid: int) -> str | None:
    """Why `data` is not a valid answer to our PTR query with `qid` (None if it is one)."""
    from dnslib import QTYPE, DNSRecord

    try:
        msg = DNSRecord.parse(data)
    except Exception as e:  # noqa: BLE001 - any parse failure is a bad answer, said as such
        return f"dnslib cannot parse it: {type(e).__name__}: {e}"
    if msg.header.id != qid:
        return f"ID {msg.header.id} != {qid}"
    if not msg.header.qr or msg.header.rcode != 0:
        return f"not a NOERROR response (qr={msg.header.qr} rcode={msg.header.rcode})"
    ptrs = [rr for rr in msg.rr if rr.rtype == QTYPE.PTR and str(rr.rname) == SERVICE + "."]
    if not ptrs:
        return "no PTR record for " + SERVICE
    if any(rr.ttl > 10 for rr in msg.rr):
        return "a legacy-unicast answer with TTL > 10 s (RFC 6762 §6.7)"
    return None


# --------------------------------------------------------------------------------------------
# The load generator (second process)


def generate(argv: list[str]) -> int:
    """Send queries open-loop at --rate for --seconds, print 'sending', 'sent', then JSON."""
    ap = argparse.ArgumentParser(prog="run.py generate")
    ap.add_argument("--server", default=SERVER_HOST)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--source", required=True, help="source address to bind the sockets to")
    ap.add_argument("--rate", type=float, required=True, help="queries per second")
    ap.add_argument("--seconds", type=float, required=True)
    ap.add_argument("--drain", type=float, default=1.0, help="wait this long for late answers")
    ap.add_argument("--sockets", type=int, default=4, help="sender sockets, round robin")
    args = ap.parse_args(argv)

    total = max(1, int(args.rate * args.seconds))
    # Each socket has its own ID space; no ID is reused within a step, so matching is exact.
    n = max(args.sockets, math.ceil(total / MAX_ID))
    template = bytearray(build_query())
    socks: list[socket.socket] = []
    sent_at: list[list[float]] = []
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        # A large receive buffer so answers wait for us instead of being dropped by our socket;
        # root may exceed net.core.rmem_max. Drops at our sockets are reported separately anyway.
        try:
            s.setsockopt(socket.SOL_SOCKET, getattr(socket, "SO_RCVBUFFORCE", 33), 16 << 20)
        except OSError:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 20)
        s.bind((args.source, 0))
        s.connect((args.server, args.port))
        s.setblocking(False)
        socks.append(s)
        sent_at.append([0.0] * (MAX_ID + 1))
    endpoints = {(args.source, s.getsockname()[1]) for s in socks}
    poller = select.epoll()
    index: dict[int, int] = {}
    for i, s in enumerate(socks):
        poller.register(s.fileno(), select.EPOLLIN)
        index[s.fileno()] = i

    clock = time.perf_counter
    latencies: list[float] = []
    reference: bytes | None = None  # an answer validated with dnslib, minus its ID
    problem: str | None = None
    counts = {"bad": 0, "unmatched": 0, "send_errors": 0, "refused": 0}

    def drain(events: list[tuple[int, int]]) -> None:
        nonlocal reference, problem
        for fd, _mask in events:
            i = index[fd]
            s, stamps = socks[i], sent_at[i]
            while True:
                try:
                    data = s.recv(4096)
                except BlockingIOError:
                    break
                except ConnectionRefusedError:  # ICMP port unreachable: the server is gone
                    counts["refused"] += 1
                    break
                now = clock()
                if len(data) < 12:
                    counts["bad"] += 1
                    continue
                qid = data[0] << 8 | data[1]
                started = stamps[qid]
                if started == 0.0:
                    counts["unmatched"] += 1  # not an ID we have outstanding (or a duplicate)
                    continue
                # Answers differ only in the ID: check the first one fully, the rest bytewise.
                if reference is None:
                    why = answer_problem(data, qid)
                    if why is not None:
                        counts["bad"] += 1
                        problem = problem or why
                        continue
                    reference = data[2:]
                elif data[2:] != reference:
                    why = answer_problem(data, qid)
                    if why is not None:
                        counts["bad"] += 1
                        problem = problem or why
                        continue
                stamps[qid] = 0.0
                latencies.append(now - started)

    interval = 1.0 / args.rate
    batch = 256  # at most this many sends before we read answers again
    print("sending", flush=True)
    cpu0 = time.process_time()
    start = clock()
    k = 0
    sent = 0
    while k < total:
        now = clock()
        due = min(total, int((now - start) * args.rate) + 1)
        if k >= due:
            wait = start + k * interval - now
            drain(poller.poll(max(0.0, wait)))
            continue
        stop = min(due, k + batch)
        # Open loop, like perfdhcp -r: every datagram that is due goes out, late ones at once.
        while k < stop:
            i = k % n
            qid = k // n + 1
            template[0] = qid >> 8
            template[1] = qid & 0xFF
            stamps = sent_at[i]
            stamps[qid] = clock()
            try:
                socks[i].send(template)
                sent += 1
            except OSError:
                stamps[qid] = 0.0
                counts["send_errors"] += 1
            k += 1
        drain(poller.poll(0))
    send_end = clock()
    cpu_send = time.process_time() - cpu0
    print("sent", flush=True)
    deadline = send_end + args.drain
    while len(latencies) < sent:
        left = deadline - clock()
        if left <= 0:
            break
        drain(poller.poll(left))
    own_drops = udp_socket_drops(endpoints)
    poller.close()
    for s in socks:
        s.close()

    latencies.sort()
    # The schedule spans `seconds` (the last datagram is due at (total-1)/rate); a generator
    # that fell behind took longer, which lowers its offered rate.
    send_secs = max(send_end - start, args.seconds)
    answered = len(latencies)

    def ms(v: float) -> float | None:
        return None if math.isnan(v) else round(v * 1000.0, 3)

    result = {
        "target_rate": args.rate,
        "seconds": args.seconds,
        "sockets": n,
        "source": args.source,
        "sent": sent,
        "send_seconds": round(send_secs, 4),
        "send_span": round(send_end - start, 4),  # first to last datagram, as sent
        "offered_rate": round(sent / send_secs, 1) if send_secs > 0 else 0.0,
        "answered": answered,
        "answered_rate": round(answered / send_secs, 1) if send_secs > 0 else 0.0,
        "lost": sent - answered,
        "loss_pct": round(100.0 * (sent - answered) / sent, 3) if sent else 100.0,
        "p50_ms": ms(percentile(latencies, 50)),
        "p99_ms": ms(percentile(latencies, 99)),
        "max_ms": ms(latencies[-1]) if latencies else None,
        "gen_cpu_pct": round(100.0 * cpu_send / send_secs, 1) if send_secs > 0 else None,
        "gen_socket_drops": own_drops,
        "answer_bytes": len(reference) + 2 if reference is not None else None,
        "problem": problem,
        **counts,
    }
    print(json.dumps(result), flush=True)
    return 0


# --------------------------------------------------------------------------------------------
# The server under test


def free_port(kind: int) -> int:
    """A port the kernel considers free on 127.0.0.1 right now (TCP or UDP)."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((SERVER_HOST, 0))
        return int(s.getsockname()[1])


class ServerError(Exception):
    """The server could not be set up or started; the message says why."""


class Server:
    """`imprint serve` with mDNS on loopback and one registered MAC."""

    def __init__(self, imprint: list[str], workdir: Path, log_level: str) -> None:
        self.imprint = imprint
        self.workdir = workdir
        self.log_level = log_level
        self.http_port = free_port(socket.SOCK_STREAM)
        self.mdns_port = free_port(socket.SOCK_DGRAM)
        self.proc: subprocess.Popen[bytes] | None = None
        self.config = workdir / "imprint.toml"
        self.log = workdir / "imprint-serve.log"

    def write_config(self, rate: float, burst: float) -> None:
        neighbours = [SERVER_HOST, PROBE_SOURCE, WARMUP_SOURCE]
        neighbours += [step_source(i) for i in range(1, MAX_STEPS + 1)]
        table = ", ".join(f'"{ip}" = "{MAC}"' for ip in neighbours)
        self.config.write_text(
            "\n".join(
                [
                    "[store]",
                    f'path = "{self.workdir / "state" / "imprint.db"}"',
                    "[http]",
                    f'host = "{SERVER_HOST}"',
                    f"port = {self.http_port}",
                    f'public_url = "https://{SERVER_HOST}:{self.http_port}"',
                    "[dhcp]",
                    "enabled = false",
                    "[mdns]",
                    "enabled = true",
                    f'host = "{SERVER_HOST}"',
                    f"port = {self.mdns_port}",
                    f"static_neighbours = {{ {table} }}",
                    f"rate_per_source = {rate!r}",
                    f"burst_per_source = {burst!r}",
                    "[log]",
                    f'level = "{self.log_level}"',
                ]
            )
            + "\n"
        )

    def cli(self, *args: str) -> None:
        done = subprocess.run(
            [*self.imprint, *args, "--config", str(self.config)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if done.returncode != 0:
            raise ServerError(
                f"`imprint {' '.join(args)}` failed ({done.returncode}): "
                f"{(done.stdout + done.stderr)[-1500:]}"
            )

    def register(self) -> None:
        self.cli("db", "init")
        self.cli("tenants", "create", "--id", "t", "--name", "T")
        self.cli("devices", "add", "--tenant", "t", "--mac", MAC)

    def start(self, timeout: float = 30.0) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [*self.imprint, "serve", "--config", str(self.config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        if not self._probe(timeout):
            raise ServerError(f"no mDNS answer within {timeout:.0f} s: {self.log_tail()}")

    def _probe(self, timeout: float) -> bool:
        """Wait until a query from PROBE_SOURCE gets a valid answer (the server is serving)."""
        query = bytearray(build_query())
        deadline = time.monotonic() + timeout
        qid = 0
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((PROBE_SOURCE, 0))
            while time.monotonic() < deadline:
                if self.proc is None or self.proc.poll() is not None:
                    return False
                qid += 1
                query[0:2] = qid.to_bytes(2, "big")
                s.sendto(query, (SERVER_HOST, self.mdns_port))
                ready, _, _ = select.select([s], [], [], 0.25)
                if ready:
                    data = s.recv(4096)
                    why = answer_problem(data, qid)
                    if why is None:
                        return True
                    raise ServerError(f"the probe got a bad answer: {why}")
        return False

    def cpu_seconds(self) -> float | None:
        """utime + stime of the server process (all threads) from /proc/<pid>/stat."""
        if self.proc is None:
            return None
        try:
            stat = Path(f"/proc/{self.proc.pid}/stat").read_text()
        except OSError:
            return None
        fields = stat.rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def socket_drops(self) -> int | None:
        return udp_socket_drops({(SERVER_HOST, self.mdns_port)})

    def metrics(self) -> dict[str, float]:
        """The server's mDNS counters from /metrics (empty if it cannot be read)."""
        cert = self.workdir / "state" / "imprint-tls.crt"
        try:
            ctx = ssl.create_default_context(cafile=str(cert))
            url = f"https://{SERVER_HOST}:{self.http_port}/metrics"
            with urllib.request.urlopen(url, context=ctx, timeout=5) as resp:  # noqa: S310
                text = resp.read().decode()
        except (OSError, ssl.SSLError, ValueError):
            return {}
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line.startswith("imprint_mdns_"):
                name, _, value = line.rpartition(" ")
                with contextlib.suppress(ValueError):
                    out[name] = float(value)
        return out

    def log_tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-1500:]
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        """Stop the server process we started (SIGTERM, then SIGKILL after 10 s)."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


# --------------------------------------------------------------------------------------------
# One step: the generator in a second process, server CPU sampled around its send phase


@dataclass
class Step:
    scenario: str
    target_rate: float
    seconds: float
    source: str
    gen: dict[str, Any]
    server_cpu_pct: float | None  # % of one core
    host_busy_pct: float | None  # % of all cores busy (anything: server, generator, others)
    server_received: float | None  # datagrams the server read (metrics delta)
    server_answered: float | None
    server_rate_limited: float | None
    server_socket_drops: int | None  # dropped by the kernel at the server's socket
    limiter_budget: float | None = None  # burst + rate * send span: tokens the source had
    verdict: str = ""
    notes: list[str] = field(default_factory=list)


def _reader(stream: Any, lines: queue.Queue[str | None]) -> None:
    for raw in stream:
        lines.put(raw.decode(errors="replace").rstrip("\n"))
    lines.put(None)


def _delta(after: dict[str, float], before: dict[str, float], key: str) -> float | None:
    if not after:
        return None
    return after.get(key, 0.0) - before.get(key, 0.0)


def run_step(
    server: Server,
    scenario: str,
    rate: float,
    seconds: float,
    source: str,
    drain: float,
    sockets: int,
) -> Step:
    """One rate for `seconds`; the generator is this file run as a subprocess."""
    before = server.metrics()
    drops0 = server.socket_drops()
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "generate",
        "--port",
        str(server.mdns_port),
        "--source",
        source,
        "--rate",
        str(rate),
        "--seconds",
        str(seconds),
        "--drain",
        str(drain),
        "--sockets",
        str(sockets),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    lines: queue.Queue[str | None] = queue.Queue()
    reader = threading.Thread(target=_reader, args=(proc.stdout, lines), daemon=True)
    reader.start()
    deadline = time.monotonic() + seconds + drain + 30
    cpu: dict[str, tuple[float | None, float]] = {}
    host: dict[str, tuple[int, int] | None] = {}
    result: dict[str, Any] = {}
    try:
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line is None:
                break
            if line in ("sending", "sent"):
                cpu[line] = (server.cpu_seconds(), time.monotonic())
                host[line] = host_cpu_ticks()
            elif line.startswith("{"):
                result = json.loads(line)
        proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    if not result:
        err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        raise RuntimeError(f"the generator gave no result ({proc.returncode}): {err[-1500:]}")
    after = server.metrics()
    drops1 = server.socket_drops()
    server_cpu = host_busy = None
    h0, h1 = host.get("sending"), host.get("sent")
    if h0 is not None and h1 is not None and h1[1] > h0[1]:
        host_busy = round(100.0 * (h1[0] - h0[0]) / (h1[1] - h0[1]), 1)
    if "sending" in cpu and "sent" in cpu:
        (c0, t0), (c1, t1) = cpu["sending"], cpu["sent"]
        if c0 is not None and c1 is not None and t1 > t0:
            server_cpu = round(100.0 * (c1 - c0) / (t1 - t0), 1)
    return Step(
        scenario=scenario,
        target_rate=rate,
        seconds=seconds,
        source=source,
        gen=result,
        server_cpu_pct=server_cpu,
        host_busy_pct=host_busy,
        server_received=_delta(after, before, "imprint_mdns_packets_received_total"),
        server_answered=_delta(after, before, 'imprint_mdns_answers_sent_total{kind="legacy"}'),
        server_rate_limited=_delta(
            after, before, 'imprint_mdns_packets_dropped_total{reason="MDNS_RATE_LIMITED"}'
        ),
        server_socket_drops=(drops1 - drops0)
        if drops0 is not None and drops1 is not None
        else None,
    )


def judge(step: Step, max_loss_pct: float, min_offered: float) -> None:
    """Set the verdict: PASS, FAIL (loss), or GEN (the generator could not offer the rate)."""
    g = step.gen
    if g["offered_rate"] < min_offered * step.target_rate:
        step.verdict = "GEN"
        step.notes.append(f"offered {g['offered_rate']:.0f}/s < {min_offered:.0%} of target")
    elif g["loss_pct"] <= max_loss_pct:
        step.verdict = "PASS"
    else:
        step.verdict = "FAIL"
    if g.get("gen_cpu_pct") is not None and g["gen_cpu_pct"] >= 90:
        step.notes.append(f"generator at {g['gen_cpu_pct']:.0f}% CPU")
    if g.get("gen_socket_drops"):
        step.notes.append(f"{g['gen_socket_drops']} answers dropped at the generator's sockets")
    for key in ("bad", "unmatched", "send_errors", "refused"):
        if g.get(key):
            step.notes.append(f"{key}={g[key]}")
    if g.get("problem"):
        step.notes.append(f"bad answer: {g['problem']}")


# --------------------------------------------------------------------------------------------
# Reporting


def _fmt(v: Any, spec: str = "") -> str:
    if v is None:
        return "-"
    return format(v, spec)


def print_limited(steps: list[Step]) -> None:
    print(
        "| target q/s | offered q/s | sent | answered | limiter budget | rate-limited (server) "
        "| kernel drops at server | p50 ms | p99 ms | server CPU % | generator CPU % "
        "| host busy % |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for s in steps:
        g = s.gen
        print(
            f"| {s.target_rate:.0f} | {g['offered_rate']:.0f} | {g['sent']} | {g['answered']} "
            f"| {_fmt(s.limiter_budget, '.1f')} | {_fmt(s.server_rate_limited, '.0f')} "
            f"| {_fmt(s.server_socket_drops)} | {_fmt(g['p50_ms'], '.3f')} "
            f"| {_fmt(g['p99_ms'], '.3f')} | {_fmt(s.server_cpu_pct, '.0f')} "
            f"| {_fmt(g['gen_cpu_pct'], '.0f')} | {_fmt(s.host_busy_pct, '.0f')} |"
        )
    for s in steps:
        if s.notes:
            print(f"  {s.target_rate:.0f} q/s: {'; '.join(s.notes)}")


def print_raised(steps: list[Step]) -> None:
    print(
        "| target q/s | offered q/s | answered q/s | loss % | p50 ms | p99 ms | max ms "
        "| kernel drops at server | answers sent (server) | server CPU % | generator CPU % "
        "| host busy % | verdict |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|:--|")
    for s in sorted(steps, key=lambda x: x.target_rate):
        g = s.gen
        print(
            f"| {s.target_rate:.0f} | {g['offered_rate']:.0f} | {g['answered_rate']:.0f} "
            f"| {g['loss_pct']:.2f} | {_fmt(g['p50_ms'], '.3f')} | {_fmt(g['p99_ms'], '.3f')} "
            f"| {_fmt(g['max_ms'], '.3f')} | {_fmt(s.server_socket_drops)} "
            f"| {_fmt(s.server_answered, '.0f')} | {_fmt(s.server_cpu_pct, '.0f')} "
            f"| {_fmt(g['gen_cpu_pct'], '.0f')} | {_fmt(s.host_busy_pct, '.0f')} | {s.verdict} |"
        )
    for s in sorted(steps, key=lambda x: x.target_rate):
        if s.notes:
            print(f"  {s.target_rate:.0f} q/s: {'; '.join(s.notes)}")


def host_cpu_ticks() -> tuple[int, int] | None:
    """(busy, total) jiffies of all CPUs from /proc/stat (busy = total - idle - iowait)."""
    try:
        first = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    except OSError:
        return None
    ticks = [int(x) for x in first[1:9]]  # user nice system idle iowait irq softirq steal
    return sum(ticks) - ticks[3] - ticks[4], sum(ticks)


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


# --------------------------------------------------------------------------------------------
# The run


class Budget:
    """Wall-clock budget for the whole run: a step starts only if it can finish in time."""

    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def allows(self, seconds: float) -> bool:
        return time.monotonic() + seconds <= self.end


def run_scenario(
    name: str, rates: list[float], args: argparse.Namespace, budget: Budget, workdir: Path
) -> tuple[list[Step], list[str]]:
    """Start a server for `name` (limited or raised), run its steps, stop the server."""
    limited = name == "limited"
    rate, burst = (1.0, 8.0) if limited else (1e9, 1e9)
    server = Server(args.imprint, workdir, args.log_level)
    server.write_config(rate, burst)
    server.register()
    steps: list[Step] = []
    skipped: list[str] = []
    step_cost = args.seconds + args.drain + 2.0  # + generator start and metrics scrapes
    n = 0
    try:
        server.start()
        print(
            f"\n## {name}: rate_per_source={rate:g} burst_per_source={burst:g} "
            f"(server pid {server.proc.pid if server.proc else '?'}, mDNS 127.0.0.1:"
            f"{server.mdns_port}, log level {args.log_level}, load average {loadavg()})",
            flush=True,
        )
        if args.warmup > 0 and budget.allows(args.warmup + args.drain + 1):
            # Unrecorded: fills the answer cache and the neighbour/on-link caches.
            run_step(server, name, rates[0], args.warmup, WARMUP_SOURCE, args.drain, args.sockets)

        def measure(r: float) -> Step | None:
            nonlocal n
            if not budget.allows(step_cost) or n >= MAX_STEPS:
                skipped.append(f"{r:.0f}")
                return None
            n += 1
            step = run_step(server, name, r, args.seconds, step_source(n), args.drain, args.sockets)
            if limited:
                # A fresh bucket holds `burst` tokens and regains `rate` per second of sending.
                # The server's clock runs a little behind ours under load, so this is +-1.
                step.limiter_budget = round(
                    min(step.gen["sent"], burst + rate * step.gen["send_span"]), 1
                )
            judge(step, args.max_loss_pct, args.min_offered)
            steps.append(step)
            g = step.gen
            print(
                f"  {r:>8.0f} q/s: offered {g['offered_rate']:.0f}/s, answered "
                f"{g['answered']}/{g['sent']}, p99 {_fmt(g['p99_ms'], '.3f')} ms, server CPU "
                f"{_fmt(step.server_cpu_pct, '.0f')}%, generator CPU "
                f"{_fmt(g['gen_cpu_pct'], '.0f')}%" + ("" if limited else f" -> {step.verdict}"),
                flush=True,
            )
            return step

        if limited:
            for r in rates:
                measure(r)
        else:
            last_pass: float | None = None
            first_fail: float | None = None
            for r in rates:
                step = measure(r)
                if step is None:
                    break
                if step.verdict == "PASS":
                    last_pass = r
                else:
                    first_fail = r
                    break
            lo = last_pass
            hi = first_fail
            for _ in range(args.refine):
                # Bisect between the last pass and the first failure, to 100 q/s.
                if lo is None or hi is None or hi - lo <= 100:
                    break
                mid = float(round((lo + hi) / 2 / 100) * 100)
                step = measure(mid)
                if step is None:
                    break
                if step.verdict == "PASS":
                    lo = mid
                else:
                    hi = mid
    finally:
        server.stop()
    return steps, skipped


def summarize_raised(steps: list[Step]) -> str:
    passed = [s for s in steps if s.verdict == "PASS"]
    if not passed:
        return "no step passed"
    best = max(passed, key=lambda s: s.target_rate)
    higher = [s for s in steps if s.target_rate > best.target_rate]
    plus = "" if higher else "+"
    gen = [s for s in higher if s.verdict == "GEN"]
    note = " (the step above was generator-bound, not a server failure)" if gen else ""
    g = best.gen
    return (
        f"highest rate with <= 1 % loss: {best.target_rate:.0f}{plus} q/s target"
        f"{' (every step passed: the limit lies beyond the range)' if plus else ''}, "
        f"{g['answered_rate']:.0f} answered/s, loss {g['loss_pct']:.2f} %, "
        f"p50 {_fmt(g['p50_ms'], '.3f')} ms, p99 {_fmt(g['p99_ms'], '.3f')} ms, "
        f"server CPU {_fmt(best.server_cpu_pct, '.0f')} %{note}"
    )


def parse_rates(text: str) -> list[float]:
    rates = [float(x) for x in text.split(",") if x.strip()]
    if not rates or any(r <= 0 for r in rates):
        raise argparse.ArgumentTypeError("rates must be positive numbers, comma separated")
    return rates


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["generate"]:
        return generate(argv[1:])
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--scenarios", default="limited,raised", help="comma list of: limited, raised")
    ap.add_argument("--limited-rates", type=parse_rates, default=DEFAULT_LIMITED_RATES)
    ap.add_argument("--rates", type=parse_rates, default=DEFAULT_RAISED_RATES)
    ap.add_argument("--seconds", type=float, default=3.0, help="sending time per step")
    ap.add_argument("--drain", type=float, default=1.0, help="wait for late answers (s)")
    ap.add_argument("--warmup", type=float, default=1.0, help="unrecorded first step (s)")
    ap.add_argument("--refine", type=int, default=3, help="bisection steps after a failure")
    ap.add_argument("--sockets", type=int, default=4, help="generator sender sockets")
    ap.add_argument("--max-loss-pct", type=float, default=1.0)
    ap.add_argument("--min-offered", type=float, default=0.95, help="fraction of the target")
    # Default: the shipped [log] level (server/config.py LogSettings), so the figures describe
    # what a user runs; WARNING is an override and must be named when quoted.
    ap.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING"])
    ap.add_argument("--budget", type=float, default=110.0, help="wall-clock limit (s)")
    ap.add_argument(
        "--imprint",
        type=shlex.split,
        default=shlex.quote(str(REPO / ".venv" / "bin" / "imprint")),
        help="command that runs the imprint CLI (default: the repo's .venv console script)",
    )
    ap.add_argument("--json", type=Path, help="write every step here")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    args = ap.parse_args(argv)
    scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    if not scenarios or any(s not in ("limited", "raised") for s in scenarios):
        ap.error("--scenarios takes limited and/or raised")
    if shutil.which(args.imprint[0]) is None:
        print(f"{args.imprint[0]} not found (pip install -e . in .venv)", file=sys.stderr)
        return 2

    budget = Budget(args.budget)
    version = subprocess.run(
        [*args.imprint, "--version"], capture_output=True, text=True, timeout=60
    )
    print(
        f"# mDNS bench: {(version.stdout or version.stderr).strip()}, {os.cpu_count()} CPUs, "
        f"load average {loadavg()}; {args.seconds:g} s per step, drain {args.drain:g} s, "
        f"{args.sockets} generator sockets, legacy-unicast PTR {SERVICE} from ephemeral ports",
        flush=True,
    )
    results: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()}}
    summaries: list[str] = []
    for name in scenarios:
        workdir = Path(tempfile.mkdtemp(prefix=f"imprint-mdns-bench-{name}-"))
        try:
            rates = args.limited_rates if name == "limited" else args.rates
            try:
                steps, skipped = run_scenario(name, rates, args, budget, workdir)
            except (ServerError, RuntimeError, subprocess.SubprocessError) as e:
                print(f"{name}: {e}", file=sys.stderr)
                results[name] = {"error": str(e)}
                continue
            sizes = {s.gen["answer_bytes"] for s in steps if s.gen.get("answer_bytes")}
            print(f"\n(answer size: {', '.join(map(str, sorted(sizes))) or '-'} bytes)")
            if name == "limited":
                print_limited(steps)
                answered = sum(s.gen["answered"] for s in steps)
                sent = sum(s.gen["sent"] for s in steps)
                summaries.append(
                    f"limited: {answered} of {sent} queries answered over {len(steps)} steps, "
                    f"each from one fresh source (limiter: burst 8 + 1/s); rate-limited by the "
                    f"server: "
                    f"{_fmt(sum(s.server_rate_limited or 0 for s in steps), '.0f')}"
                )
            else:
                print_raised(steps)
                summaries.append("raised: " + summarize_raised(steps))
            if skipped:
                print(f"  skipped for the time budget: {', '.join(skipped)} q/s")
            results[name] = {"steps": [asdict(s) for s in steps], "skipped": skipped}
        finally:
            if args.keep:
                print(f"  work directory kept: {workdir}")
            else:
                shutil.rmtree(workdir, ignore_errors=True)
    print("\n## summary")
    for line in summaries:
        print(line)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
