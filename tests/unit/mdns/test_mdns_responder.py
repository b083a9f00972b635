"""mDNS responder rules, driven with the captured dig and python-zeroconf queries."""

from __future__ import annotations

import ipaddress

import dnslib
import pytest

from server.core.policy import Decision, Reason, decide
from server.core.ratelimit import TokenBuckets
from server.mdns.codec import Query, decode_query
from server.mdns.records import HOST_TTL, SERVICE_TTL, build_records
from server.mdns.responder import Ignore, IgnoreReason, Reply, ReplyKind, Responder
from server.registry.model import DeviceState, DeviceView, ProvisioningEndpoint
from tests.helpers.fixtures import load_packets

DIG = load_packets("mdns/dig-legacy-unicast-ptr.hex")[0]
ZC_QU, ZC_QM = load_packets("mdns/zeroconf-browse-ptr.hex")
MAC = "02:00:5e:00:01:01"
INDEX = {
    MAC: DeviceView(MAC, "acme", "Acme", DeviceState.AWAITING_ACTIVATION, "lab bench"),
}
YES = decide(INDEX, MAC)
NO = decide(INDEX, "02:00:5e:00:01:02")
LINK = [ipaddress.ip_network("198.18.77.0/24")]
ENDPOINT = ProvisioningEndpoint("https", "imprint.local", 8443, "/provision", "ab" * 32)
RECORDS = build_records(ENDPOINT, hostname="imprint", addresses=["198.18.77.1"])


def responder(**kw: object) -> Responder:
    return Responder(RECORDS, LINK, **kw)  # type: ignore[arg-type]


def reply(
    r: Responder, packet: tuple[str, int, bytes], decision: Decision = YES, now: float = 0.0
) -> Reply:
    out = r.respond(decode_query(packet[2]), packet[0], packet[1], decision, now)
    assert isinstance(out, Reply), out
    return out


def parse(payload: bytes) -> dnslib.DNSRecord:
    return dnslib.DNSRecord.parse(payload)


def all_rrs(d: dnslib.DNSRecord) -> list[dnslib.RR]:
    return [*d.rr, *d.auth, *d.ar]


def test_dig_legacy_unicast_goes_back_to_its_port_with_id_question_and_short_ttl() -> None:
    out = reply(responder(), DIG)
    assert out.kind is ReplyKind.LEGACY
    assert out.dest == ("198.18.77.11", 53514)
    d = parse(out.payload)
    assert d.header.id == 0x4477
    assert d.header.qr == 1 and d.header.aa == 1
    assert [(str(q.qname), q.qtype, q.qclass) for q in d.questions] == [
        ("_imprint._tcp.local.", 12, 1)
    ]
    rrs = all_rrs(d)
    assert {rr.rtype for rr in rrs} == {12, 33, 16, 1}
    assert all(rr.ttl <= 10 for rr in rrs)
    assert all(rr.rclass == 1 for rr in rrs)  # no cache-flush bit for a legacy resolver


def test_zeroconf_qu_query_is_answered_by_unicast_to_port_5353() -> None:
    out = reply(responder(), ZC_QU)
    assert out.kind is ReplyKind.QU
    assert out.dest == ("198.18.77.11", 5353)
    d = parse(out.payload)
    assert d.questions == []  # RFC 6762 §6: no questions in a (non-legacy) response
    ttl = {rr.rtype: rr.ttl for rr in all_rrs(d)}
    assert ttl == {12: SERVICE_TTL, 33: HOST_TTL, 16: SERVICE_TTL, 1: HOST_TTL}
    flush = {rr.rtype: bool(rr.rclass & 0x8000) for rr in all_rrs(d)}
    assert flush == {12: False, 33: True, 16: True, 1: True}


def test_zeroconf_qm_query_is_still_answered_by_unicast() -> None:
    out = reply(responder(), ZC_QM)
    assert out.kind is ReplyKind.QM
    assert out.dest == ("198.18.77.11", 5353)  # never 224.0.0.251


