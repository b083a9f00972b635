#!/usr/bin/env python3
"""Boot-storm benchmark: N devices power on at once, discover Imprint by DHCP and provision.

For each N (default 1,000 then 10,000) it starts a fresh real server (`imprint serve`, TLS on
with its self-signed certificate, DHCP in inform mode on loopback lab ports), registers N
devices and issues their codes through the REST API, downloads the export CSV, and runs
`imprint-device fleet` on it as a separate process. It prints wall time until every device
shows its sign-in screen, time to provision per device (p50/p99), failures by reason, and
where the CPU went (server and emulator CPU seconds). Figures only, no assertions.

    .venv/bin/python bench/boot_storm/run.py [--devices 1000 10000] [--concurrency 200]

Everything stays on 127.0.0.1 (or 127.x.y.z with --address-base). See bench/boot_storm/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

TENANT = "storm"
TENANT_NAME = "Boot Storm Ltd"
USER = "storm@boot-storm.example"


class Approver(threading.Thread):
    """The admin side: approves every pending sign-in in bulk, over the REST API, as devices
    show their user codes (one POST .../sign-ins/approve {"all_pending": true} every
    `period` seconds while the fleet runs)."""

    def __init__(self, api: Api, server_pid: int, period: float = 0.25) -> None:
        super().__init__(daemon=True, name="approver")
        self.api = api
        self.server_pid = server_pid
        self.period = period
        self._halt = threading.Event()
        self.calls = 0
        self.approved = 0
        self.errors: list[str] = []
        self.call_s: list[float] = []

    def run(self) -> None:
        while not self._halt.is_set():
            t0 = time.perf_counter()
            try:
                status, body = self.api.call(
                    "POST",
                    f"/api/v1/tenants/{TENANT}/sign-ins/approve",
                    json.dumps({"user": USER, "all_pending": True}).encode(),
                )
            except OSError as exc:
                self.errors.append(f"{type(exc).__name__}: {exc}")
            else:
                self.calls += 1
                self.call_s.append(time.perf_counter() - t0)
                if status == 200:
                    self.approved += int(json.loads(body)["approved"])
                else:
                    self.errors.append(f"HTTP {status}: {body[:200]!r}")
            self._halt.wait(self.period)

    def stop(self) -> None:
        if self.is_alive():
            self._halt.set()
            self.join(60)

    def summary(self) -> dict[str, Any]:
        calls = sorted(self.call_s)
        return {
            "calls": self.calls,
            "approved": self.approved,
            "errors": len(self.errors),
            "error_examples": self.errors[:3],
            "call_p50_s": calls[len(calls) // 2] if calls else None,
            "call_max_s": calls[-1] if calls else None,
        }


def console_script(name: str) -> Path:
    """A console script installed next to this interpreter."""
    exe = Path(sys.executable).with_name(name)
    if not exe.exists():
        raise SystemExit(f"{exe} not found: install the package (pip install -e .) in this venv")
    return exe


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def write_config(
    state: Path,
    ports: dict[str, int],
    mdns: bool,
    neighbours: dict[str, str],
    *,
    interval: int = 1,
    connections: int = 1024,
) -> Path:
    """A lab-like config: TLS on (self-signed), DHCP inform and mDNS on loopback lab ports."""
    lines = [
        "[store]",
        'path = "state/imprint.db"',
        "[http]",
        'host = "127.0.0.1"',
        f"port = {ports['http']}",
        # Devices waiting for approval keep their connection open between polls (keep-alive),
        # all from 127.0.0.1 unless --address-base: up to N at once.
        f"max_connections = {connections}",
        f"max_connections_per_source = {connections}",
        "[tls]",
        "enabled = true",
        "[dhcp]",
        "enabled = true",
        'mode = "inform"',
        'host = "127.0.0.1"',
        f"port = {ports['dhcp']}",
        f"client_port = {ports['client']}",
        'server_ip = "127.0.0.1"',
        "[mdns]",
        f"enabled = {'true' if mdns else 'false'}",
        'host = "127.0.0.1"',
        f"port = {ports['mdns']}",
    ]
    if neighbours:
        # Loopback has no link layer: tell the responder which MAC each device address is.
        pairs = ", ".join(f'"{ip}" = "{mac}"' for ip, mac in neighbours.items())
        lines.append(f"static_neighbours = {{ {pairs} }}")
    lines += [
        # Every emulated device shares 127.0.0.1 (unless --address-base), so the per-source
        # limits that protect a real site (one address per device) would throttle the bench.
        "[provision]",
        "rate_per_source = 100000",
        "burst_per_source = 100000",
        "[oauth]",
        # RFC 8628's default is 5 s; a device waits one interval before its first poll, so the
        # interval is a floor under the time to signed in. 1 s is the least the server allows.
        f"interval_s = {interval}",
        "[log]",
        'level = "WARNING"',
    ]
    cfg = state / "imprint.toml"
    cfg.write_text("\n".join(lines) + "\n")
    return cfg


def macs(n: int) -> list[str]:
    return [
        f"02:b0:{i >> 24 & 0xFF:02x}:{i >> 16 & 0xFF:02x}:{i >> 8 & 0xFF:02x}:{i & 0xFF:02x}"
        for i in range(n)
    ]


class Api:
    """The server's REST API over HTTPS (the self-signed certificate is not verified: loopback)."""

    def __init__(self, port: int, token: str = "") -> None:
        self.base = f"https://127.0.0.1:{port}"
        self.token = token
        self.ctx = ssl.create_default_context()
        self.ctx.check_hostname = False
        self.ctx.verify_mode = ssl.CERT_NONE

    def call(
        self, method: str, path: str, body: bytes | None = None, ctype: str = "application/json"
    ) -> tuple[int, bytes]:
        req = urllib.request.Request(self.base + path, data=body, method=method)
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        if body is not None:
            req.add_header("Content-Type", ctype)
        try:
            with urllib.request.urlopen(req, context=self.ctx, timeout=600) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def ok(
        self, method: str, path: str, body: Any = None, ctype: str = "application/json"
    ) -> bytes:
        data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        status, out = self.call(method, path, data, ctype)
        if status >= 300:
            raise SystemExit(f"{method} {path}: HTTP {status}: {out[:500]!r}")
        return out


