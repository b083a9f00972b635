#!/usr/bin/env python3
"""DHCP benchmark: Imprint against Kea on the same veth topology, at rising rates, in one run.

Each server gets its own copy of the topology (server and client namespaces on a bridge). For
each test both servers are started, then driven from their client namespace at each rate for a
bounded time, the two servers' steps alternating so that both see the same background load:

* `dora`: Kea's perfdhcp, 4-way DISCOVER/OFFER/REQUEST/ACK exchanges, each exchange's MAC drawn
  from the same list of client MACs that the server has registered (Kea: host reservations;
  Imprint: devices imported into a tenant). perfdhcp with a unicast server address acts as a
  relay (giaddr = its own address, source port 67). Imprint runs in `full` mode.
* `proxy` (optional): perfdhcp `-i`, DISCOVER/OFFER only; Imprint runs in `proxy` mode.
* `inform`: bench/dhcp/inform_load.py, an open-loop DHCPINFORM generator (what Lync phones
  send), measuring every reply's latency itself.

A step passes when at most --max-drop-pct of the exchanges went unanswered and the client
really offered the target rate (a client that cannot keep up proves nothing about the server).
The figure of merit is the highest passing rate; p99 latency is reported at that rate. Figures
only, no assertions. Needs root (network namespaces): see bench/README.md.

Both servers run at their shipped defaults: Imprint with configs/site-full.toml, only its
addresses, interface, store path and subnet changed (its `[log]` as shipped: INFO, JSON), plus
one profile sending Kea's option 43; Kea with a memfile lease file (`persist: true`) and its
INFO log written to a file. `--pin` (default on) puts each server on core 0 and the bench with
its clients on core 1, and every step reports the server's CPU time per completed exchange
(user + system of all its threads, from /proc). `--overload` adds a DORA step per server at
twice its highest passing rate; `--scale-clients N` a DORA step of Imprint with N registered
MACs, to compare the per-exchange cost against the same rate with --clients.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import tomllib  # noqa: E402

from tests.helpers.netns import (  # noqa: E402 - the repo root must be on sys.path first
    SERVER_IP,
    KeaDhcp4,
    Node,
    Topology,
    bench_macs,
    find_tool,
    kea_dhcp4_config,
    kea_reservation,
    kea_subnet,
    netns_unavailable_reason,
    run_perfdhcp,
    sweep_stale_namespaces,
    write_mac_list,
)
from tests.helpers.server import to_toml  # noqa: E402

SITE_FULL = REPO / "configs" / "site-full.toml"
# Large registries (--scale-clients): a /14 holding the veth LAN, so giaddr selects it, with a
# pool of 131,070 addresses (perfdhcp draws each exchange's MAC at random from the list).
SCALE_SUBNET = "198.16.0.0/14"
SCALE_POOL = "198.16.0.1-198.17.255.254"
SERVER_CORE, CLIENT_CORE = 0, 1

INFORM_LOAD = Path(__file__).resolve().parent / "inform_load.py"
# The clients' registered addresses live in a /18 that contains the /24 of the veth LAN, so
# up to 8000 reservations fit and giaddr (198.18.77.11) still selects the subnet.
BENCH_SUBNET = "198.18.64.0/18"
RESERVED_BASE = (198, 18, 96, 1)
POOL = "198.18.96.1-198.18.127.254"
MAX_CLIENTS = 8000
# Option 43 the way a Lync phone wants it (sub-option 1 = "MS-UC-Client", 2 = "https"), so both
# servers encode vendor options in every answer.
VENDOR_43 = bytes([1, 12]) + b"MS-UC-Client" + bytes([2, 5]) + b"https"


def reserved_ip(index: int) -> str:
    """Address reserved for the index-th (0-based) bench client."""
    a, b, c, d = RESERVED_BASE
    n = (c << 8 | d) + index
    return f"{a}.{b}.{n >> 8}.{n & 0xFF}"


class ServerUnavailable(Exception):
    """The server under test could not be started; the message says why."""


class ServerUnderTest(Protocol):
    """A DHCP server the bench can start in a namespace with `macs` registered."""

    name: str

    def start(self, tp: Topology, workdir: Path, macs: list[str], mode: str) -> None:
        """Start serving `macs` in `mode` (full, proxy, inform) or raise ServerUnavailable."""

    def stop(self) -> None:
        """Stop the server; idempotent."""

    def describe(self) -> str:
        """Version and settings, for the report."""

    @property
    def pid(self) -> int | None:
        """The server's process while it runs (for its CPU time and core)."""


