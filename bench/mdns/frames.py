#!/usr/bin/env python3
"""mDNS on the wire: answers per second and latency from a fresh querier set, frame capture on.

Runs the real `imprint serve` in the server namespace of a veth topology (tests/helpers/netns.py,
IPv6 on), `[mdns] interface = "eth0"`, the per-source limit raised out of reach, and --macs
registered MACs. A generator in the host namespace (this file run as `frames.py generate`)
writes Ethernet frames itself on an AF_PACKET socket: every query carries the next registered
MAC as its source address, so the server's MAC decision is made on a MAC it has not decided on
for --macs queries (no neighbour lookup exists on this path, and no cache can carry a decision
over). Queries are legacy unicast (RFC 6762 §6.7, ephemeral source port, a DNS ID each) to the
group, from the host's IPv4 address or its link-local IPv6 address; answers come back by unicast
to a UDP socket bound to that port, matched by ID for latency.

Per family and rate: the share answered, answers/s, p50/p99 latency, and the server's CPU time
per answer (/proc/PID/stat), which gives answers per CPU-second (the server is one asyncio
thread: one core). With --compare the same runs with `capture_frames = false` (all queries then
carry the host's own MAC, which is registered, and the MAC comes from the neighbour table): the
CPU time per answer of the two is the cost of the frame capture per query. Figures only, no
assertions; needs root (namespaces, AF_PACKET). See bench/mdns/README.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import select
import socket
import struct
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from server.config import LogSettings  # noqa: E402
from tests.helpers.netns import (  # noqa: E402 - the repo root must be on sys.path first
    SERVER_IP,
    Topology,
    bench_macs,
    netns_unavailable_reason,
)
from tests.helpers.server import ImprintServer  # noqa: E402

TENANT = "bench"
MDNS_GROUP4 = "224.0.0.251"
MDNS_GROUP6 = "ff02::fb"
DEFAULT_RATES = "5000,10000,20000,30000,40000"


def percentile(values: list[float], pct: float) -> float:
    if not values:
        return math.nan
    rank = max(1, math.ceil(pct / 100.0 * len(values)))
    return values[min(rank, len(values)) - 1]


# --------------------------------------------------------------------------------------------
# Generator: runs inside the host namespace


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def dns_query() -> bytes:
    """`_imprint._tcp.local` PTR, ID 0 (patched per frame), no RD: a legacy mDNS query."""
    qname = b"".join(bytes((len(p),)) + p for p in (b"_imprint", b"_tcp", b"local")) + b"\0"
    return struct.pack("!6H", 0, 0, 1, 0, 0, 0) + qname + struct.pack("!HH", 12, 1)


def frame_template(
    version: int, src_ip: str, dst_ip: str, sport: int, dst_mac: bytes
) -> tuple[bytearray, int, int]:
    """(frame with zero source MAC and ID, offset of the DNS ID, offset of the UDP checksum)."""
    payload = dns_query()
    udp_len = 8 + len(payload)
    if version == 4:
        src, dst = socket.inet_aton(src_ip), socket.inet_aton(dst_ip)
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + udp_len, 0, 0x4000, 255, 17, 0, src, dst)
        ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
        ethertype = 0x0800
    else:
        src, dst = (
            socket.inet_pton(socket.AF_INET6, src_ip),
            socket.inet_pton(socket.AF_INET6, dst_ip),
        )
        ip = struct.pack("!IHBB16s16s", 6 << 28, udp_len, 17, 255, src, dst)
        ethertype = 0x86DD
    udp = struct.pack("!HHHH", sport, 5353, udp_len, 0)
    eth = dst_mac + b"\0" * 6 + struct.pack("!H", ethertype)
    frame = bytearray(eth + ip + udp + payload)
    id_at = len(eth) + len(ip) + 8
    csum_at = len(eth) + len(ip) + 6
    return frame, id_at, csum_at


def generate(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="frames.py generate")
    ap.add_argument("--ifname", default="eth0")
    ap.add_argument("--family", type=int, choices=[4, 6], required=True)
    ap.add_argument("--source", required=True, help="this host's address (IPv6: link-local)")
    ap.add_argument("--macs", type=int, required=True, help="cycle through bench_macs(N)")
    ap.add_argument("--own-mac", action="store_true", help="every frame from this host's MAC")
    ap.add_argument("--rate", type=float, required=True)
    ap.add_argument("--seconds", type=float, required=True)
    ap.add_argument("--drain", type=float, default=1.0)
    args = ap.parse_args(argv)

    fam = socket.AF_INET if args.family == 4 else socket.AF_INET6
    ifindex = socket.if_nametoindex(args.ifname)
    rx = socket.socket(fam, socket.SOCK_DGRAM)
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    rx.bind((args.source, 0) if fam == socket.AF_INET else (args.source, 0, 0, ifindex))
    rx.setblocking(False)
    sport = rx.getsockname()[1]
    tx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    tx.bind((args.ifname, 0))
    own = tx.getsockname()[4]
    group = MDNS_GROUP4 if args.family == 4 else MDNS_GROUP6
    dst_mac = bytes.fromhex("01005e0000fb") if args.family == 4 else bytes.fromhex("3333000000fb")
    frame, id_at, csum_at = frame_template(args.family, args.source, group, sport, dst_mac)
    macs = [bytes.fromhex(m.replace(":", "")) for m in bench_macs(args.macs)]

    sent_at: dict[int, float] = {}
    latencies: list[float] = []
    sent = late = 0
    interval = 1.0 / args.rate
    start = time.monotonic()
    stop = start + args.seconds
    due = start

    def drain() -> None:
        nonlocal late
        while True:
            try:
                data = rx.recv(4096)
            except BlockingIOError:
                return
            if len(data) < 2:
                continue
            qid = int.from_bytes(data[:2], "big")
            t = sent_at.pop(qid, None)
            if t is None:
                late += 1
            else:
                latencies.append(time.monotonic() - t)

    while True:
        now = time.monotonic()
        if now >= stop:
            break
        while due <= now and due < stop:
            qid = sent % 65535 + 1
            frame[6:12] = own if args.own_mac else macs[sent % len(macs)]
            frame[id_at : id_at + 2] = qid.to_bytes(2, "big")
            if args.family == 6:
                # The IPv6 UDP checksum is mandatory; recompute it over the pseudo-header.
                frame[csum_at : csum_at + 2] = b"\0\0"
                udp = bytes(frame[54:])
                pseudo = bytes(frame[22:54]) + struct.pack("!IxxxB", len(udp), 17)
                frame[csum_at : csum_at + 2] = struct.pack("!H", _checksum(pseudo + udp) or 0xFFFF)
            try:
                tx.send(frame)
            except BlockingIOError:
                break
            sent_at[qid] = time.monotonic()
            sent += 1
            due += interval
        drain()
        wait = max(0.0, min(due, stop) - time.monotonic())
        if wait:
            select.select([rx], [], [], wait)
    elapsed = time.monotonic() - start
    end = time.monotonic() + args.drain
    while time.monotonic() < end:
        select.select([rx], [], [], 0.05)
        drain()
    latencies.sort()
    print(
        json.dumps(
            {
                "sent": sent,
                "answered": len(latencies),
                "elapsed": elapsed,
                "offered_per_s": sent / elapsed if elapsed else 0.0,
                "p50_ms": percentile(latencies, 50) * 1000,
                "p99_ms": percentile(latencies, 99) * 1000,
                "unmatched": late,
            }
        )
    )
    return 0


# --------------------------------------------------------------------------------------------
# Driver


@dataclass
class Step:
    mode: str  # "frames" or "neighbour"
    family: int
    rate: float
    sent: int
    answered: int
    answered_pct: float
    answers_per_s: float
    p50_ms: float
    p99_ms: float
    server_cpu_s: float | None
    cpu_us_per_answer: float | None
    answers_per_cpu_s: float | None


def cpu_seconds(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def link_local(tp: Topology, node: Any) -> str:
    out = tp.run(node, ["ip", "-6", "-o", "addr", "show", "dev", "eth0", "scope", "link"]).stdout
    return out.split("inet6 ", 1)[1].split("/", 1)[0]


def run_mode(mode: str, args: argparse.Namespace, workdir: Path) -> list[Step]:
    steps: list[Step] = []
    with Topology(hosts=1, ipv6=True) as tp:
        host = tp.hosts[0]
        overrides = {
            "http": {"port": 8443},
            "mdns": {
                "enabled": True,
                "interface": "eth0",
                "capture_frames": mode == "frames",
                "rate_per_source": 1e9,
                "burst_per_source": 1e9,
            },
            "log": {"level": args.log_level},
        }
        with ImprintServer(tp, tp.server, workdir / mode, overrides) as srv:
            srv.create_tenant(TENANT)
            srv.import_devices(TENANT, [*bench_macs(args.macs), host.mac])
            srv.start()
            assert srv.proc is not None
            pid = srv.proc.pid
            # The neighbour mode needs the host's MAC in the server's tables, both families.
            for target in (SERVER_IP, f"{link_local(tp, tp.server)}%eth0"):
                done = tp.run(host, ["busybox", "ping", "-c", "1", "-W", "2", target])
                if done.returncode != 0:
                    print(f"ping {target}: {done.stdout}{done.stderr}", file=sys.stderr)
            for family in args.families:
                source = host.ip if family == 4 else link_local(tp, host)
                for rate in args.rates:
                    before = cpu_seconds(pid)
                    done = tp.run(
                        host,
                        [sys.executable, str(Path(__file__).resolve()), "generate"]
                        + ["--family", str(family), "--source", source, "--macs", str(args.macs)]
                        + ["--rate", str(rate), "--seconds", str(args.seconds)]
                        + (["--own-mac"] if mode == "neighbour" else []),
                        timeout=args.seconds + 30,
                    )
                    after = cpu_seconds(pid)
                    if done.returncode != 0:
                        print(done.stderr[-2000:], file=sys.stderr)
                        continue
                    r = json.loads(done.stdout)
                    cpu = after - before if after is not None and before is not None else None
                    answered = int(r["answered"])
                    steps.append(
                        Step(
                            mode=mode,
                            family=family,
                            rate=rate,
                            sent=int(r["sent"]),
                            answered=answered,
                            answered_pct=100.0 * answered / r["sent"] if r["sent"] else 0.0,
                            answers_per_s=answered / r["elapsed"] if r["elapsed"] else 0.0,
                            p50_ms=r["p50_ms"],
                            p99_ms=r["p99_ms"],
                            server_cpu_s=cpu,
                            cpu_us_per_answer=cpu / answered * 1e6 if cpu and answered else None,
                            answers_per_cpu_s=answered / cpu if cpu else None,
                        )
                    )
                    s = steps[-1]
                    if not answered:
                        print(f"no answers; server log:\n{srv.log()[-1500:]}", file=sys.stderr)
                    print(
                        f"{mode:9} IPv{family} rate {rate:>7.0f}/s: answered {s.answered_pct:5.1f}% "
                        f"({s.answers_per_s:7.0f}/s) p50 {s.p50_ms:6.2f} ms p99 {s.p99_ms:6.2f} ms "
                        f"server CPU {s.cpu_us_per_answer or math.nan:6.1f} us/answer "
                        f"({s.answers_per_cpu_s or math.nan:7.0f} answers per CPU-second)",
                        flush=True,
                    )
            srv.stop()
    return steps


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["generate"]:
        return generate(argv[1:])
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--rates", default=DEFAULT_RATES, help="queries per second, comma list")
    ap.add_argument("--families", default="4,6", help="4, 6 or 4,6")
    ap.add_argument("--seconds", type=float, default=3.0, help="sending time per step")
    ap.add_argument("--macs", type=int, default=16384, help="registered MACs cycled through")
    ap.add_argument("--compare", action="store_true", help="also run with capture_frames off")
    ap.add_argument(
        "--log-level",
        default=LogSettings().level,  # the shipped default: measure what a user runs
        choices=["DEBUG", "INFO", "WARNING"],
        help="[log] level of the server (default: the shipped default, %(default)s)",
    )
    ap.add_argument("--json", type=Path, help="write every step as JSON here")
    args = ap.parse_args(argv)
    args.rates = [float(r) for r in args.rates.split(",")]
    args.families = [int(f) for f in args.families.split(",")]
    reason = netns_unavailable_reason()
    if reason is not None:
        print(f"frames.py: {reason}", file=sys.stderr)
        return 2
    print(f"load average before: {os.getloadavg()}; CPUs: {os.cpu_count()}", flush=True)
    steps: list[Step] = []
    with tempfile.TemporaryDirectory(prefix="imp-bench-mdns-") as tmp:
        for mode in ["frames", *(["neighbour"] if args.compare else [])]:
            steps.extend(run_mode(mode, args, Path(tmp)))
    summary = summarize(steps)
    for line in summary_lines(summary):
        print(line)
    if args.json:
        args.json.write_text(
            json.dumps({"steps": [asdict(s) for s in steps], "summary": summary}, indent=2)
        )
    return 0


def summarize(steps: list[Step]) -> list[dict[str, Any]]:
    """Per family: the highest rate answered in full (>= 99 %) with frame capture on, its
    answers/s and p99, and per rate the capture's cost per query (CPU us per answer with
    frames minus with the neighbour table, where --compare ran both)."""
    out: list[dict[str, Any]] = []
    for family in sorted({s.family for s in steps}):
        frames = {s.rate: s for s in steps if s.family == family and s.mode == "frames"}
        neigh = {s.rate: s for s in steps if s.family == family and s.mode == "neighbour"}
        full = [s for s in frames.values() if s.answered_pct >= 99.0]
        best = max(full, key=lambda s: s.rate) if full else None
        out.append(
            {
                "family": family,
                "max_rate_answered": best.rate if best else 0,
                "answers_per_s": best.answers_per_s if best else 0,
                "p99_ms": best.p99_ms if best else math.nan,
                "capture_cost_us": {
                    str(int(r)): frames[r].cpu_us_per_answer - neigh[r].cpu_us_per_answer
                    for r in sorted(frames)
                    if r in neigh
                },
            }
        )
    return out


def summary_lines(summary: list[dict[str, Any]]) -> list[str]:
    lines = []
    for item in summary:
        lines.append(
            f"IPv{item['family']}, frame capture on: every query answered (>= 99 %) up to "
            f"{item['max_rate_answered']:.0f}/s ({item['answers_per_s']:.0f} answers/s, "
            f"p99 {item['p99_ms']:.2f} ms)"
        )
        if item["capture_cost_us"]:
            costs = ", ".join(f"{r}/s {c:+.1f} us" for r, c in item["capture_cost_us"].items())
            lines.append(f"IPv{item['family']}, frame capture cost per query: {costs}")
    return lines


if __name__ == "__main__":
    sys.exit(main())
