"""MdnsService glue: bytes in, (bytes, destination) out; metrics, logs, live registry, goodbyes."""

from __future__ import annotations

import ipaddress
import logging

import dnslib
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.core.metrics import Registry
from server.mdns.neighbours import NeighbourResolver
from server.mdns.records import build_records
from server.mdns.service import MdnsService
from server.provisioning.sightings import LastSeen, Sightings
from server.registry.model import DeviceState, DeviceView, ProvisioningEndpoint
from tests.helpers.fixtures import load_packets

DIG = load_packets("mdns/dig-legacy-unicast-ptr.hex")[0]
ZC_QU, ZC_QM = load_packets("mdns/zeroconf-browse-ptr.hex")
MAC1 = "02:00:5e:00:01:01"  # the fixtures' first client, 198.18.77.11
MAC2 = "02:00:5e:00:01:02"  # second client, 198.18.77.12
ENDPOINT = ProvisioningEndpoint("https", "imprint.local", 8443, "/provision", "ab" * 32)


def view(mac: str) -> DeviceView:
    return DeviceView(mac, "acme", "Acme", DeviceState.AWAITING_ACTIVATION, "bench")


def make(
    index: dict[str, DeviceView] | None = None, **kw: object
) -> tuple[MdnsService, Registry, dict[str, DeviceView]]:
    reg = Registry()
    idx = {MAC1: view(MAC1)} if index is None else index
    svc = MdnsService(
        build_records(ENDPOINT, hostname="imprint", addresses=["198.18.77.1"]),
        idx,
        networks=[ipaddress.ip_network("198.18.77.0/24")],
        neighbours=NeighbourResolver(
            static={"198.18.77.11": MAC1, "198.18.77.12": MAC2},
        ),
        metrics=reg,
        **kw,  # type: ignore[arg-type]
    )
    return svc, reg, idx


def counter(reg: Registry, name: str, *labels: str) -> float:
    metric = reg.get(name)
    assert metric is not None
    return metric.value(*labels)  # type: ignore[union-attr]


def test_legacy_fixture_end_to_end_with_metrics_and_one_log_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    svc, reg, _ = make()
    with caplog.at_level(logging.DEBUG, logger="imprint.mdns"):
        out = svc.handle(DIG[2], (DIG[0], DIG[1]), now=0.0)
    ((payload, dest),) = out
    assert dest == ("198.18.77.11", 53514)
    assert dnslib.DNSRecord.parse(payload).header.id == 0x4477
    assert counter(reg, "imprint_mdns_packets_received_total") == 1
    assert counter(reg, "imprint_mdns_answers_sent_total", "legacy") == 1
    assert counter(reg, "imprint_mdns_decisions_total", "answer", "IMP_REGISTERED") == 1
    lines = [r.getMessage() for r in caplog.records if r.name == "imprint.mdns"]
    assert len(lines) == 1
    for part in (
        "198.18.77.11:53514",
        MAC1,
        "_imprint._tcp.local.",
        "decision=answer",
        "IMP_REGISTERED",
    ):
        assert part in lines[0]


def test_qu_and_qm_fixtures_go_to_port_5353() -> None:
    svc, reg, _ = make()
    assert svc.handle(ZC_QU[2], (ZC_QU[0], 5353), 0.0)[0][1] == ("198.18.77.11", 5353)
    assert svc.handle(ZC_QM[2], (ZC_QM[0], 5353), 0.0)[0][1] == ("198.18.77.11", 5353)
    assert counter(reg, "imprint_mdns_answers_sent_total", "qu") == 1
    assert counter(reg, "imprint_mdns_answers_sent_total", "qm") == 1


def test_unregistered_neighbour_gets_nothing_and_is_counted() -> None:
    svc, reg, _ = make()
    assert svc.handle(ZC_QU[2], ("198.18.77.12", 5353), 0.0) == []
    assert counter(reg, "imprint_mdns_decisions_total", "ignore", "IMP_UNREGISTERED") == 1
    assert counter(reg, "imprint_mdns_packets_dropped_total", "IMP_UNREGISTERED") == 1


def test_unknown_mac_is_its_own_decision() -> None:
    svc, reg, _ = make()
    assert svc.handle(ZC_QU[2], ("198.18.77.99", 5353), 0.0) == []
    assert counter(reg, "imprint_mdns_decisions_total", "ignore", "IMP_MAC_UNKNOWN") == 1