class KeaServer:
    """kea-dhcp4 with one host reservation (address + option 43) per client MAC."""

    name = "kea"

    def __init__(self, threads: int = 0) -> None:
        self.threads = threads
        self.kea: KeaDhcp4 | None = None

    def start(self, tp: Topology, workdir: Path, macs: list[str], mode: str) -> None:
        tool = find_tool("kea-dhcp4")
        if tool is None:
            raise ServerUnavailable("kea-dhcp4 not installed (scripts/install-debian-deps.sh)")
        vendor = {
            "name": "vendor-encapsulated-options",
            "csv-format": False,
            "data": VENDOR_43.hex(),
            # Imprint sends 43 to a matching profile unasked (protocols.md); so does Kea here.
            "always-send": True,
        }
        reservations = [kea_reservation(m, reserved_ip(i), [vendor]) for i, m in enumerate(macs)]
        config = kea_dhcp4_config(
            workdir,
            tp.server.ifname,
            [kea_subnet(1, BENCH_SUBNET, reservations=reservations)],
            threads=self.threads,
            # Kea's default severity, written to a file (kea_dhcp4_config's output_options).
            severity="INFO",
        )
        self.kea = KeaDhcp4(tp, tp.server, workdir, config)
        try:
            self.kea.start(timeout=30)
        except RuntimeError as exc:
            self.kea = None
            raise ServerUnavailable(str(exc)) from exc

    def stop(self) -> None:
        if self.kea is not None:
            self.kea.stop()
            self.kea = None

    @property
    def pid(self) -> int | None:
        return self.kea.proc.pid if self.kea is not None and self.kea.proc is not None else None

    def describe(self) -> str:
        tool = find_tool("kea-dhcp4")
        version = "?"
        if tool is not None:
            version = subprocess.run([tool, "-v"], capture_output=True, text=True).stdout.strip()
        threads = f"{self.threads} threads" if self.threads else "single-threaded (Kea default)"
        return (
            f"kea-dhcp4 {version}, memfile leases (persist), INFO log to a file, host "
            f"reservations, {threads}"
        )


