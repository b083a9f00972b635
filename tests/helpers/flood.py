"""Live floods against the real `imprint serve`: hostile DHCP or mDNS packets beside valid traffic.

A `FloodLab` is one topology and one server at its shipped defaults (TLS on, DHCP in inform mode
on the server's eth0, mDNS on eth0 reading frames), with the valid hosts' MACs registered:

- h1 sends valid DHCPINFORMs (bench/dhcp/inform_load.py, which has its own encoder) and counts
  the ACKs; the mDNS valid hosts (h2...) each ask for our service by legacy unicast
  (bench/mdns/run.py `generate`, dnslib-built queries, answers checked with dnslib), within the
  per-source rate the server allows, since a host over its budget is meant to be dropped;
- the last host is the attacker: its MAC is not registered, and it sends the hostile mix built
  here (`dhcp_payloads` / `mdns_payloads`) with `SENDER`, a paced open-loop sender;
- the bench process asks `/healthz` every 100 ms and reads the server's loop-lag histogram,
  RSS and log before and after (tests/helpers/reliability.py), what the server counted as
  received and dropped by reason, and the kernel's drops at the UDP sockets of the flooded
  port (`udp_socket_drops`; with mDNS frame capture, the shipped default, queries are read
  from the packet socket and the UDP socket's copies are discarded, so its drops cost nothing).

Every packet builder here is independent of the server's codecs: struct-packed bytes and the
captured fixtures, so a decoder bug is not mirrored in the traffic that probes it. Addresses are
the harness's (198.18.0.0/15) and every namespace goes when the lab closes.
"""

from __future__ import annotations

import json
import random
import struct
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from tests.helpers.fixtures import load_hex_fixture
from tests.helpers.netns import SERVER_IP, Node, Topology
from tests.helpers.reliability import (
    BUSY_HISTOGRAM,
    HealthzSampler,
    ProbeResult,
    count_tracebacks,
    lag_buckets,
    rss_kb,
    stall_between,
)
from tests.helpers.server import ImprintServer, parse_prometheus

REPO = Path(__file__).resolve().parents[2]
INFORM_LOAD = REPO / "bench" / "dhcp" / "inform_load.py"
MDNS_GENERATOR = REPO / "bench" / "mdns" / "run.py"
TENANT = "flood"
HTTP_PORT = 8443
MDNS_GROUP = "224.0.0.251"
MDNS_PORT = 5353
DHCP_PORT = 67
# What a legacy-unicast querier may ask of one source: the server's default is 1/s, burst 8.
VALID_MDNS_RATE = 0.8
# Valid INFORMs per second from h1 (the server's per-MAC limits do not apply to INFORM acks).
VALID_DHCP_RATE = 200.0
# /healthz is first asked this long with no traffic: what one ask costs the client, for scale.
IDLE_HEALTHZ_S = 2.0

# -- hostile DHCP ------------------------------------------------------------------------------

MAGIC = b"\x63\x82\x53\x63"


def _bootp(xid: int, chaddr: bytes, ciaddr: bytes = b"\0" * 4) -> bytes:
    return struct.pack(
        "!BBBBIHH4s4s4s4s16s64s128s",
        1, 1, 6, 0, xid, 0, 0, ciaddr, b"\0" * 4, b"\0" * 4, b"\0" * 4,
        chaddr.ljust(16, b"\0"), b"", b"",
    )  # fmt: skip


def _dhcp(xid: int, chaddr: bytes, options: bytes, msg_type: int = 1) -> bytes:
    return _bootp(xid, chaddr) + MAGIC + bytes([53, 1, msg_type]) + options + b"\xff"


def _random_mac(rng: random.Random) -> bytes:
    return bytes([0x02, 0x00, 0x5E, 0x66]) + rng.randbytes(2)