def test_registry_changes_apply_on_the_next_packet() -> None:
    svc, _, idx = make(index={})
    assert svc.handle(ZC_QU[2], (ZC_QU[0], 5353), 0.0) == []
    idx[MAC1] = view(MAC1)
    assert len(svc.handle(ZC_QU[2], (ZC_QU[0], 5353), 0.0)) == 1
    del idx[MAC1]
    assert svc.handle(ZC_QU[2], (ZC_QU[0], 5353), 0.0) == []


def test_set_records_rebuilds_the_answer() -> None:
    svc, _, _ = make()
    before = svc.handle(ZC_QU[2], (ZC_QU[0], 5353), 0.0)[0][0]
    new = ProvisioningEndpoint("https", "imprint.local", 443, "/p2", "cd" * 32)
    svc.set_records(build_records(new, hostname="imprint", addresses=["198.18.77.1"]))
    after = svc.handle(ZC_QU[2], (ZC_QU[0], 5353), 0.0)[0][0]
    assert before != after
    txt = next(rr for rr in dnslib.DNSRecord.parse(after).ar if rr.rtype == 16)
    assert b"path=/p2" in txt.rdata.data


def test_malformed_and_irrelevant_packets_are_dropped_with_reasons_and_no_decision() -> None:
    svc, reg, _ = make()
    loop_packet = bytes(4) + b"\x00\x01" + bytes(6) + b"\xc0\x0c\x00\x0c\x00\x01"
    other = dnslib.DNSRecord.question("_http._tcp.local.", "PTR").pack()
    response = dnslib.DNSRecord(dnslib.DNSHeader(id=0, qr=1, aa=1)).pack()
    assert svc.handle(loop_packet, ("198.18.77.11", 5353), 0.0) == []
    assert svc.handle(other, ("198.18.77.11", 5353), 0.0) == []
    assert svc.handle(response, ("198.18.77.11", 5353), 0.0) == []
    assert svc.handle(ZC_QU[2], ("203.0.113.9", 5353), 0.0) == []
    for reason in ("MDNS_POINTER_LOOP", "MDNS_NOT_OURS", "MDNS_NOT_QUERY", "MDNS_OFF_LINK"):
        assert counter(reg, "imprint_mdns_packets_dropped_total", reason) == 1, reason
    decisions = reg.get("imprint_mdns_decisions_total")
    assert decisions is not None and decisions.total() == 0  # type: ignore[union-attr]


def test_every_packet_is_either_dropped_or_answered() -> None:
    svc, reg, _ = make(burst=2)
    packets = [
        DIG,
        ZC_QU,
        ZC_QM,
        ZC_QU,
        (ZC_QU[0], 5353, b"junk"),
        ("198.18.77.12", 5353, ZC_QM[2]),
    ]
    for ip, port, data in packets:
        svc.handle(data, (ip, port), 0.0)
    dropped = reg.get("imprint_mdns_packets_dropped_total")
    answered = reg.get("imprint_mdns_answers_sent_total")
    assert dropped is not None and answered is not None
    assert dropped.total() + answered.total() == len(packets)  # type: ignore[union-attr]
    assert counter(reg, "imprint_mdns_packets_dropped_total", "MDNS_RATE_LIMITED") == 2


def test_goodbyes_go_by_unicast_to_recent_5353_queriers_only() -> None:
    svc, reg, _ = make()
    svc.handle(DIG[2], (DIG[0], DIG[1]), 0.0)  # legacy: holds our records for 10 s at most
    assert svc.goodbyes(1.0) == []
    svc.handle(ZC_QU[2], (ZC_QU[0], 5353), 0.0)
    assert svc.goodbyes(svc.records.max_ttl + 1.0) == []  # its cache has expired anyway
    svc.handle(ZC_QU[2], (ZC_QU[0], 5353), 10.0)
    ((payload, dest),) = svc.goodbyes(20.0)
    assert dest == ("198.18.77.11", 5353)
    d = dnslib.DNSRecord.parse(payload)
    assert {rr.rtype for rr in d.rr} == {12, 33, 16} and all(rr.ttl == 0 for rr in d.rr)
    assert counter(reg, "imprint_mdns_answers_sent_total", "goodbye") == 1


