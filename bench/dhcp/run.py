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
            # Per-packet INFO logging would measure the log writer, not the server.
            severity="WARN",
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

    def describe(self) -> str:
        tool = find_tool("kea-dhcp4")
        version = "?"
        if tool is not None:
            version = subprocess.run([tool, "-v"], capture_output=True, text=True).stdout.strip()
        threads = f"{self.threads} threads" if self.threads else "single-threaded (Kea default)"
        return f"kea-dhcp4 {version}, memfile leases, host reservations, {threads}"


class ImprintServer:
    """`imprint serve --config FILE` with the clients imported as devices of one tenant."""

    name = "imprint"

    def __init__(self, executable: Path) -> None:
        self.executable = executable
        self.tp: Topology | None = None
        self.proc: subprocess.Popen[str] | None = None

    def config_toml(self, workdir: Path, tp: Topology, mode: str) -> str:
        """The server's config (keys of server/config.py)."""
        lines = [
            "[store]",
            f'path = "{workdir / "imprint.db"}"',
            "",
            "[tls]",
            "enabled = false",
            "",
            "[log]",
            'level = "WARNING"',
            "",
            "[mdns]",
            "enabled = false",
            "",
            "[dhcp]",
            "enabled = true",
            f'mode = "{mode}"',
            f'interface = "{tp.server.ifname}"',
            f'server_ip = "{tp.server.ip}"',
        ]
        if mode == "full":
            # Subnets and their pool matter only where Imprint hands out addresses.
            lines += ["", "[[dhcp.subnets]]", f'subnet = "{BENCH_SUBNET}"', f'pool = "{POOL}"']
        # Every registered client gets the same option 43 bytes as Kea's reservations carry.
        lines += [
            "",
            "[[dhcp.profiles]]",
            'name = "bench"',
            'match_kind = "any"',
            "",
            "[[dhcp.profiles.options]]",
            "code = 43",
            'encoding = "hex"',
            f'value = "{VENDOR_43.hex()}"',
        ]
        return "\n".join(lines) + "\n"

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
        config.write_text(self.config_toml(workdir, tp, mode))
        devices = workdir / "devices.csv"
        devices.write_text("MAC ID,Location\n" + "".join(f"{m},bench\n" for m in macs))
        self._admin(tp, config, "tenants", "create", "--id", "bench", "--name", "Bench")
        self._admin(tp, config, "devices", "import", "--tenant", "bench", str(devices))
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
) -> Iterator[Step]:
    """One server's sweep, one measured step per `next()`: rising rates until the first
    failure, then `refine` bisection steps between the last pass and the first failure."""
    measure = {"dora": measure_dora, "proxy": measure_proxy, "inform": measure_inform}[test]
    client = tp.hosts[0]

    def step_at(rate: int) -> Step:
        load = os.getloadavg()[0]
        step = judge(measure(tp, client, server.name, mac_list, rate, seconds), max_drop_pct)
        step.load1 = round(load, 2)
        return step

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
    f"{'server':8} {'test':6} {'rate/s':>7} {'offered':>8} {'sent':>7} {'answered':>8} "
    f"{'drop%':>7} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} {'OFFER p99':>9} {'load':>5}  result"
)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _load(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _row(s: Step) -> str:
    verdict = "pass" if s.passed else "FAIL"
    note = f" ({s.note})" if s.note else ""
    return (
        f"{s.server:8} {s.test:6} {s.rate:>7} {s.offered_rate:>8.0f} {s.sent:>7} "
        f"{s.completed:>8} {s.drop_pct:>7.2f} {_fmt(s.p50_ms):>7} {_fmt(s.p99_ms):>7} "
        f"{_fmt(s.max_ms):>7} {_fmt(s.first_p99_ms):>9} {_load(s.load1):>5}  {verdict}{note}"
    )


def best(steps: list[Step]) -> Step | None:
    """The highest passing step."""
    passed = [s for s in steps if s.passed]
    return max(passed, key=lambda s: s.rate) if passed else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--servers", default="kea,imprint", help="comma list of: kea, imprint")
    ap.add_argument("--tests", default="dora,inform", help="comma list of: dora, proxy, inform")
    ap.add_argument(
        "--rates",
        default="500,1000,2000,4000,8000,16000,24000,32000,48000,64000",
        help="per second",
    )
    ap.add_argument("--seconds", type=int, default=5, help="length of each step")
    ap.add_argument("--clients", type=int, default=1000, help="registered client MACs")
    ap.add_argument("--max-drop-pct", type=float, default=1.0)
    ap.add_argument("--refine", type=int, default=2, help="bisection steps after the first FAIL")
    ap.add_argument("--keep-going", action="store_true", help="measure every rate")
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
    catalog: dict[str, ServerUnderTest] = {
        "kea": KeaServer(args.kea_threads),
        "imprint": ImprintServer(args.imprint),
    }
    servers = [catalog[n] for n in names]
    swept = sweep_stale_namespaces()
    if swept:
        print(f"removed stale namespaces: {', '.join(swept)}")

    macs = bench_macs(args.clients)
    results: list[Step] = []
    unavailable: dict[tuple[str, str], str] = {}
    print(
        f"{args.clients} clients, {args.seconds:g} s per step, pass = drops <= "
        f"{args.max_drop_pct:g}% at the offered rate"
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
                sweeps = {
                    server.name: sweep_steps(
                        topologies[server.name],
                        server,
                        test,
                        mac_list,
                        rates,
                        args.seconds,
                        args.max_drop_pct,
                        args.refine,
                        args.keep_going,
                    )
                    for server in started
                }
                for step in interleave(sweeps):
                    results.append(step)
                    print(_row(step), flush=True)
            finally:
                for server in started:
                    server.stop()
            time.sleep(0.5)

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