def test_unregistered_querier_is_ignored_with_the_policy_reason() -> None:
    r = responder()
    out = r.respond(decode_query(ZC_QU[2]), ZC_QU[0], 5353, NO, 0.0)
    assert out == Ignore(Reason.UNREGISTERED.value)
    mac_unknown = Decision(answer=False, reason=Reason.MAC_UNKNOWN)
    assert r.respond(decode_query(DIG[2]), DIG[0], DIG[1], mac_unknown, 0.0) == Ignore(
        "IMP_MAC_UNKNOWN"
    )


def test_off_link_source_is_ignored_even_if_registered() -> None:
    r = responder()
    for ip in ("203.0.113.5", "198.18.78.11", "not an address"):
        out = r.respond(decode_query(ZC_QU[2]), ip, 5353, YES, 0.0)
        assert out == Ignore(IgnoreReason.OFF_LINK)


def test_ipv6_link_local_source_with_scope_is_on_link_when_configured() -> None:
    r = Responder(RECORDS, [ipaddress.ip_network("fe80::/64")])
    out = r.respond(decode_query(ZC_QU[2]), "fe80::1%eth0", 5353, YES, 0.0)
    assert isinstance(out, Reply) and out.dest == ("fe80::1%eth0", 5353)


def test_source_port_zero_is_ignored() -> None:
    out = responder().respond(decode_query(DIG[2]), DIG[0], 0, YES, 0.0)
    assert out == Ignore(IgnoreReason.BAD_SOURCE)


def test_questions_for_other_names_types_or_classes_are_not_ours() -> None:
    r = responder()
    for name, qtype, qclass in [
        ("_other._tcp.local.", 12, 1),
        ("_imprint._tcp.local.", 16, 1),  # TXT of the service type: we hold none
        ("_imprint._tcp.local.", 12, 3),  # class CH
    ]:
        q = dnslib.DNSRecord(
            dnslib.DNSHeader(id=0, bitmap=0), q=dnslib.DNSQuestion(name, qtype, qclass)
        )
        out = r.respond(decode_query(q.pack()), "198.18.77.11", 5353, YES, 0.0)
        assert out == Ignore(IgnoreReason.NOT_OURS)


def test_query_with_only_known_answers_has_no_question() -> None:
    q = dnslib.DNSRecord(dnslib.DNSHeader(id=0, bitmap=0x0200))
    q.add_answer(
        dnslib.RR("_imprint._tcp.local.", 12, 1, 4500, dnslib.PTR("x._imprint._tcp.local."))
    )
    out = responder().respond(decode_query(q.pack()), "198.18.77.11", 5353, YES, 0.0)
    assert out == Ignore(IgnoreReason.NO_QUESTION)


def _query_with_known(
    *known: dnslib.RR, qtype: int = 12, name: str = "_imprint._tcp.local."
) -> Query:
    q = dnslib.DNSRecord(dnslib.DNSHeader(id=0, bitmap=0), q=dnslib.DNSQuestion(name, qtype, 1))
    for rr in known:
        q.add_answer(rr)
    return decode_query(q.pack())


def _ptr(
    ttl: int, target: str = "Imprint._imprint._tcp.local.", owner: str = "_imprint._tcp.local."
) -> dnslib.RR:
    return dnslib.RR(owner, 12, 1, ttl, dnslib.PTR(target))


