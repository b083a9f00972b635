"""The DHCP log of a real `imprint serve` at its default level (INFO, JSON): no line per
decision, a summary line per interval counting decisions by reason (none when idle), the
first sighting of an unregistered MAC once, and `imprint trace MAC [--off]` switching one MAC's
decisions to INFO with full detail while the server runs."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from scapy.layers.dhcp import BOOTP

from tests.helpers.dhcp import inform
from tests.helpers.proc import free_port, run_imprint, serve, wait_ready
from tests.helpers.server import wait_until

MAC = "02:00:5e:00:0d:01"
OTHER = "02:00:5e:00:0d:02"  # registered too, never traced
STRANGER = "02:00:5e:00:0d:99"
SUMMARY_S = 0.5


@dataclass
class Served:
    proc: subprocess.Popen[str]
    config: Path
    log: Path
    dhcp_port: int
    device: socket.socket

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(x) for x in self.log.read_text().splitlines() if x.startswith("{")]

    def dhcp(self) -> list[dict[str, Any]]:
        return [r for r in self.records() if r["logger"] == "imprint.dhcp"]

    def ask(self, mac: str, xid: int, answered: bool = True) -> None:
        """One DHCPINFORM from `mac`; with `answered`, wait for its ACK."""
        self.device.sendto(inform(mac, xid), ("127.0.0.1", self.dhcp_port))
        if not answered:
            return
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if BOOTP(self.device.recv(4096)).xid == xid:
                return
        raise AssertionError(f"no reply to xid {xid:#x}")

    def summaries(self) -> list[dict[str, Any]]:
        return [r for r in self.dhcp() if r["msg"].startswith("DHCP last ")]

    def summed(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for r in self.summaries():
            for k, n in r["decisions"].items():
                total[k] = total.get(k, 0) + n
        return total


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    device = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    device.bind(("127.0.0.1", 0))
    device.settimeout(5)
    http_port, dhcp_port = free_port(), free_port(socket.SOCK_DGRAM)
    config = tmp_path / "imprint.toml"
    # The shipped [log] defaults but for the interval (short, so the test is quick).
    config.write_text(
        f"""
[store]
path = "state/imprint.db"
[http]
host = "127.0.0.1"
port = {http_port}
public_url = "http://127.0.0.1:{http_port}"
[tls]
enabled = false
[dhcp]
enabled = true
mode = "inform"
host = "127.0.0.1"
port = {dhcp_port}
client_port = {device.getsockname()[1]}
server_ip = "127.0.0.1"
[log]
format = "json"
summary_interval_s = {SUMMARY_S}
"""
    )
    run_imprint(config, "db", "init")
    run_imprint(config, "tenants", "create", "--id", "acme", "--name", "Acme")
    run_imprint(config, "devices", "add", "--tenant", "acme", "--mac", MAC)
    run_imprint(config, "devices", "add", "--tenant", "acme", "--mac", OTHER)
    log = tmp_path / "serve.log"
    proc = serve(config, log)
    try:
        wait_ready(proc, http_port, log)
        yield Served(proc, config, log, dhcp_port, device)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        device.close()


def test_default_log_summarises_and_traces_one_mac_on_demand(served: Served) -> None:
    for xid in range(1, 4):
        served.ask(MAC, xid)
    served.ask(STRANGER, 4, answered=False)
    served.ask(STRANGER, 5, answered=False)
    served.ask(OTHER, 6)  # answered after both strangers' datagrams: they were handled
    want = {"reply IMP_REGISTERED": 4, "ignore IMP_UNREGISTERED": 2}
    wait_until(lambda: served.summed() == want, 10, f"summaries adding up to {want}")
    summary = served.summaries()[0]
    assert summary["level"] == "INFO" and summary["interval_s"] == SUMMARY_S
    assert summary["msg"].startswith(f"DHCP last {SUMMARY_S:g} s: ")

    # At INFO: no line per decision, and the stranger's first sighting exactly once.
    assert [r for r in served.dhcp() if "decision" in r] == []
    firsts = [r for r in served.dhcp() if r["msg"].startswith("DHCP first sighting")]
    assert [(r["level"], r["mac"]) for r in firsts] == [("INFO", STRANGER)]

    # An idle interval logs nothing.
    before = len(served.summaries())
    time.sleep(SUMMARY_S * 4)
    assert len(served.summaries()) == before

    # Tracing one MAC: its decisions at INFO with full detail, the other's still silent.
    done = run_imprint(served.config, "trace", MAC.upper())
    assert f"{MAC}: traced" in done.stdout
    assert run_imprint(served.config, "trace").stdout.split() == [MAC]
    wait_until(lambda: any(r.get("trace_macs") == [MAC] for r in served.dhcp()), 10, "trace pickup")
    served.ask(OTHER, 0x20)
    served.ask(MAC, 0x21)
    # The log is written by a thread: the line may trail the reply.
    traced = wait_until(
        lambda: [r for r in served.dhcp() if "decision" in r] or None, 10, "the traced line"
    )
    assert len(traced) == 1, traced
    line = traced[0]
    assert line["level"] == "INFO" and line["traced"] is True
    assert (line["mac"], line["xid"], line["decision"], line["reason"]) == (
        MAC,
        "00000021",
        "reply",
        "IMP_REGISTERED",
    )
    assert line["vendor_class"] == "MS-UC-Client" and line["ciaddr"] == "127.0.0.1"
    assert 55 in line["options_received"] and 53 in line["options_sent"]

    # --off: back to the summary only.
    assert "not traced" in run_imprint(served.config, "trace", MAC, "--off").stdout
    wait_until(
        lambda: any(r.get("trace_macs") == [] for r in served.dhcp()), 10, "trace switched off"
    )
    served.ask(MAC, 0x22)
    want = {"reply IMP_REGISTERED": 7, "ignore IMP_UNREGISTERED": 2}
    wait_until(lambda: served.summed() == want, 10, f"summaries adding up to {want}")
    assert len([r for r in served.dhcp() if "decision" in r]) == 1


def test_trace_refuses_a_bad_mac_and_off_without_one(tmp_path: Path) -> None:
    cfg = tmp_path / "imprint.toml"
    cfg.write_text("[store]\npath = 'state/imprint.db'\n[tls]\nenabled = false\n")
    (tmp_path / "state").mkdir()
    bad = run_imprint(cfg, "trace", "not-a-mac", check=False)
    assert bad.returncode == 2 and "not a MAC address" in bad.stderr
    off = run_imprint(cfg, "trace", "--off", check=False)
    assert off.returncode == 2 and "--off needs the MAC" in off.stderr
    assert run_imprint(cfg, "trace", MAC, "--off").stdout.startswith(f"{MAC}: not traced (it was")
    assert run_imprint(cfg, "trace").stdout == ""