def dhcp_payloads(rng: random.Random, n: int = 400) -> list[tuple[str, bytes]]:
    """`n` hostile DHCP datagrams of several kinds, each named; about 2 % are 65 KB.

    - `oversized`: 65,000 octets of 21,600 three-octet pieces of option 43, the datagram that
      cost 11 ms to decode when pieces were concatenated quadratically (issue 17, defect 1);
    - `pieces`: a 1,498-octet datagram (under the 1,500 cap) of 418 pieces of one option;
    - `overload`: option 52 pointing the options into sname/file full of garbage;
    - `bad_lengths` / `truncated`: a real client's INFORM with option lengths mangled or cut;
    - `garbage`: random bytes; `unregistered`: a well-formed DISCOVER from a random
      unregistered MAC, the log-and-discovered-list flood.
    """
    base = [data for _src, data in load_hex_fixture("dhcp/dhcpcd-inform-ms-uc-client.hex")][0]
    kinds: list[tuple[str, float]] = [
        ("oversized", 0.02), ("pieces", 0.18), ("overload", 0.1), ("bad_lengths", 0.15),
        ("truncated", 0.15), ("garbage", 0.2), ("unregistered", 0.2),
    ]  # fmt: skip
    names = [k for k, _ in kinds]
    weights = [w for _, w in kinds]
    out: list[tuple[str, bytes]] = []
    for i in range(n):
        kind = names[i % len(names)] if i < len(names) else rng.choices(names, weights)[0]
        xid = rng.getrandbits(32)
        mac = _random_mac(rng)
        if kind == "oversized":
            data = _dhcp(
                xid, mac, b"".join(bytes([43, 1, rng.getrandbits(8)]) for _ in range(21_600))
            )
        elif kind == "pieces":
            data = _dhcp(xid, mac, bytes([43, 1, 7]) * 418)
        elif kind == "overload":
            body = bytearray(_dhcp(xid, mac, bytes([52, 1, 3])))
            body[44:236] = rng.randbytes(192)
            data = bytes(body)
        elif kind == "bad_lengths":
            body = bytearray(base)
            for _ in range(rng.randint(1, 6)):
                body[rng.randrange(241, len(body))] = rng.getrandbits(8)
            data = bytes(body)
        elif kind == "truncated":
            data = base[: rng.randrange(1, len(base))]
        elif kind == "garbage":
            data = rng.randbytes(rng.randint(1, 1500))
        else:
            data = _dhcp(xid, mac, bytes([61, 7, 1]) + mac + bytes([55, 3, 1, 3, 43]))
        out.append((kind, data))
    return out


# -- hostile mDNS ------------------------------------------------------------------------------


def _dns_header(qid: int, qd: int, an: int = 0, flags: int = 0) -> bytes:
    return struct.pack("!HHHHHH", qid, flags, qd, an, 0, 0)


def pointer_chain_query(size: int, qid: int = 0) -> bytes:
    """A query of as many questions as fit in `size` octets, each name one label and a pointer
    to the previous question's name: question k names k labels (issue 17, defect 2)."""
    first = b"\x01a\x00" + b"\x00\x0c\x00\x01"
    body = bytearray(first)
    offsets = [12]
    while 12 + len(body) + 8 <= size:
        prev = offsets[-1]
        offsets.append(12 + len(body))
        body += b"\x01a" + struct.pack("!H", 0xC000 | prev) + b"\x00\x0c\x00\x01"
    return _dns_header(qid, len(offsets)) + bytes(body)


def _name(labels: Sequence[bytes]) -> bytes:
    return b"".join(bytes([len(x)]) + x for x in labels) + b"\0"