def test_known_answer_with_at_least_half_ttl_suppresses_the_answer() -> None:
    r = responder()
    assert r.respond(
        _query_with_known(_ptr(SERVICE_TTL // 2)), "198.18.77.11", 5353, YES, 0
    ) == Ignore(IgnoreReason.KNOWN_ANSWERS)
    # case differs, still the same record (RFC 6762 §16)
    held = _ptr(4000, "IMPRINT._Imprint._TCP.local.", "_IMPRINT._tcp.LOCAL.")
    assert r.respond(_query_with_known(held), "198.18.77.11", 5353, YES, 0) == Ignore(
        IgnoreReason.KNOWN_ANSWERS
    )


def test_known_answer_with_less_than_half_ttl_does_not_suppress() -> None:
    out = responder().respond(
        _query_with_known(_ptr(SERVICE_TTL // 2 - 1)), "198.18.77.11", 5353, YES, 0
    )
    assert isinstance(out, Reply)


def test_known_answer_for_another_instance_does_not_suppress() -> None:
    out = responder().respond(
        _query_with_known(_ptr(4500, "Other._imprint._tcp.local.")), "198.18.77.11", 5353, YES, 0
    )
    assert isinstance(out, Reply)
    assert [rr.rtype for rr in parse(out.payload).rr] == [12]


def test_known_answers_drop_only_the_records_held() -> None:
    srv = dnslib.RR(
        "Imprint._imprint._tcp.local.", 33, 0x8001, 120, dnslib.SRV(0, 0, 8443, "imprint.local.")
    )
    q = _query_with_known(srv, qtype=255, name="Imprint._imprint._tcp.local.")
    out = responder().respond(q, "198.18.77.11", 5353, YES, 0)
    assert isinstance(out, Reply)
    d = parse(out.payload)
    assert [rr.rtype for rr in d.rr] == [16]  # TXT only; SRV was known
    # a different port in the held SRV is a different record: both answered
    stale = dnslib.RR(
        "Imprint._imprint._tcp.local.", 33, 1, 120, dnslib.SRV(0, 0, 9999, "imprint.local.")
    )
    out = responder().respond(
        _query_with_known(stale, qtype=255, name="Imprint._imprint._tcp.local."),
        "198.18.77.11",
        5353,
        YES,
        0,
    )
    assert isinstance(out, Reply)
    assert [rr.rtype for rr in parse(out.payload).rr] == [33, 16]


def test_several_questions_are_answered_in_one_packet_without_duplicates() -> None:
    q = dnslib.DNSRecord(dnslib.DNSHeader(id=0, bitmap=0))
    q.add_question(dnslib.DNSQuestion("_imprint._tcp.local.", 12, 0x8001))
    q.add_question(dnslib.DNSQuestion("Imprint._imprint._tcp.local.", 33, 1))
    q.add_question(dnslib.DNSQuestion("_elsewhere._tcp.local.", 12, 1))
    out = responder().respond(decode_query(q.pack()), "198.18.77.11", 5353, YES, 0)
    assert isinstance(out, Reply) and out.kind is ReplyKind.QU
    d = parse(out.payload)
    assert [rr.rtype for rr in d.rr] == [12, 33]
    assert sorted(rr.rtype for rr in d.ar) == [1, 16]


def test_rate_limit_per_source() -> None:
    r = responder(limiter=TokenBuckets(rate=1.0, burst=3))
    q = decode_query(ZC_QU[2])
    got = [r.respond(q, "198.18.77.11", 5353, YES, 100.0) for _ in range(4)]
    assert [isinstance(x, Reply) for x in got] == [True, True, True, False]
    assert got[3] == Ignore(IgnoreReason.RATE_LIMITED)
    # another source has its own bucket
    assert isinstance(r.respond(q, "198.18.77.12", 5353, YES, 100.0), Reply)
    # one second later one more token
    assert isinstance(r.respond(q, "198.18.77.11", 5353, YES, 101.0), Reply)
    assert r.respond(q, "198.18.77.11", 5353, YES, 101.0) == Ignore(IgnoreReason.RATE_LIMITED)


def test_queries_not_for_us_take_no_rate_limit_token() -> None:
    r = responder(limiter=TokenBuckets(rate=1.0, burst=1))
    other = dnslib.DNSRecord.question("_other._tcp.local.", "PTR").pack()
    for _ in range(5):
        r.respond(decode_query(other), "198.18.77.11", 5353, YES, 0.0)
    assert isinstance(r.respond(decode_query(ZC_QU[2]), "198.18.77.11", 5353, YES, 0.0), Reply)


def test_cached_answer_is_byte_identical_and_ids_are_patched() -> None:
    r = responder()
    first = reply(r, DIG)
    assert (r.cache_misses, r.cache_hits) == (1, 0)
    second = reply(r, DIG)
    assert second.payload == first.payload and r.cache_hits == 1
    other_id = bytearray(DIG[2])
    other_id[0:2] = b"\x12\x34"
    third = reply(r, (DIG[0], DIG[1], bytes(other_id)))
    assert r.cache_hits == 2
    assert third.payload[:2] == b"\x12\x34" and third.payload[2:] == first.payload[2:]
    # legacy and non-legacy answers to the same question are different cache entries
    qm = reply(r, ZC_QM)
    assert r.cache_misses == 2
    assert parse(qm.payload).header.id == 0 and parse(qm.payload).questions == []


def test_set_records_drops_cached_answers() -> None:
    r = responder()
    reply(r, ZC_QU)
    moved = ProvisioningEndpoint("https", "imprint.local", 9443, "/provision", "ab" * 32)
    r.set_records(build_records(moved, hostname="imprint", addresses=["198.18.77.1"]))
    d = parse(reply(r, ZC_QU).payload)
    srv = next(rr for rr in d.ar if rr.rtype == 33)
    assert srv.rdata.port == 9443
    assert r.cache_misses == 2


def test_set_records_drops_what_a_question_selected() -> None:
    """A new service name must not be answered from the old name's remembered selection."""
    r = responder()
    assert isinstance(reply(r, ZC_QU), Reply)  # _imprint._tcp PTR: selected and remembered
    r.set_records(
        build_records(
            ENDPOINT, hostname="imprint", addresses=["198.18.77.1"], service="_other._tcp"
        )
    )
    q = decode_query(ZC_QU[2])
    assert r.respond(q, "198.18.77.11", 5353, YES, 0.0) == Ignore(IgnoreReason.NOT_OURS)


def test_set_networks_changes_what_is_on_link() -> None:
    r = responder()
    q = decode_query(ZC_QU[2])
    assert isinstance(r.respond(q, "198.18.77.11", 5353, YES, 0.0), Reply)
    r.set_networks([ipaddress.ip_network("10.0.0.0/8")])
    assert r.respond(q, "198.18.77.11", 5353, YES, 0.0) == Ignore(IgnoreReason.OFF_LINK)


@pytest.mark.parametrize("addresses", [["198.18.77.1"], ["198.18.77.1", "fd00::1"], []])
def test_address_questions(addresses: list[str]) -> None:
    r = Responder(build_records(ENDPOINT, hostname="imprint", addresses=addresses), LINK)
    q = decode_query(dnslib.DNSRecord.question("imprint.local.", "A").pack())
    out = r.respond(q, "198.18.77.11", 5353, YES, 0.0)
    if not addresses:
        assert out == Ignore(IgnoreReason.NOT_OURS)
        return
    assert isinstance(out, Reply)
    d = parse(out.payload)
    assert [str(rr.rdata) for rr in d.rr] == ["198.18.77.1"]
    assert [str(rr.rdata) for rr in d.ar] == addresses[1:]


def test_goodbye_withdraws_service_records_with_ttl_zero() -> None:
    d = parse(responder().goodbye())
    assert [(rr.rtype, rr.ttl) for rr in d.rr] == [(12, 0), (33, 0), (16, 0)]


def test_qm_answer_holding_a_shared_ptr_waits_20_to_120_ms_and_others_do_not() -> None:
    """RFC 6762 §6: the delay spreads answers to multicast questions for shared records."""
    r = responder()
    q = decode_query(ZC_QM[2])
    pending = r.screen(q, ZC_QM[0], 5353, 0.0)
    assert not isinstance(pending, Ignore) and pending.kind is ReplyKind.QM
    low, high = (r.answer(pending, YES, jitter) for jitter in (0.0, 0.999999))
    assert isinstance(low, Reply) and isinstance(high, Reply)
    assert low.delay == pytest.approx(0.020) and high.delay == pytest.approx(0.120, abs=1e-5)
    assert low.payload == high.payload
    qu = r.screen(decode_query(ZC_QU[2]), ZC_QU[0], 5353, 0.0)
    legacy = r.screen(decode_query(DIG[2]), DIG[0], DIG[1], 0.0)
    for p in (qu, legacy):
        assert not isinstance(p, Ignore)
        out = r.answer(p, YES, 0.5)
        assert isinstance(out, Reply) and out.delay == 0.0  # unicast asked for: at once
    srv = dnslib.DNSRecord.question("Imprint._imprint._tcp.local.", "SRV")
    unique = r.screen(decode_query(srv.pack()), "198.18.77.11", 5353, 0.0)
    assert not isinstance(unique, Ignore) and unique.kind is ReplyKind.QM
    out = r.answer(unique, YES, 0.5)
    assert isinstance(out, Reply) and out.delay == 0.0  # unique record: no delay (§6)
