"""What the DHCP service logs at each level: decisions at DEBUG, traced MACs at INFO, the first
sighting of an unregistered MAC once, and the summary of decisions by reason. Real decode,
policy and replies; the records are the ones the service emits (caplog)."""

from __future__ import annotations

import logging

import pytest

from server.core.metrics import Counter, Registry
from server.dhcp.responder import Mode
from server.dhcp.service import DhcpConfig, DhcpService, summary_line
from server.registry.discovered import DiscoveredDevices
from server.registry.model import DeviceState, DeviceView, ProvisioningEndpoint
from tests.helpers.fixtures import scapy_dhcp

MAC = "02:00:5e:00:01:01"
STRANGER = "02:00:5e:00:09:09"
EP = ProvisioningEndpoint("https", "imprint.example.net", 443, "/provision", "ab" * 32)


def make(discovered: DiscoveredDevices | None = None) -> tuple[DhcpService, Registry]:
    reg = Registry()
    view = DeviceView(MAC, "acme", "Acme", DeviceState.AWAITING_ACTIVATION, "desk")
    cfg = DhcpConfig(mode=Mode.INFORM, server_ip="198.18.77.1", endpoint=EP)
    disc = discovered if discovered is not None else DiscoveredDevices(max_entries=2)
    return DhcpService(cfg, {MAC: view}, reg, disc, clock=lambda: 1e9), reg


async def traffic(svc: DhcpService) -> None:
    """Two INFORMs from the registered MAC, two from a stranger, one DISCOVER, one junk."""
    src = ("198.18.77.11", 68)
    for xid in (1, 2):
        await svc.handle(scapy_dhcp("inform", mac=MAC, xid=xid, ciaddr=src[0]), src, "eth0")
    for xid in (3, 4):
        await svc.handle(scapy_dhcp("inform", mac=STRANGER, xid=xid, ciaddr=src[0]), src, "eth0")
    await svc.handle(scapy_dhcp("discover", mac=MAC, xid=5), ("0.0.0.0", 68), "eth0")
    await svc.handle(b"junk", src, "eth0")


def dhcp_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "imprint.dhcp"]


def decisions(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in dhcp_records(caplog) if hasattr(r, "decision")]


async def test_info_logs_no_decision_only_the_first_sighting(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="imprint.dhcp")
    svc, _ = make()
    await traffic(svc)
    assert decisions(caplog) == []
    [first] = dhcp_records(caplog)
    assert first.levelno == logging.INFO
    assert first.getMessage() == f"DHCP first sighting of unregistered {STRANGER} on eth0"
    assert first.__dict__["mac"] == STRANGER


async def test_debug_logs_every_decision(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="imprint.dhcp")
    svc, _ = make()
    await traffic(svc)
    got = [(r.levelno, r.__dict__["mac"], r.__dict__["reason"]) for r in decisions(caplog)]
    assert got == [
        (logging.DEBUG, MAC, "IMP_REGISTERED"),
        (logging.DEBUG, MAC, "IMP_REGISTERED"),
        (logging.DEBUG, STRANGER, "IMP_UNREGISTERED"),
        (logging.DEBUG, STRANGER, "IMP_UNREGISTERED"),
        (logging.DEBUG, MAC, "DHCP_TYPE_NOT_SERVED"),
    ]
    assert any("DHCP_TRUNCATED" in r.getMessage() for r in dhcp_records(caplog))


async def test_warning_logs_nothing_for_traffic(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="imprint.dhcp")
    svc, _ = make()
    await traffic(svc)
    svc.log_summary(60)
    assert dhcp_records(caplog) == []


async def test_a_traced_mac_is_logged_at_info_with_detail_and_no_one_else(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="imprint.dhcp")
    svc, _ = make()
    svc.set_trace(frozenset({STRANGER}))
    svc.set_trace(frozenset({STRANGER}))  # unchanged: said once
    assert [r.getMessage() for r in dhcp_records(caplog)] == [f"DHCP tracing {STRANGER}"]
    await traffic(svc)
    traced = decisions(caplog)
    assert [(r.levelno, r.__dict__["xid"]) for r in traced] == [
        (logging.INFO, "00000003"),
        (logging.INFO, "00000004"),
    ]
    d = traced[0].__dict__
    assert d["traced"] is True and d["decision"] == "ignore" and d["ciaddr"] == "198.18.77.11"
    assert d["giaddr"] == "0.0.0.0" and 53 in d["options_received"]
    svc.set_trace(frozenset())
    assert dhcp_records(caplog)[-1].getMessage() == "DHCP tracing no MACs"
    caplog.clear()
    await traffic(svc)
    assert decisions(caplog) == []