def wait_ready(api: Api, proc: subprocess.Popen[bytes], limit: float = 60.0) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"imprint serve exited with {proc.returncode}")
        with contextlib.suppress(OSError):
            status, body = api.call("GET", "/readyz")
            if status == 200 and json.loads(body).get("ready"):
                return
        time.sleep(0.1)
    raise SystemExit("imprint serve did not become ready in 60 s")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a running process (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def run_one(n: int, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="imprint-storm-") as tmp:
        state = Path(tmp)
        ports = {
            "http": free_port(socket.SOCK_STREAM),
            "dhcp": free_port(socket.SOCK_DGRAM),
            "client": free_port(socket.SOCK_DGRAM),
            "mdns": free_port(socket.SOCK_DGRAM),
        }
        neighbours = {}
        if args.discover != "dhcp" and args.address_base:
            base = ipaddress.IPv4Address(args.address_base)
            neighbours = {str(base + i): mac for i, mac in enumerate(macs(n))}
        cfg = write_config(
            state,
            ports,
            mdns=args.discover != "dhcp",
            neighbours=neighbours,
            interval=args.interval,
            connections=max(1024, min(n + args.concurrency + 64, 1_000_000)),
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("IMPRINT_")}
        serve = [str(console_script("imprint")), "serve", "--config", str(cfg)]
        if args.profile:
            prof = args.profile.with_suffix(f".server.{n}.prof")
            serve = [sys.executable, "-m", "cProfile", "-o", str(prof), "-m", "server", *serve[1:]]
        server = subprocess.Popen(
            serve,
            stdout=subprocess.DEVNULL,
            stderr=open(state / "serve.log", "wb"),  # noqa: SIM115 - closed with the process
            env=env,
            start_new_session=True,
        )
        try:
            api = Api(ports["http"])
            wait_ready(api, server)
            token = subprocess.run(
                [
                    str(console_script("imprint")),
                    "tokens",
                    "create",
                    "--role",
                    "operator",
                    "--config",
                    str(cfg),
                    "--name",
                    "boot-storm",
                ],
                check=True,
                capture_output=True,
                text=True,
                env=env,
            ).stdout.strip()
            api.token = token
            t0 = time.perf_counter()
            api.ok("POST", "/api/v1/tenants", {"id": TENANT, "name": TENANT_NAME})
            csv_body = "MAC ID,Location\r\n" + "".join(
                f"{mac},rack {i // 48} port {i % 48}\r\n" for i, mac in enumerate(macs(n))
            )
            api.ok(
                "POST", f"/api/v1/tenants/{TENANT}/devices/import", csv_body.encode(), "text/csv"
            )
            api.ok(
                "POST",
                f"/api/v1/tenants/{TENANT}/verification-codes",
                {"all_awaiting_activation": True},
            )
            export = api.ok("GET", f"/api/v1/tenants/{TENANT}/devices/export.csv")
            if not args.no_sign_in:
                # The account every device signs in as (one argon2id hash, once).
                api.ok(
                    "POST",
                    f"/api/v1/tenants/{TENANT}/users",
                    {"username": USER, "display_name": "Storm", "password": "storm-password-1"},
                )
            setup_s = time.perf_counter() - t0
            csv_path = state / "export.csv"
            csv_path.write_bytes(export)
            # The server polls the store for CLI changes; the REST writes are already indexed.
            cmd = [
                str(console_script("imprint-device")),
                "fleet",
                "--csv",
                str(csv_path),
                "--concurrency",
                str(args.concurrency),
                "--discover",
                args.discover,
                "--server",
                f"127.0.0.1:{ports['dhcp']}",
                "--client-port",
                str(ports["client"]),
                "--retry-initial",
                str(args.retry_initial),
                "--json",
            ]
            if args.discover != "dhcp":
                cmd += ["--mdns-server", f"127.0.0.1:{ports['mdns']}"]
            if args.address_base:
                cmd += ["--address-base", args.address_base]
            if args.no_keep_alive:
                cmd.append("--no-keep-alive")
            if not args.no_sign_in:
                cmd += ["--sign-in", "--sign-in-time-limit", str(args.sign_in_time_limit)]
            if args.share_tls_sessions:
                cmd.append("--share-tls-sessions")
            if args.profile:
                # Same command under cProfile: python -m cProfile -o FILE -m device_emulator ...
                prof = args.profile.with_suffix(f".{n}.prof")
                cmd = [
                    sys.executable,
                    "-m",
                    "cProfile",
                    "-o",
                    str(prof),
                    "-m",
                    "device_emulator",
                    *cmd[1:],
                ]
            load_before = os.getloadavg()[0]
            server_cpu0 = cpu_seconds(server.pid)
            before = os.times()
            started = time.perf_counter()
            approver = Approver(Api(ports["http"], token), server.pid)
            if not args.no_sign_in:
                approver.start()
            try:
                fleet = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3600)
            finally:
                approver.stop()
            outer_wall = time.perf_counter() - started
            server_cpu = cpu_seconds(server.pid) - server_cpu0
            if fleet.returncode not in (0, 2) or not fleet.stdout.strip():
                raise SystemExit(f"fleet failed ({fleet.returncode}): {fleet.stderr[-2000:]}")
            report: dict[str, Any] = json.loads(fleet.stdout)
            report["server_metrics"] = scrape(api)
            after = os.times()
            report.update(
                n=n,
                setup_s=setup_s,
                fleet_process_wall_s=outer_wall,
                # Other work on the machine skews every figure: report the 1-minute load.
                discover=args.discover,
                load_before=load_before,
                load_after=os.getloadavg()[0],
                server_cpu_s=server_cpu,
                approvals=approver.summary(),
                emulator_cpu_s=(after.children_user - before.children_user)
                + (after.children_system - before.children_system),
            )
            return report
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