def test_an_internal_fault_is_counted_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    class Broken(dict[str, DeviceView]):
        def get(self, key: str, default: object = None) -> DeviceView | None:  # type: ignore[override]
            raise RuntimeError("store went away")

    svc, reg, _ = make(index=Broken())
    with caplog.at_level(logging.ERROR, logger="imprint.mdns"):
        assert svc.handle(ZC_QU[2], (ZC_QU[0], 5353), 0.0) == []
    assert counter(reg, "imprint_mdns_packets_dropped_total", "MDNS_INTERNAL_ERROR") == 1
    assert any("internal error" in r.getMessage() for r in caplog.records)


_names = st.sampled_from(
    [
        "_imprint._tcp.local.",
        "Imprint._imprint._tcp.local.",
        "imprint.local.",
        "_services._dns-sd._udp.local.",
        "x.local.",
    ]
)


@settings(max_examples=300, deadline=None)
@given(
    questions=st.lists(
        st.tuples(
            _names,
            st.sampled_from([1, 12, 16, 28, 33, 255, 47]),
            st.sampled_from([1, 0x8001, 255, 3]),
        ),
        max_size=4,
    ),
    known_ttl=st.lists(st.integers(0, 2**32 - 1), max_size=3),
    ip=st.sampled_from(["198.18.77.11", "198.18.77.12", "198.18.77.99", "10.0.0.1", "::1", "x"]),
    port=st.sampled_from([5353, 53514, 0, 1]),
    noise=st.binary(max_size=8),
    now=st.floats(-1e9, 1e9, allow_nan=False),
)
def test_handle_never_raises(
    questions: list[tuple[str, int, int]],
    known_ttl: list[int],
    ip: str,
    port: int,
    noise: bytes,
    now: float,
) -> None:
    svc, reg, _ = make()
    d = dnslib.DNSRecord(dnslib.DNSHeader(id=7, bitmap=0))
    for name, qtype, qclass in questions:
        d.add_question(dnslib.DNSQuestion(name, qtype, qclass))
    for ttl in known_ttl:
        d.add_answer(
            dnslib.RR(
                "_imprint._tcp.local.", 12, 1, ttl, dnslib.PTR("Imprint._imprint._tcp.local.")
            )
        )
    data = d.pack() + noise
    for packet in (data, data[: len(data) // 2], noise):
        out = svc.handle(packet, (ip, port), now)
        assert isinstance(out, list)
    assert counter(reg, "imprint_mdns_packets_dropped_total", "MDNS_INTERNAL_ERROR") == 0


def test_mac_source_is_counted_and_logged_with_the_link(caplog: pytest.LogCaptureFixture) -> None:
    svc, reg, _ = make(link="eth0.100")
    with caplog.at_level(logging.DEBUG, logger="imprint.mdns"):
        # The frame's MAC wins over the static entry for the same address (MAC2, unregistered).
        assert svc.handle(ZC_QU[2], ("198.18.77.12", 5353), 0.0, frame_mac=MAC1)
        assert svc.handle(ZC_QU[2], ("198.18.77.12", 5353), 0.0) == []
    assert counter(reg, "imprint_mdns_mac_source_total", "frame", "answer") == 1
    assert counter(reg, "imprint_mdns_mac_source_total", "static", "ignore") == 1
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("mdns query")]
    assert lines[0].startswith(
        f"mdns query link=eth0.100 source=198.18.77.12:5353 mac={MAC1} via=frame"
    )
    assert f"mac={MAC2} via=static" in lines[1] and "reason=IMP_UNREGISTERED" in lines[1]


def test_respond_gives_the_qm_delay_and_handle_the_same_datagrams() -> None:
    svc, _, _ = make()
    delay, sends = svc.respond(ZC_QM[2], (ZC_QM[0], 5353), 0.0, None, 0.5)
    assert delay == pytest.approx(0.070) and len(sends) == 1
    assert svc.handle(ZC_QM[2], (ZC_QM[0], 5353), 1.0) == sends
    assert svc.respond(ZC_QU[2], (ZC_QU[0], 5353), 2.0, None, 0.5)[0] == 0.0


def test_responses_from_peers_reach_the_claim_hook_and_nothing_is_sent() -> None:
    svc, reg, _ = make()
    heard: list[tuple[bytes, str]] = []
    svc.on_response = lambda data, ip: heard.append((data, ip))
    response = dnslib.DNSRecord(dnslib.DNSHeader(qr=1, aa=1))
    response.add_answer(dnslib.RR("x.local.", dnslib.QTYPE.A, rdata=dnslib.A("198.18.77.12")))
    data = bytes(response.pack())
    assert svc.handle(data, ("198.18.77.12", 5353), 0.0) == []
    assert heard == [(data, "198.18.77.12")]
    assert counter(reg, "imprint_mdns_packets_dropped_total", "MDNS_NOT_QUERY") == 1


def test_at_info_a_query_logs_nothing_but_a_traced_mac_logs_its_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    svc, _, _ = make()
    with caplog.at_level(logging.INFO, logger="imprint.mdns"):
        assert svc.handle(DIG[2], (DIG[0], DIG[1]), now=0.0)
    assert [r for r in caplog.records if r.name == "imprint.mdns"] == []
    svc.set_trace(frozenset({MAC1}))
    with caplog.at_level(logging.INFO, logger="imprint.mdns"):
        assert svc.handle(DIG[2], (DIG[0], DIG[1]), now=1.0)
    (record,) = [r for r in caplog.records if r.name == "imprint.mdns"]
    assert record.levelno == logging.INFO and f"mac={MAC1}" in record.getMessage()


def test_the_summary_counts_decisions_by_reason_and_an_idle_interval_logs_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    svc, _, _ = make(link="eth0")
    svc.handle(DIG[2], (DIG[0], DIG[1]), now=0.0)
    svc.handle(ZC_QU[2], (ZC_QU[0], 5353), now=0.0)
    svc.handle(ZC_QU[2], ("198.18.77.12", 5353), now=0.0)  # MAC2: not registered
    with caplog.at_level(logging.INFO, logger="imprint.mdns"):
        svc.log_summary(60)
        svc.log_summary(60)  # nothing since the last one
    (record,) = [r for r in caplog.records if r.name == "imprint.mdns"]
    assert record.getMessage() == (
        "mDNS on eth0 last 60 s: 3 queries: answer IMP_REGISTERED 2, ignore IMP_UNREGISTERED 1"
    )
    assert record.decisions == {"answer IMP_REGISTERED": 2, "ignore IMP_UNREGISTERED": 1}  # type: ignore[attr-defined]


def test_a_source_past_its_datagram_budget_is_dropped_before_decoding() -> None:
    svc, reg, _ = make(datagram_rate=10.0, datagram_burst=5.0)
    loop_packet = bytes(4) + b"\x00\x01" + bytes(6) + b"\xc0\x0c\x00\x0c\x00\x01"
    for _ in range(8):
        assert svc.handle(loop_packet, ("198.18.77.12", 5353), 0.0) == []
    dropped = "imprint_mdns_packets_dropped_total"
    # Five were decoded (and refused for their loop); the other three were never read.
    assert counter(reg, dropped, "MDNS_POINTER_LOOP") == 5
    assert counter(reg, dropped, "MDNS_SOURCE_FLOOD") == 3
    # Another host is not held back by the flooder, nor is the flooder after its bucket refills.
    assert svc.handle(DIG[2], (DIG[0], DIG[1]), now=0.0) != []
    assert svc.handle(loop_packet, ("198.18.77.12", 5353), 0.1) == []
    assert counter(reg, dropped, "MDNS_POINTER_LOOP") == 6


def test_an_answered_registered_querier_is_noted_as_seen_with_how_its_mac_was_known() -> None:
    sightings = Sightings()
    svc, _, _ = make(sightings=sightings, wall_clock=lambda: 1234.0, link="eth0")
    assert svc.handle(ZC_QU[2], (ZC_QU[0], 5353), 0.0)
    assert sightings.last_seen(MAC1) == LastSeen(
        MAC1, 1234.0, "198.18.77.11", "", "eth0", "mdns", "static"
    )
    assert svc.handle(ZC_QU[2], ("198.18.77.12", 5353), 0.0) == []  # unregistered
    assert sightings.last_seen(MAC2) is None
    assert sightings.mac_of("198.18.77.11") is None  # mDNS never feeds the lease map