def mdns_payloads(rng: random.Random, n: int = 400) -> list[tuple[str, bytes]]:
    """`n` hostile mDNS messages of several kinds, each named.

    - `chain_65k` / `chain_9k`: pointer-chained questions filling 65,000 / 9,000 octets;
    - `pointer_loop`: a name whose pointer points at itself;
    - `known_answers`: a PTR query listing 250 known answers, each naming a 127-label name by
      a pointer (the message that cost 280 ms before labels were counted per message);
    - `label_bomb`: 64 questions of 127 one-octet labels each;
    - `truncated`: a real zeroconf browse cut short; `garbage`: random bytes;
    - `unregistered`: a well-formed browse for our service from the attacker, whose MAC is not
      registered (it must get nothing).
    """
    browse = [data for _src, data in load_hex_fixture("mdns/zeroconf-browse-ptr.hex")][0]
    service = _name([b"_imprint", b"_tcp", b"local"])
    kinds: list[tuple[str, float]] = [
        ("chain_65k", 0.02), ("chain_9k", 0.1), ("pointer_loop", 0.1), ("known_answers", 0.1),
        ("label_bomb", 0.1), ("truncated", 0.15), ("garbage", 0.23), ("unregistered", 0.2),
    ]  # fmt: skip
    names = [k for k, _ in kinds]
    weights = [w for _, w in kinds]
    deep = _name([b"x"] * 127)
    out: list[tuple[str, bytes]] = []
    for i in range(n):
        kind = names[i % len(names)] if i < len(names) else rng.choices(names, weights)[0]
        qid = rng.getrandbits(16)
        if kind == "chain_65k":
            data = pointer_chain_query(65_000, qid)
        elif kind == "chain_9k":
            data = pointer_chain_query(9_000, qid)
        elif kind == "pointer_loop":
            data = _dns_header(qid, 1) + b"\xc0\x0c" + b"\x00\x0c\x00\x01"
        elif kind == "known_answers":
            question = service + b"\x00\x0c\x00\x01"
            deep_at = 12 + len(question)
            rdata = struct.pack("!IH", 4500, 2) + b"\xc0\x0c"
            first = deep + b"\x00\x0c\x00\x01" + rdata
            record = struct.pack("!H", 0xC000 | deep_at) + b"\x00\x0c\x00\x01" + rdata
            data = _dns_header(qid, 1, 250) + question + first + record * 249
        elif kind == "label_bomb":
            data = _dns_header(qid, 64) + (deep + b"\x00\x0c\x00\x01") * 64
        elif kind == "truncated":
            data = browse[: rng.randrange(1, len(browse))]
        elif kind == "garbage":
            data = rng.randbytes(rng.randint(1, 1400))
        else:
            data = bytes([qid >> 8, qid & 0xFF]) + browse[2:]
        out.append((kind, data))
    return out


# -- the sender (runs inside the attacker's namespace) ---------------------------------------

# argv: payload file (4-octet big-endian length, then the datagram, repeated), rate per second,
# seconds, then targets as ip:port (round robin). A target in 224.0.0.0/4 is sent to with the
# multicast interface set to `--source`. Prints one JSON object: sent, errors, bytes, seconds.
SENDER = r"""
import json, socket, struct, sys, time
path, rate, seconds, source = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
targets = [(t.rsplit(":", 1)[0], int(t.rsplit(":", 1)[1])) for t in sys.argv[5:]]
raw = open(path, "rb").read()
payloads, at = [], 0
while at < len(raw):
    (n,) = struct.unpack_from("!I", raw, at)
    payloads.append(raw[at + 4 : at + 4 + n])
    at += 4 + n
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(source))
sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 255)
sock.bind((source, 0))
total = int(rate * seconds)
sent = errors = octets = 0
start = time.perf_counter()
for k in range(total):
    due = start + k / rate
    now = time.perf_counter()
    if due > now:
        time.sleep(due - now)
    data = payloads[k % len(payloads)]
    try:
        sock.sendto(data, targets[k % len(targets)])
        sent += 1
        octets += len(data)
    except OSError:
        errors += 1
print(json.dumps({"sent": sent, "errors": errors, "bytes": octets,
                  "seconds": round(time.perf_counter() - start, 3)}))
"""


def write_payloads(path: Path, payloads: Sequence[tuple[str, bytes]]) -> None:
    path.write_bytes(b"".join(struct.pack("!I", len(d)) + d for _k, d in payloads))


# -- the lab -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Flood:
    """One probe: which port the attacker floods, with what, how fast, for how long."""

    name: str  # "dhcp" or "mdns"
    rate: float  # hostile datagrams per second
    seconds: float


def _last_json(text: str) -> dict[str, Any]:
    for line in reversed(text.strip().splitlines()):
        if line.startswith("{"):
            parsed: dict[str, Any] = json.loads(line)
            return parsed
    raise AssertionError(f"no JSON line in: {text[-2000:]}")