def scrape(api: Api) -> dict[str, float]:
    """The server's DHCP and provisioning counters (Prometheus text), for where the time went."""
    _, body = api.call("GET", "/metrics")
    out: dict[str, float] = {}
    for line in body.decode().splitlines():
        if line.startswith(
            ("imprint_dhcp_packets", "imprint_code_attempts", "imprint_dhcp_errors")
        ):
            name, _, value = line.rpartition(" ")
            with contextlib.suppress(ValueError):
                out[name] = float(value)
    return out


def ms(v: float | None) -> str:
    return "-" if v is None else f"{v * 1000:.1f} ms"


def summary(r: dict[str, Any]) -> dict[str, Any]:
    """The one JSON object per N that --json prints."""
    n = r["devices"]
    done = r["signed_in"] if r["sign_in"] else r["provisioned"]
    return {
        "devices": n,
        "signed_in": r["signed_in"],
        "provisioned": r["provisioned"],
        "failures": r["failures_by_step"],
        "wall_s": r["wall_time_s"],
        "server_cpu_s": r["server_cpu_s"],
        "emulator_cpu_s": r["emulator_cpu_s"],
        "server_cpu_ms_per_device": 1000 * r["server_cpu_s"] / n if n else None,
        "emulator_cpu_ms_per_device": 1000 * r["emulator_cpu_s"] / n if n else None,
        "devices_per_s": done / r["wall_time_s"] if r["wall_time_s"] else None,
        "steps_s": r["steps_s"],
        "tls_sessions": r["tls_sessions"],
        "approvals": r["approvals"],
        "concurrency": r["concurrency"],
        "load_before": r["load_before"],
        "load_after": r["load_after"],
    }