class ImprintServer:
    """`imprint serve --config FILE` with the clients imported as devices of one tenant."""

    name = "imprint"

    def __init__(self, executable: Path) -> None:
        self.executable = executable
        self.tp: Topology | None = None
        self.proc: subprocess.Popen[str] | None = None
        self.subnet, self.pool = BENCH_SUBNET, POOL

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def config_toml(
        self, workdir: Path, tp: Topology, mode: str, subnet: str = BENCH_SUBNET, pool: str = POOL
    ) -> str:
        """configs/site-full.toml with only what names this machine changed: the store path,
        the interface, the addresses (HTTP, server id, the subnet and its pool) and the mode;
        `[log]` stays as shipped. One profile adds Kea's option 43 to every answer."""
        config: dict[str, Any] = tomllib.loads(SITE_FULL.read_text())
        ip = tp.server.ip
        config["store"]["path"] = str(workdir / "imprint.db")
        config["http"] |= {"host": ip, "port": 443, "public_url": f"https://{ip}"}
        config["mdns"].pop("interface", None)
        config["mdns"]["interfaces"] = [tp.server.ifname]
        dhcp = config["dhcp"]
        dhcp |= {"mode": mode, "interface": tp.server.ifname, "server_ip": ip}
        if mode == "full":
            dhcp["subnets"] = [
                dhcp["subnets"][0] | {"subnet": subnet, "pool": pool, "router": ip, "dns": [ip]}
            ]
        else:
            dhcp.pop("subnets", None)
        dhcp["profiles"] = [
            {
                "name": "bench",
                "match_kind": "any",
                "options": [{"code": 43, "encoding": "hex", "value": VENDOR_43.hex()}],
            }
        ]
        return to_toml(config)

    def _admin(self, tp: Topology, config: Path, *args: str) -> None:
        done = tp.run(
            tp.server, [str(self.executable), *args, "--config", str(config)], timeout=300
        )
        if done.returncode != 0:
            raise ServerUnavailable(
                f"`imprint {' '.join(args)}` failed ({done.returncode}): "
                f"{(done.stdout + done.stderr)[-1500:]}"
            )

    def start(self, tp: Topology, workdir: Path, macs: list[str], mode: str) -> None:
        if not self.executable.exists():
            raise ServerUnavailable(f"{self.executable} not found (pip install -e . in .venv)")
        workdir.mkdir(parents=True, exist_ok=True)
        config = workdir / "imprint.toml"
        config.write_text(self.config_toml(workdir, tp, mode, self.subnet, self.pool))
        devices = workdir / "devices.csv"
        devices.write_text("MAC ID,Location\n" + "".join(f"{m},bench\n" for m in macs))
        self._admin(tp, config, "db", "init")
        self._admin(tp, config, "tenants", "create", "--id", "bench", "--name", "Bench")
        self._admin(tp, config, "devices", "import", "--tenant", "bench", str(devices))
        # The first start makes the TLS certificate and keys: not part of any step.
        log = workdir / "imprint-serve.log"
        with open(log, "w") as out:
            self.proc = tp.popen(
                tp.server,
                [str(self.executable), "serve", "--config", str(config)],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.tp = tp
        if not tp.wait_udp_port(tp.server, 67, timeout=30, proc=self.proc):
            self.stop()
            raise ServerUnavailable(
                f"`imprint serve` did not bind UDP 67: {log.read_text()[-1500:]}"
            )

    def stop(self) -> None:
        if self.proc is not None and self.tp is not None:
            self.tp.stop(self.proc)
        self.proc = None

    def describe(self) -> str:
        done = subprocess.run([str(self.executable), "--version"], capture_output=True, text=True)
        return f"{(done.stdout or done.stderr).strip() or 'imprint ?'}, sqlite store"


@dataclass
class Step:
    """One measured rate."""

    server: str
    test: str
    rate: int
    seconds: int
    sent: int
    completed: int
    offered_rate: float
    drop_pct: float
    p50_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    first_p99_ms: float | None  # DORA: DISCOVER->OFFER p99 (p99_ms is REQUEST->ACK)
    passed: bool
    note: str = ""
    load1: float | None = None  # 1-minute load average when the step started
    cpu_us: float | None = None  # server CPU (user + system, all threads) per completed exchange
    clients: int = 0  # registered MACs
    # Where the server side lost datagrams during the step: the kernel at the server's socket
    # (/proc/net/snmp Udp RcvbufErrors in its namespace), and Imprint's own shedding before
    # decoding (imprint_dhcp_packets_shed_total + dropped DHCP_QUEUE_FULL/DHCP_OVERLOAD).
    kernel_drops: int | None = None
    server_shed: int | None = None
    # The same counter in the client's namespace: replies the kernel dropped at perfdhcp's (or
    # inform_load's) own socket because the client did not read them in time.
    client_drops: int | None = None


def _round(value: float | None) -> float | None:
    if value is None or value != value:  # NaN: no replies at all
        return None
    return round(value, 3)


def measure_perfdhcp(
    tp: Topology,
    client: Node,
    server: str,
    mac_list: Path,
    rate: int,
    seconds: int,
    initial_only: bool = False,
) -> Step:
    """One perfdhcp step: DORA, or DISCOVER/OFFER only (`-i`) for the proxy test."""
    result = run_perfdhcp(
        tp,
        client,
        SERVER_IP,
        rate=rate,
        seconds=seconds,
        mac_list=mac_list,
        initial_only=initial_only,
        timeout=seconds + 60,
    )
    offers, last = result.first, result.last
    return Step(
        server=server,
        test="proxy" if initial_only else "dora",
        rate=rate,
        seconds=seconds,
        sent=result.sent,
        completed=result.completed,
        offered_rate=round(result.sent / seconds, 1),
        drop_pct=round(result.drop_pct, 3),
        p50_ms=_round(last.latency_pct(50)),
        p99_ms=_round(last.latency_pct(99)),
        max_ms=_round(last.max_ms if last.received else None),
        first_p99_ms=None if initial_only else _round(offers.latency_pct(99)),
        passed=False,
    )


def measure_dora(
    tp: Topology, client: Node, server: str, mac_list: Path, rate: int, seconds: int
) -> Step:
    """One perfdhcp DORA step (4-way exchanges)."""
    return measure_perfdhcp(tp, client, server, mac_list, rate, seconds)


def measure_proxy(
    tp: Topology, client: Node, server: str, mac_list: Path, rate: int, seconds: int
) -> Step:
    """One perfdhcp DISCOVER/OFFER step (what a proxy-mode server answers)."""
    return measure_perfdhcp(tp, client, server, mac_list, rate, seconds, initial_only=True)


def measure_inform(
    tp: Topology, client: Node, server: str, mac_list: Path, rate: int, seconds: int
) -> Step:
    """One INFORM step with bench/dhcp/inform_load.py in the client namespace."""
    done = tp.run(
        client,
        [
            sys.executable,
            str(INFORM_LOAD),
            "--server",
            SERVER_IP,
            "--ciaddr",
            client.ip,
            "--macs",
            str(mac_list),
            "--rate",
            str(rate),
            "--seconds",
            str(seconds),
        ],
        timeout=seconds + 60,
    )
    if done.returncode != 0:
        raise RuntimeError(f"inform_load.py failed: {done.stderr[-1500:]}")
    r: dict[str, Any] = json.loads(done.stdout)
    note = ""
    if r["received"] and r["with_option_43"] < r["received"]:
        note = f"{r['received'] - r['with_option_43']} ACKs without option 43"
    return Step(
        server=server,
        test="inform",
        rate=rate,
        seconds=seconds,
        sent=r["sent"],
        completed=r["received"],
        offered_rate=r["offered_rate"],
        drop_pct=r["drop_pct"],
        p50_ms=r["p50_ms"],
        p99_ms=r["p99_ms"],
        max_ms=r["max_ms"],
        first_p99_ms=None,
        passed=False,
        note=note,
    )


def cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU of process `pid` and all its threads so far (None if unknown)."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    # After "(comm)": state is field 3, utime and stime fields 14 and 15 (proc(5)).
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pin(pid: int | None, core: int) -> None:
    """Every thread of `pid` (and what it starts later) onto `core`; a no-op if unavailable."""
    taskset = shutil.which("taskset")
    if pid is not None and taskset is not None:
        subprocess.run([taskset, "-a", "-cp", str(core), str(pid)], capture_output=True)


def measure_step(
    tp: Topology,
    server: ServerUnderTest,
    test: str,
    mac_list: Path,
    rate: int,
    seconds: int,
    max_drop_pct: float,
    clients: int,
) -> Step:
    """One judged step with the load average before it and the server's CPU per exchange."""
    measure = {"dora": measure_dora, "proxy": measure_proxy, "inform": measure_inform}[test]
    load = os.getloadavg()[0]
    k0, shed0 = rcvbuf_errors(tp), shed_count(tp, server)
    c0 = rcvbuf_errors(tp, tp.hosts[0])
    before = cpu_seconds(server.pid)
    step = judge(measure(tp, tp.hosts[0], server.name, mac_list, rate, seconds), max_drop_pct)
    after = cpu_seconds(server.pid)
    k1, shed1 = rcvbuf_errors(tp), shed_count(tp, server)
    c1 = rcvbuf_errors(tp, tp.hosts[0])
    step.client_drops = c1 - c0 if c0 is not None and c1 is not None else None
    step.kernel_drops = k1 - k0 if k0 is not None and k1 is not None else None
    step.server_shed = shed1 - shed0 if shed0 is not None and shed1 is not None else None
    step.load1 = round(load, 2)
    step.clients = clients
    if before is not None and after is not None and step.completed:
        step.cpu_us = round((after - before) / step.completed * 1e6, 1)
    return step


def rcvbuf_errors(tp: Topology, where: Node | None = None) -> int | None:
    """Udp RcvbufErrors in the server's namespace (or `where`'s): datagrams the kernel dropped
    at a full socket receive queue (one receiver in each: the server, or the client)."""
    done = tp.run(where or tp.server, ["cat", "/proc/net/snmp"], timeout=10)
    lines = [ln.split() for ln in done.stdout.splitlines() if ln.startswith("Udp:")]
    if len(lines) < 2 or "RcvbufErrors" not in lines[0]:
        return None
    return int(lines[1][lines[0].index("RcvbufErrors")])


def shed_count(tp: Topology, server: ServerUnderTest) -> int | None:
    """Datagrams Imprint dropped before decoding them (its /metrics); None for Kea."""
    if server.name != "imprint":
        return None
    done = tp.run(
        tp.hosts[0], ["curl", "-sk", "--max-time", "5", f"https://{SERVER_IP}/metrics"], timeout=10
    )
    total = 0
    for line in done.stdout.splitlines():
        if line.startswith("imprint_dhcp_packets_shed_total") or (
            line.startswith("imprint_dhcp_packets_dropped_total")
            and ('"DHCP_QUEUE_FULL"' in line or '"DHCP_OVERLOAD"' in line)
        ):
            total += int(float(line.rsplit(" ", 1)[1]))
    return total if done.returncode == 0 else None


def judge(step: Step, max_drop_pct: float) -> Step:
    """Mark a step passed when drops are within the limit and the client offered the rate."""
    if step.offered_rate < 0.95 * step.rate:
        step.note = (step.note + "; " if step.note else "") + "client could not offer this rate"
        step.passed = False
    else:
        step.passed = step.drop_pct <= max_drop_pct
    return step


def sweep_steps(
    tp: Topology,
    server: ServerUnderTest,
    test: str,
    mac_list: Path,
    rates: list[int],
    seconds: int,
    max_drop_pct: float,
    refine: int,
    keep_going: bool,
    clients: int = 0,
) -> Iterator[Step]:
    """One server's sweep, one measured step per `next()`: rising rates until the first
    failure, then `refine` bisection steps between the last pass and the first failure."""
    measure = {"dora": measure_dora, "proxy": measure_proxy, "inform": measure_inform}[test]
    client = tp.hosts[0]

    def step_at(rate: int) -> Step:
        return measure_step(tp, server, test, mac_list, rate, seconds, max_drop_pct, clients)

    # Warm-up, not recorded: first leases, caches, page faults, on both servers alike.
    measure(tp, client, server.name, mac_list, rates[0], min(2, seconds))
    steps: list[Step] = []
    for rate in rates:
        step = step_at(rate)
        steps.append(step)
        yield step
        if not step.passed and not keep_going:
            break
    passed = [s.rate for s in steps if s.passed]
    failed = [s.rate for s in steps if not s.passed and s.rate > max(passed, default=0)]
    low, high = max(passed, default=0), min(failed, default=0)
    for _ in range(refine):
        if not high or high - low <= max(50, low // 20):
            break
        rate = (low + high) // 2
        step = step_at(rate)
        yield step
        if step.passed:
            low = rate
        else:
            high = rate


def interleave(sweeps: dict[str, Iterator[Step]]) -> Iterator[Step]:
    """Steps of several sweeps taken in turn (who goes first alternates each round), so every
    server is measured under the same background load, minutes never separate them."""
    order = list(sweeps)
    while order:
        for name in list(order):
            step = next(sweeps[name], None)
            if step is None:
                order.remove(name)
            else:
                yield step
        order.reverse()


HEADER = (
    f"{'server':8} {'test':6} {'MACs':>7} {'rate/s':>7} {'offered':>8} {'sent':>7} "
    f"{'answered':>8} {'drop%':>7} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} {'OFFER p99':>9} "
    f"{'CPU us':>7} {'kdrop':>6} {'shed':>6} {'cdrop':>6} {'load':>5}  result"
)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _load(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _row(s: Step) -> str:
    verdict = "pass" if s.passed else "FAIL"
    note = f" ({s.note})" if s.note else ""
    cpu = "-" if s.cpu_us is None else f"{s.cpu_us:.0f}"
    kdrop = "-" if s.kernel_drops is None else str(s.kernel_drops)
    shed = "-" if s.server_shed is None else str(s.server_shed)
    cdrop = "-" if s.client_drops is None else str(s.client_drops)
    return (
        f"{s.server:8} {s.test:6} {s.clients:>7} {s.rate:>7} {s.offered_rate:>8.0f} {s.sent:>7} "
        f"{s.completed:>8} {s.drop_pct:>7.2f} {_fmt(s.p50_ms):>7} {_fmt(s.p99_ms):>7} "
        f"{_fmt(s.max_ms):>7} {_fmt(s.first_p99_ms):>9} {cpu:>7} {kdrop:>6} {shed:>6} "
        f"{cdrop:>6} {_load(s.load1):>5}  {verdict}{note}"
    )


def best(steps: list[Step]) -> Step | None:
    """The highest passing step."""
    passed = [s for s in steps if s.passed]
    return max(passed, key=lambda s: s.rate) if passed else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--servers", default="kea,imprint", help="comma list of: kea, imprint")
    ap.add_argument("--tests", default="dora,inform", help="comma list of: dora, proxy, inform")
    ap.add_argument("--rates", default="3000,6000,9000,12000", help="DORA/proxy, per second")
    ap.add_argument("--inform-rates", default="5000,10000,20000,30000", help="INFORM, per second")
    ap.add_argument("--seconds", type=int, default=8, help="length of each step")
    ap.add_argument("--clients", type=int, default=2000, help="registered client MACs")
    ap.add_argument("--max-drop-pct", type=float, default=1.0)
    ap.add_argument("--refine", type=int, default=0, help="bisection steps after the first FAIL")
    ap.add_argument(
        "--keep-going",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="measure every rate, not only up to the first FAIL",
    )
    ap.add_argument(
        "--pin",
        action=argparse.BooleanOptionalAction,
        default=True,
        help=f"server on core {SERVER_CORE}, the bench and its clients on core {CLIENT_CORE}",
    )
    ap.add_argument(
        "--overload",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="DORA at twice each server's highest passing rate",
    )
    ap.add_argument(
        "--scale-clients",
        type=int,
        default=200_000,
        help="then Imprint alone with this many registered MACs (0: skip)",
    )
    ap.add_argument("--scale-rate", type=int, default=6000, help="its DORA rate")
    ap.add_argument("--kea-threads", type=int, default=0, help="0 = Kea's default (1 thread)")
    ap.add_argument("--imprint", type=Path, default=REPO / ".venv" / "bin" / "imprint")
    ap.add_argument("--json", type=Path, help="also write every step here")
    args = ap.parse_args(argv)

    reason = netns_unavailable_reason()
    if reason is not None:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 2
    tests = [t.strip() for t in args.tests.split(",") if t.strip()]
    names = [n.strip() for n in args.servers.split(",") if n.strip()]
    unknown = set(tests) - {"dora", "proxy", "inform"}
    if unknown:
        ap.error(f"unknown tests: {', '.join(sorted(unknown))}")
    needed = ["perfdhcp"] if {"dora", "proxy"} & set(tests) else []
    needed += ["kea-dhcp4"] if "kea" in names else []
    missing = [t for t in needed if find_tool(t) is None]
    if missing:
        print(f"missing tools: {', '.join(missing)} (run scripts/install-debian-deps.sh)")
        return 2
    if not 1 <= args.clients <= MAX_CLIENTS:
        ap.error(f"--clients must be between 1 and {MAX_CLIENTS}")
    rates = sorted(int(r) for r in args.rates.split(","))
    inform_rates = sorted(int(r) for r in args.inform_rates.split(","))
    if args.pin and (os.cpu_count() or 1) > max(SERVER_CORE, CLIENT_CORE):
        os.sched_setaffinity(0, {CLIENT_CORE})  # perfdhcp and inform_load inherit it
    else:
        args.pin = False
    catalog: dict[str, ServerUnderTest] = {
        "kea": KeaServer(args.kea_threads),
        "imprint": ImprintServer(args.imprint),
    }
    servers = [catalog[n] for n in names]
    swept = sweep_stale_namespaces()
    if swept:
        print(f"removed stale namespaces: {', '.join(swept)}")

    macs = bench_macs(args.clients)
    scale_macs = [
        f"02:00:5e:{0x20 + (i >> 16):02x}:{i >> 8 & 0xFF:02x}:{i & 0xFF:02x}"
        for i in range(1, args.scale_clients + 1)
    ]
    results: list[Step] = []
    unavailable: dict[tuple[str, str], str] = {}
    print(
        f"{args.clients} clients, {args.seconds:g} s per step, pass = drops <= "
        f"{args.max_drop_pct:g}% at the offered rate; "
        + (
            f"servers pinned to core {SERVER_CORE}, clients to core {CLIENT_CORE}"
            if args.pin
            else "not pinned"
        )
    )
    for server in servers:
        print(f"== {server.name}: {server.describe()}")
    print(
        "Each server has its own identical topology; the servers' steps alternate, so both "
        "are measured under the same background load."
    )
    with contextlib.ExitStack() as stack:
        # One topology per server: both can stay up, and an idle server costs nothing.
        topologies = {s.name: stack.enter_context(Topology(hosts=1)) for s in servers}
        workroot = Path("/tmp") / (topologies[servers[0].name].tag + "-bench")
        workroot.mkdir()
        stack.callback(shutil.rmtree, workroot, ignore_errors=True)
        mac_list = write_mac_list(workroot / "macs.txt", macs)
        for test in tests:
            mode = {"dora": "full", "proxy": "proxy", "inform": "inform"}[test]
            load = " ".join(f"{x:.2f}" for x in os.getloadavg())
            print(f"\n== {test} (load average {load})")
            print(HEADER)
            started: list[ServerUnderTest] = []
            try:
                for server in servers:
                    try:
                        server.start(
                            topologies[server.name],
                            workroot / f"{server.name}-{test}",
                            macs,
                            mode,
                        )
                    except ServerUnavailable as exc:
                        unavailable[(server.name, test)] = str(exc)
                        print(f"{server.name:8} {test:6} not run: {exc}")
                        continue
                    started.append(server)
                    if args.pin:
                        pin(server.pid, SERVER_CORE)
                sweeps = {
                    server.name: sweep_steps(
                        topologies[server.name],
                        server,
                        test,
                        mac_list,
                        inform_rates if test == "inform" else rates,
                        args.seconds,
                        args.max_drop_pct,
                        args.refine,
                        args.keep_going,
                        args.clients,
                    )
                    for server in started
                }
                for step in interleave(sweeps):
                    results.append(step)
                    print(_row(step), flush=True)
                if test == "dora" and args.overload:
                    for server in started:
                        top = best(
                            [s for s in results if s.server == server.name and s.test == test]
                        )
                        if top is None:
                            print(f"{server.name:8} overload not run: no rate passed")
                            continue
                        step = measure_step(
                            topologies[server.name],
                            server,
                            test,
                            mac_list,
                            2 * top.rate,
                            args.seconds,
                            args.max_drop_pct,
                            args.clients,
                        )
                        step.test = "over"
                        done = step.completed / args.seconds
                        step.note = (
                            f"2x {top.rate}/s: {done:.0f} completed/s = "
                            f"{100 * done / top.rate:.0f}% of the passing rate"
                        )
                        results.append(step)
                        print(_row(step), flush=True)
            finally:
                for server in started:
                    server.stop()
            time.sleep(0.5)

        imprint = catalog["imprint"]
        if args.scale_clients and "imprint" in names and "dora" in tests:
            assert isinstance(imprint, ImprintServer)
            tp = topologies["imprint"]
            print(f"\n== dora with {args.scale_clients} registered MACs (imprint only)")
            big_list = write_mac_list(workroot / "macs-scale.txt", scale_macs)
            imprint.subnet, imprint.pool = SCALE_SUBNET, SCALE_POOL
            try:
                t0 = time.monotonic()
                imprint.start(tp, workroot / "imprint-scale", scale_macs, "full")
                print(f"(imported and started in {time.monotonic() - t0:.0f} s)")
                if args.pin:
                    pin(imprint.pid, SERVER_CORE)
                measure_dora(tp, tp.hosts[0], "imprint", big_list, args.scale_rate, 2)  # warm-up
                print(HEADER)
                step = measure_step(
                    tp,
                    imprint,
                    "dora",
                    big_list,
                    args.scale_rate,
                    args.seconds,
                    args.max_drop_pct,
                    args.scale_clients,
                )
                step.test = "scale"
                results.append(step)
                print(_row(step), flush=True)
            except ServerUnavailable as exc:
                unavailable[("imprint", "scale")] = str(exc)
                print(f"imprint scale not run: {exc}")
            finally:
                imprint.stop()

    dora = {(s.server, s.rate): s for s in results if s.test == "dora"}
    if dora:
        print("\n== DORA at each offered rate (relayed, full mode)")
        print(
            f"{'offered/s':>9} {'imprint drop%':>13} {'kea drop%':>9} {'imprint CPU us':>14} "
            f"{'kea CPU us':>10} {'CPU imprint/kea':>15}"
        )
        for rate in rates:
            imp, kea = dora.get(("imprint", rate)), dora.get(("kea", rate))
            ratio = (
                f"{imp.cpu_us / kea.cpu_us:.2f}"
                if imp and kea and imp.cpu_us and kea.cpu_us
                else "-"
            )
            print(
                f"{rate:>9} {(f'{imp.drop_pct:.2f}' if imp else '-'):>13} "
                f"{(f'{kea.drop_pct:.2f}' if kea else '-'):>9} "
                f"{(f'{imp.cpu_us:.0f}' if imp and imp.cpu_us else '-'):>14} "
                f"{(f'{kea.cpu_us:.0f}' if kea and kea.cpu_us else '-'):>10} {ratio:>15}"
            )

    print(
        "\n== summary: highest rate with drops <= "
        f"{args.max_drop_pct:g}% (p99 latency at that rate)"
    )
    print(
        f"{'test':6} "
        + " ".join(f"{n + ' rate/s':>14} {n + ' p99 ms':>14}" for n in names)
        + ("   imprint/kea" if {"kea", "imprint"} <= set(names) else "")
    )
    summary: dict[str, Any] = {}
    for test in tests:
        cells = []
        tops: dict[str, Step | None] = {}
        for name in names:
            top = best([s for s in results if s.server == name and s.test == test])
            tops[name] = top
            if (name, test) in unavailable:
                cells.append(f"{'not run':>14} {'-':>14}")
            else:
                # "+": even the highest rate passed, so the limit lies beyond the range.
                shown = f"{top.rate}{'+' if top.rate == rates[-1] else ''}" if top else "0"
                cells.append(f"{shown:>14} {_fmt(top.p99_ms if top else None):>14}")
        ratio = ""
        kea, imp = tops.get("kea"), tops.get("imprint")
        if {"kea", "imprint"} <= set(names):
            if kea and imp and (("imprint", test) not in unavailable):
                ratio = f"   {imp.rate / kea.rate:.2f}"
            else:
                ratio = "   n/a"
        print(f"{test:6} " + " ".join(cells) + ratio)
        summary[test] = {n: (asdict(t) if t else None) for n, t in tops.items()} | {
            "ratio_imprint_kea": ratio.strip() or None
        }
    if unavailable:
        print("\nnot run:")
        for (name, test), why in unavailable.items():
            # The last line of a log tail or traceback is the one that says what went wrong.
            lines = [line for line in why.splitlines() if line.strip()]
            print(f"  {name} {test}: {lines[-1] if lines else '?'}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "steps": [asdict(s) for s in results],
                    "summary": summary,
                    "unavailable": {f"{n}/{t}": w for (n, t), w in unavailable.items()},
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