async def test_summary_counts_decisions_by_reason_then_starts_afresh(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="imprint.dhcp")
    svc, reg = make()
    await traffic(svc)
    svc.count_shed(1)  # what the transport counts when it sheds a DISCOVER
    caplog.clear()
    svc.log_summary(60)
    [line] = dhcp_records(caplog)
    assert line.levelno == logging.INFO
    assert line.getMessage() == (
        "DHCP last 60 s: 7 datagrams: ignore IMP_UNREGISTERED 2, reply IMP_REGISTERED 2, "
        "drop DHCP_TRUNCATED 1, ignore DHCP_TYPE_NOT_SERVED 1, shed discover 1"
    )
    assert line.__dict__["decisions"]["reply IMP_REGISTERED"] == 2
    assert line.__dict__["total"] == 7 and line.__dict__["interval_s"] == 60
    shed = reg.get("imprint_dhcp_packets_shed_total")
    assert isinstance(shed, Counter) and shed.value("discover") == 1
    caplog.clear()
    svc.log_summary(60)  # nothing since: no line
    assert dhcp_records(caplog) == []


async def test_with_several_links_each_summary_names_its_link(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="imprint.dhcp")
    reg = Registry()
    view = DeviceView(MAC, "acme", "Acme", DeviceState.AWAITING_ACTIVATION, "desk")
    services = [
        DhcpService(
            DhcpConfig(mode=Mode.INFORM, server_ip=ip, endpoint=EP), {MAC: view}, reg, link=link
        )
        for link, ip in (("eth0.100", "10.100.0.1"), ("eth0.200", "10.200.0.1"))
    ]
    src = ("10.100.0.11", 68)
    await services[0].handle(scapy_dhcp("inform", mac=MAC, xid=1, ciaddr=src[0]), src, "eth0.100")
    caplog.clear()
    for svc in services:
        svc.log_summary(60)
    [line] = dhcp_records(caplog)  # the idle link says nothing
    assert line.getMessage() == "DHCP on eth0.100 last 60 s: 1 datagrams: reply IMP_REGISTERED 1"
    assert line.__dict__["link"] == "eth0.100"


def test_summary_line_orders_by_count_then_name() -> None:
    text, counts = summary_line({("reply", "B"): 1, ("reply", "A"): 1, ("ignore", "X"): 5})
    assert text == "7 datagrams: ignore X 5, reply A 1, reply B 1"
    assert list(counts) == ["ignore X", "reply A", "reply B"]


async def test_first_sighting_memory_is_bounded_by_the_discovered_list(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="imprint.dhcp")
    svc, _ = make(DiscoveredDevices(max_entries=2))
    src = ("198.18.77.11", 68)
    macs = [f"02:00:5e:00:0a:0{i}" for i in range(3)]
    for mac in [*macs, macs[2], macs[0]]:  # macs[0] was evicted by the third: seen anew
        await svc.handle(scapy_dhcp("inform", mac=mac, xid=1, ciaddr=src[0]), src, "eth0")
    seen = [r.__dict__["mac"] for r in dhcp_records(caplog)]
    assert seen == [macs[0], macs[1], macs[2], macs[0]]


async def test_a_flood_of_spoofed_macs_logs_a_burst_not_a_line_each(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Issue 17: 200,000 packets from random MACs wrote 26 MB of first-sighting lines."""
    caplog.set_level(logging.INFO, logger="imprint.dhcp")
    svc, _ = make(DiscoveredDevices(max_entries=1000))
    src = ("198.18.77.11", 68)
    for i in range(500):
        mac = f"02:00:5e:01:{i >> 8:02x}:{i & 0xFF:02x}"
        await svc.handle(scapy_dhcp("inform", mac=mac, xid=i, ciaddr=src[0]), src, "eth0")
    firsts = [r for r in dhcp_records(caplog) if r.getMessage().startswith("DHCP first sighting")]
    assert 20 <= len(firsts) <= 22  # the burst (and a refill if the run took over 3 s)
    assert len(svc._discovered or ()) == 500  # every one is still listed for the admin