def show(r: dict[str, Any]) -> None:
    n = r["devices"]
    print(
        f"\nN = {r['n']} devices (concurrency {r['concurrency']}), setup over REST {r['setup_s']:.1f} s"
    )
    print(f"  provisioned          {r['provisioned']} / {n}")
    if r["sign_in"]:
        print(f"  signed in            {r['signed_in']} / {n}")
    by_step = r["failures_by_step"]
    print(f"  failed               {sum(sum(c.values()) for c in by_step.values())}")
    for step, counts in by_step.items():
        for reason, count in counts.items():
            example = r["failure_examples"].get(reason, "")
            print(f"    {step}: {reason}: {count}  e.g. {example}")
    goal = "signed in" if r["sign_in"] else "provisioned"
    done = r["signed_in"] if r["sign_in"] else r["provisioned"]
    rate = done / r["wall_time_s"] if r["wall_time_s"] else 0
    print(
        f"  wall time            {r['wall_time_s']:.2f} s to all {goal} ({rate:.0f} devices/s; "
        f"fleet process incl. start {r['fleet_process_wall_s']:.2f} s)"
    )
    for step, t in r["steps_s"].items():
        print(f"    {step:<18} p50 {ms(t['p50'])}  p99 {ms(t['p99'])}  max {ms(t['max'])}")
    print(
        f"  CPU                  server {r['server_cpu_s']:.1f} s "
        f"({1000 * r['server_cpu_s'] / n:.2f} ms/device), emulator {r['emulator_cpu_s']:.1f} s "
        f"({1000 * r['emulator_cpu_s'] / n:.2f} ms/device); load average "
        f"{r['load_before']:.1f} before, {r['load_after']:.1f} after"
    )
    tls = r["tls_sessions"]
    print(f"  TLS sessions         {tls['resumed']} resumed of {tls['offered']} offered")
    a = r["approvals"]
    if a["calls"]:
        print(
            f"  approvals (admin)    {a['approved']} in {a['calls']} bulk calls "
            f"(p50 {ms(a['call_p50_s'])}, max {ms(a['call_max_s'])}), {a['errors']} errors"
            + (f": {a['error_examples']}" if a["errors"] else "")
        )
    for name, value in r["server_metrics"].items():
        print(f"  server {name} = {value:g}")
    if r.get("dhcp_unmatched_replies"):
        print(f"  DHCP replies for no waiting device: {r['dhcp_unmatched_replies']}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--devices", type=int, nargs="+", default=[1000, 10000])
    p.add_argument("--concurrency", type=int, default=200)
    p.add_argument("--discover", choices=["dhcp", "mdns", "both"], default="dhcp")
    p.add_argument("--address-base", help="per-device loopback addresses, e.g. 127.1.0.0")
    p.add_argument("--retry-initial", type=float, default=4.0, help="DHCP retransmission (s)")
    p.add_argument("--no-keep-alive", action="store_true")
    p.add_argument(
        "--no-sign-in", action="store_true", help="stop at the sign-in screen (the old storm)"
    )
    p.add_argument("--interval", type=int, default=1, help="[oauth] interval_s (1)")
    p.add_argument("--sign-in-time-limit", type=float, default=300.0)
    p.add_argument(
        "--share-tls-sessions",
        action="store_true",
        help="the fleet's devices resume one TLS session (each always resumes its own)",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object per N (devices, signed_in, failures, wall_s, "
        "server_cpu_s, emulator_cpu_s, ...) instead of the text",
    )
    p.add_argument("--out", type=Path, help="also write every figure of every N to this file")
    p.add_argument(
        "--profile",
        type=Path,
        help="run the fleet and the server under cProfile: FILE.N.prof, FILE.server.N.prof",
    )
    args = p.parse_args(argv)
    if not args.json:
        print(
            f"boot storm on {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, "
            f"discovery {args.discover}, sign-in {'off' if args.no_sign_in else 'on'}"
        )
    results = []
    for n in args.devices:
        r = run_one(n, args)
        if args.json:
            print(json.dumps(summary(r)), flush=True)
        else:
            show(r)
        results.append(r)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
