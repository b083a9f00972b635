#!/usr/bin/env python3
"""Open-loop DHCPINFORM load generator: sends INFORMs at a fixed rate, matches ACKs by xid.

Runs inside a client network namespace (bench/dhcp/run.py starts it with `ip netns exec`) and
prints one JSON object: sent, received, drops, latency percentiles. Standard library only and
its own packet encoder, so it shares no code (and no bugs) with the server under test.

Each INFORM is what a Lync/Skype for Business phone sends (RFC 2131 §3.4, §4.3.5): ciaddr set
to the sender's address, option 60 `MS-UC-Client`, 43 in the parameter request list. The
server answers to ciaddr:68, where this generator listens. chaddr and option 61 cycle through
the MAC list, so a server that answers only registered MACs sees only registered ones.
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
import time

BOOTREQUEST, BOOTREPLY = 1, 2
DHCPACK, DHCPNAK, DHCPINFORM = 5, 6, 8
MAGIC = b"\x63\x82\x53\x63"
XID_OFFSET, CHADDR_OFFSET = 4, 28


def build_template(ciaddr: str, vendor_class: bytes, request: bytes) -> tuple[bytearray, int]:
    """An INFORM with zero xid/chaddr; returns it and the offset of option 61's MAC bytes."""
    header = struct.pack(
        "!BBBBIHH4s4s4s4s16s64s128s",
        BOOTREQUEST,
        1,  # htype ethernet
        6,  # hlen
        0,  # hops
        0,  # xid, patched per packet
        0,  # secs
        0,  # flags: unicast reply to ciaddr (RFC 2131 §4.4.3)
        socket.inet_aton(ciaddr),
        b"\0" * 4,
        b"\0" * 4,
        b"\0" * 4,
        b"\0" * 16,
        b"\0" * 64,
        b"\0" * 128,
    )
    options = bytes([53, 1, DHCPINFORM])
    client_id_at = len(header) + len(MAGIC) + len(options) + 3
    options += bytes([61, 7, 1]) + b"\0" * 6  # RFC 2132 §9.14: type 1 (ethernet) + MAC
    options += bytes([60, len(vendor_class)]) + vendor_class
    options += bytes([55, len(request)]) + request
    options += bytes([57, 2]) + struct.pack("!H", 1500)
    options += b"\xff"
    return bytearray(header + MAGIC + options), client_id_at


def reply_summary(data: bytes) -> tuple[int, int, bool] | None:
    """(xid, DHCP message type, has option 43) of a BOOTREPLY, or None if it is not one."""
    if len(data) < 244 or data[0] != BOOTREPLY or data[236:240] != MAGIC:
        return None
    xid = struct.unpack_from("!I", data, XID_OFFSET)[0]
    msg_type, has_43 = 0, False
    i = 240
    while i < len(data):
        code = data[i]
        if code == 255:
            break
        if code == 0:
            i += 1
            continue
        if i + 1 >= len(data):
            break
        length = data[i + 1]
        if code == 53 and length >= 1 and i + 2 < len(data):
            msg_type = data[i + 2]
        elif code == 43:
            has_43 = True
        i += 2 + length
    return xid, msg_type, has_43


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile of already sorted values."""
    if not values:
        return math.nan
    rank = max(1, math.ceil(pct / 100.0 * len(values)))
    return values[min(rank, len(values)) - 1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--server", required=True, help="server address (replies come from it)")
    ap.add_argument("--ciaddr", required=True, help="this namespace's address, put in ciaddr")
    ap.add_argument("--macs", required=True, help="file with one client MAC per line")
    ap.add_argument("--rate", type=float, required=True, help="INFORMs per second")
    ap.add_argument("--seconds", type=float, required=True, help="how long to send")
    ap.add_argument("--drain", type=float, default=1.0, help="wait for late replies (s)")
    ap.add_argument("--vendor-class", default="MS-UC-Client")
    ap.add_argument("--port", type=int, default=67, help="server port")
    ap.add_argument("--client-port", type=int, default=68, help="port replies come to")
    args = ap.parse_args(argv)

    with open(args.macs) as f:
        macs = [bytes.fromhex(line.strip().replace(":", "")) for line in f if line.strip()]
    if not macs:
        raise SystemExit("no MACs in " + args.macs)
    template, client_id_at = build_template(
        args.ciaddr, args.vendor_class.encode(), bytes([1, 3, 6, 15, 43, 66, 120])
    )
    total = int(args.rate * args.seconds)
    interval = 1.0 / args.rate

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 << 20)
    sock.bind((args.ciaddr, args.client_port))
    sock.setblocking(False)
    dest = (args.server, args.port)

    base_xid = int.from_bytes(os.urandom(4), "big") & 0x7FFF0000
    sent_at: dict[int, float] = {}
    latencies: list[float] = []
    acks = naks = other = with_43 = unmatched = duplicates = send_errors = 0
    clock = time.perf_counter

    def drain() -> None:
        nonlocal acks, naks, other, with_43, unmatched, duplicates
        while True:
            try:
                data = sock.recv(4096)
            except BlockingIOError:
                return
            now = clock()
            summary = reply_summary(data)
            if summary is None:
                other += 1
                continue
            xid, msg_type, has_43 = summary
            started = sent_at.pop(xid, None)
            if started is None:
                if base_xid <= xid < base_xid + total:
                    duplicates += 1
                else:
                    unmatched += 1
                continue
            if msg_type == DHCPACK:
                acks += 1
                with_43 += has_43
                latencies.append((now - started) * 1000.0)
            elif msg_type == DHCPNAK:
                naks += 1
            else:
                other += 1

    start = clock()
    sent = 0
    while sent < total:
        now = clock()
        due = start + sent * interval
        if now < due:
            select.select([sock], [], [], due - now)
            drain()
            continue
        # Catch up on every packet that is due: the schedule is open-loop, like perfdhcp -r.
        while sent < total and start + sent * interval <= now:
            xid = base_xid + sent
            mac = macs[sent % len(macs)]
            struct.pack_into("!I", template, XID_OFFSET, xid)
            template[CHADDR_OFFSET : CHADDR_OFFSET + 6] = mac
            template[client_id_at : client_id_at + 6] = mac
            sent_at[xid] = clock()
            try:
                sock.sendto(template, dest)
            except (BlockingIOError, OSError):
                send_errors += 1
            sent += 1
        drain()
    send_done = clock()
    deadline = send_done + args.drain
    while sent_at and clock() < deadline:
        select.select([sock], [], [], max(0.0, deadline - clock()))
        drain()
    sock.close()

    latencies.sort()
    duration = send_done - start
    result = {
        "target_rate": args.rate,
        "seconds": args.seconds,
        "sent": sent,
        "offered_rate": round(sent / duration, 1) if duration > 0 else 0.0,
        "received": acks,
        "naks": naks,
        "other": other,
        "unmatched": unmatched,
        "duplicates": duplicates,
        "send_errors": send_errors,
        "with_option_43": with_43,
        "drops": sent - acks,
        "drop_pct": round(100.0 * (sent - acks) / sent, 3) if sent else 100.0,
        "min_ms": round(latencies[0], 3) if latencies else None,
        "avg_ms": round(sum(latencies) / len(latencies), 3) if latencies else None,
        "p50_ms": round(percentile(latencies, 50), 3) if latencies else None,
        "p99_ms": round(percentile(latencies, 99), 3) if latencies else None,
        "max_ms": round(latencies[-1], 3) if latencies else None,
    }
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