class FloodLab:
    """A topology (h1 DHCP client, `mdns_hosts` mDNS clients, one attacker) and one server."""

    def __init__(self, workdir: Path, mdns_hosts: int = 3) -> None:
        self.workdir = workdir
        self.mdns_hosts = mdns_hosts
        self.tp = Topology(hosts=2 + mdns_hosts)
        self.dhcp_client: Node = self.tp.hosts[0]
        self.mdns_clients: list[Node] = self.tp.hosts[1 : 1 + mdns_hosts]
        self.attacker: Node = self.tp.hosts[-1]
        # The INFORMs' chaddr cycles through these; registered with the valid hosts' own MACs.
        self.dhcp_macs = [f"02:00:5e:77:{i >> 8:02x}:{i & 0xFF:02x}" for i in range(1, 101)]
        self.srv: ImprintServer | None = None
        self._rng = random.Random(17)

    def __enter__(self) -> FloodLab:
        self.tp.up()
        try:
            overrides = {
                "http": {"port": HTTP_PORT},
                "dhcp": {"enabled": True, "mode": "inform", "interface": "eth0"},
                "mdns": {"enabled": True, "interface": "eth0"},
                # The shipped configs log JSON at INFO; the harness's default is human.
                "log": {"level": "INFO", "format": "json"},
            }
            self.srv = ImprintServer(self.tp, self.tp.server, self.workdir / "server", overrides)
            self.srv.create_tenant(TENANT)
            valid = [h.mac for h in (self.dhcp_client, *self.mdns_clients)]
            self.srv.import_devices(TENANT, valid + self.dhcp_macs)
            self.srv.start()
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        if self.srv is not None:
            self.srv.stop()
        self.tp.down()

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @property
    def server(self) -> ImprintServer:
        assert self.srv is not None, "the lab is not up"
        return self.srv

    def _healthz(self) -> int:
        conn = self.server._connection(timeout=5.0)
        try:
            conn.request("GET", "/healthz")
            status = conn.getresponse().status
        finally:
            conn.close()
        return status

    def _lag(self) -> dict[float, float]:
        return lag_buckets(parse_prometheus(self.server.metrics().text))

    def run(self, flood: Flood) -> ProbeResult:
        """Flood for `flood.seconds` beside valid DHCP and mDNS traffic; the readings."""
        srv = self.server
        assert srv.proc is not None
        pid = srv.proc.pid
        payloads = (dhcp_payloads if flood.name == "dhcp" else mdns_payloads)(self._rng)
        if flood.name == "dhcp":
            targets = [f"{SERVER_IP}:{DHCP_PORT}"]
        else:
            targets = [f"{SERVER_IP}:{MDNS_PORT}", f"{MDNS_GROUP}:{MDNS_PORT}"]
        kinds = Counter(k for k, _ in payloads)
        with tempfile.TemporaryDirectory(prefix="imprint-flood-") as tmp:
            payload_file = Path(tmp) / "payloads.bin"
            write_payloads(payload_file, payloads)
            macs_file = Path(tmp) / "macs.txt"
            macs_file.write_text("\n".join(self.dhcp_macs) + "\n")
            port = DHCP_PORT if flood.name == "dhcp" else MDNS_PORT
            kernel_before = self._udp_drops(port)
            before_metrics = srv.metrics()
            before_lag = lag_buckets(before_metrics.samples)
            before_busy = lag_buckets(before_metrics.samples, BUSY_HISTOGRAM)
            rss_before = rss_kb(pid)
            log_before = srv.log()
            with HealthzSampler(self._healthz) as idle:  # the same asks with no traffic
                time.sleep(IDLE_HEALTHZ_S)
            valid = self._start_valid(flood.seconds, macs_file)
            with HealthzSampler(self._healthz) as health:
                attacker = self.tp.popen_python(
                    self.attacker, SENDER, str(payload_file), str(flood.rate),
                    str(flood.seconds), self.attacker.ip, *targets,
                )  # fmt: skip
                hostile = self._finish(attacker, flood.seconds + 30)
                answers = [self._finish(p, flood.seconds + 30) for p in valid]
            time.sleep(0.5)  # let the last answers' effects (and log lines) land
            crashed = srv.proc.poll() is not None
            after_metrics = None if crashed else srv.metrics()
            rss_after = None if crashed else rss_kb(pid)
            kernel_after = self._udp_drops(port)
        log_after = srv.log()
        dhcp_valid, mdns_valid = answers[0], answers[1:]
        valid_sent = int(dhcp_valid["sent"]) + sum(int(m["sent"]) for m in mdns_valid)
        valid_answered = int(dhcp_valid["received"]) + sum(int(m["answered"]) for m in mdns_valid)
        result = ProbeResult(
            probe=f"{flood.name}-flood",
            sent=int(hostile["sent"]),
            valid_sent=valid_sent,
            valid_answered=valid_answered,
            healthz_p50_ms=health.p50_ms,
            rss_before_kb=rss_before,
            rss_after_kb=rss_after,
            crashes=1 if crashed else 0,
            tracebacks=count_tracebacks(log_after[len(log_before) :]),
        )
        if after_metrics is not None:
            worst, over = stall_between(before_lag, lag_buckets(after_metrics.samples))
            result.worst_stall_ms, result.stalls_over_50ms = worst, over
            busy = lag_buckets(after_metrics.samples, BUSY_HISTOGRAM)
            result.worst_busy_stall_ms = stall_between(before_busy, busy)[0]
        result.extra = {
            "seconds": flood.seconds,
            "rate": flood.rate,
            "hostile_mb": round(int(hostile["bytes"]) / 1e6, 1),
            "send_errors": int(hostile["errors"]),
            "kinds": dict(sorted(kinds.items())),
            "dhcp_valid": f"{dhcp_valid['received']}/{dhcp_valid['sent']}",
            "mdns_valid": f"{sum(int(m['answered']) for m in mdns_valid)}"
            f"/{sum(int(m['sent']) for m in mdns_valid)}",
            "healthz_idle_p50_ms": idle.p50_ms,
            "healthz_requests": len(health.times_ms),
            "healthz_misses": health.misses,
            "healthz_max_ms": round(max(health.times_ms), 1) if health.times_ms else None,
            "log_bytes": len(log_after) - len(log_before),
        }
        result.extra["udp_socket_drops"] = kernel_after - kernel_before
        if after_metrics is not None:
            received = f"imprint_{flood.name}_packets_received_total"
            result.extra["server_received"] = int(
                after_metrics.value(received) - before_metrics.value(received)
            )
            result.extra["server_counters"] = _drop_counters(before_metrics, after_metrics)
        return result

    def _udp_drops(self, port: int) -> int:
        """Datagrams the server namespace's kernel dropped at sockets bound to UDP `port`
        (a full receive buffer), from /proc/net/udp's `drops` column."""
        table = self.tp.run(self.tp.server, ["cat", "/proc/net/udp"], timeout=10).stdout
        total = 0
        for line in table.splitlines()[1:]:
            fields = line.split()
            if len(fields) >= 13 and int(fields[1].rsplit(":", 1)[1], 16) == port:
                total += int(fields[12])
        return total

    def _start_valid(self, seconds: float, macs_file: Path) -> list[subprocess.Popen[str]]:
        procs = [
            self.tp.popen(
                self.dhcp_client,
                [sys.executable, str(INFORM_LOAD), "--server", SERVER_IP, "--ciaddr",
                 self.dhcp_client.ip, "--macs", str(macs_file), "--rate", str(VALID_DHCP_RATE),
                 "--seconds", str(seconds), "--drain", "2"],
                stderr=subprocess.PIPE,
            )
        ]  # fmt: skip
        for host in self.mdns_clients:
            procs.append(
                self.tp.popen(
                    host,
                    [sys.executable, str(MDNS_GENERATOR), "generate", "--server", SERVER_IP,
                     "--port", str(MDNS_PORT), "--source", host.ip, "--rate",
                     str(VALID_MDNS_RATE), "--seconds", str(seconds), "--drain", "2",
                     "--sockets", "1"],
                    stderr=subprocess.PIPE,
                )
            )  # fmt: skip
        return procs

    def _finish(self, proc: subprocess.Popen[str], timeout: float) -> dict[str, Any]:
        try:
            out, err = proc.communicate(timeout=timeout)
        finally:
            self.tp.stop(proc)
        if proc.returncode != 0:
            raise AssertionError(f"{proc.args} exited {proc.returncode}: {err[-2000:]}")
        return _last_json(out)


def _drop_counters(before: Any, after: Any) -> dict[str, int]:
    """What the server counted as dropped or refused during the probe, by metric and reason."""
    out: dict[str, int] = {}
    for (name, labels), value in after.samples.items():
        if not name.endswith("_total") or not any(
            word in name for word in ("drop", "malformed", "decode", "rate_limited", "refused")
        ):
            continue
        grew = value - before.samples.get((name, labels), 0.0)
        if grew:
            tag = ",".join(f"{k}={v}" for k, v in sorted(labels))
            out[f"{name}{{{tag}}}" if tag else name] = int(grew)
    return out


def run_floods(workdir: Path, floods: Sequence[Flood]) -> Iterator[ProbeResult]:
    """Each flood on the same lab, in order (the server is not restarted between them)."""
    with FloodLab(workdir) as lab:
        for flood in floods:
            yield lab.run(flood)
