"""The emulator's mDNS queries are what RFC 6762 says (checked by hand, by dnslib, and against a
python-zeroconf capture), and its reading of DNS-SD answers built with dnslib is right."""

from __future__ import annotations

import struct

import pytest
from dnslib import AAAA, PTR, QTYPE, RR, SRV, TXT, A, DNSHeader, DNSLabel, DNSQuestion, DNSRecord
from hypothesis import given, settings
from hypothesis import strategies as st

from device_emulator.mdns_codec import (
    MdnsDecodeError,
    RecordSet,
    build_query,
    legacy_problems,
    parse_response,
    parse_txt,
    reject_reason,
    to_name,
)
from tests.helpers.fixtures import fixture_path

SERVICE = "_imprint._tcp.local"
INSTANCE = (b"Imprint Lab", b"_imprint", b"_tcp", b"local")
FP = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"


def fixture_packets(name: str) -> list[bytes]:
    lines = fixture_path(name).read_text().splitlines()
    return [bytes.fromhex(line) for line in lines if line and not line.startswith("#")]


def labels_by_hand(data: bytes, offset: int) -> tuple[list[bytes], int]:
    out = []
    while data[offset]:
        n = data[offset]
        out.append(data[offset + 1 : offset + 1 + n])
        offset += 1 + n
    return out, offset + 1


def test_legacy_query_by_hand() -> None:
    raw = build_query([(SERVICE, QTYPE.PTR)], query_id=0x4477, qu=False)
    qid, flags, qd, an, ns, ar = struct.unpack("!6H", raw[:12])
    assert qid == 0x4477 and qid != 0  # §6.7: legacy unicast needs an ID to match
    assert flags == 0  # query, opcode 0, RD clear
    assert (qd, an, ns, ar) == (1, 0, 0, 0)
    labels, end = labels_by_hand(raw, 12)
    assert labels == [b"_imprint", b"_tcp", b"local"]
    qtype, qclass = struct.unpack("!HH", raw[end : end + 4])
    assert (qtype, qclass) == (12, 0x0001)  # PTR, IN, QU bit clear
    assert len(raw) == end + 4


def test_qu_query_sets_top_bit_of_qclass_by_hand_and_dnslib() -> None:
    raw = build_query([(SERVICE, QTYPE.PTR)], query_id=0, qu=True)
    assert raw[:2] == b"\x00\x00"  # §18.1: multicast query ID 0
    assert struct.unpack("!H", raw[-2:])[0] == 0x8001
    parsed = DNSRecord.parse(raw)
    assert parsed.header.qr == 0 and parsed.header.rd == 0
    assert parsed.questions[0].qclass == 0x8001
    assert parsed.questions[0].qtype == QTYPE.PTR
    assert str(parsed.questions[0].qname) == SERVICE + "."


def test_qu_query_equals_python_zeroconf_capture() -> None:
    """python-zeroconf's first browse query (QU) is byte-for-byte what we send."""
    zeroconf_qu, zeroconf_qm = fixture_packets("mdns/zeroconf-browse-ptr.hex")
    assert build_query([(SERVICE, QTYPE.PTR)], query_id=0, qu=True) == zeroconf_qu
    assert build_query([(SERVICE, QTYPE.PTR)], query_id=0, qu=False) == zeroconf_qm


def test_follow_up_query_has_several_questions() -> None:
    raw = build_query(
        [(INSTANCE, QTYPE.SRV), (INSTANCE, QTYPE.TXT), ("imprint.local", QTYPE.A)],
        query_id=9,
        qu=False,
    )
    parsed = DNSRecord.parse(raw)
    assert [(q.qname.label, q.qtype) for q in parsed.questions] == [
        (INSTANCE, QTYPE.SRV),
        (INSTANCE, QTYPE.TXT),
        ((b"imprint", b"local"), QTYPE.A),
    ]


def test_query_id_range_checked() -> None:
    with pytest.raises(ValueError):
        build_query([(SERVICE, QTYPE.PTR)], query_id=0x10000, qu=False)


def dns_sd_answer(
    query_id: int = 0x4477,
    txt: list[bytes] | None = None,
    ttl: int = 10,
    with_additionals: bool = True,
) -> bytes:
    """A DNS-SD response as a responder would build it, with dnslib."""
    rec = DNSRecord(
        DNSHeader(id=query_id, qr=1, aa=1, rd=0),
        q=DNSQuestion(SERVICE, QTYPE.PTR),
    )
    rec.add_answer(RR(SERVICE, QTYPE.PTR, ttl=ttl, rdata=PTR(DNSLabel(INSTANCE))))
    if with_additionals:
        strings = txt if txt is not None else [b"txtvers=1", b"path=/enroll", b"fp=" + FP.encode()]
        rec.add_ar(
            RR(DNSLabel(INSTANCE), QTYPE.SRV, ttl=ttl, rdata=SRV(0, 0, 8443, "imprint.local"))
        )
        rec.add_ar(RR(DNSLabel(INSTANCE), QTYPE.TXT, ttl=ttl, rdata=TXT(strings)))
        rec.add_ar(RR("imprint.local", QTYPE.A, ttl=ttl, rdata=A("198.18.77.1")))
        rec.add_ar(RR("imprint.local", QTYPE.AAAA, ttl=ttl, rdata=AAAA("fd00::1")))
    return bytes(rec.pack())


def test_dns_sd_answer_resolves_to_service_info() -> None:
    records = RecordSet()
    records.add(parse_response(dns_sd_answer()))
    (info,) = records.services(SERVICE)
    assert info.instance == "Imprint Lab._imprint._tcp.local"
    assert info.host == "imprint.local" and info.port == 8443
    assert info.addresses == ("198.18.77.1", "fd00::1")
    assert info.txt == {"txtvers": "1", "path": "/enroll", "fp": FP}
    assert info.url == "https://198.18.77.1:8443/enroll"
    assert info.fingerprint == FP
    prov = info.provisioning()
    assert (prov.source, prov.host, prov.port, prov.path) == (
        "mdns",
        "198.18.77.1",
        8443,
        "/enroll",
    )
    assert info.problems == ()


@pytest.mark.parametrize("key", [b"fp", b"sha256", b"fingerprint", b"FP"])
def test_fingerprint_key_names_tolerated(key: bytes) -> None:
    records = RecordSet()
    records.add(parse_response(dns_sd_answer(txt=[b"txtvers=1", key + b"=sha256:" + FP.encode()])))
    (info,) = records.services(SERVICE)
    assert info.fingerprint == FP
    assert info.url == "https://198.18.77.1:8443/"


def test_txtvers_not_first_is_reported() -> None:
    records = RecordSet()
    records.add(parse_response(dns_sd_answer(txt=[b"path=/x", b"txtvers=1"])))
    (info,) = records.services(SERVICE)
    assert any("first" in p for p in info.problems)


def test_ptr_only_answer_asks_for_srv_txt_then_a() -> None:
    records = RecordSet()
    assert records.missing(SERVICE) == [(to_name(SERVICE), QTYPE.PTR)]
    records.add(parse_response(dns_sd_answer(with_additionals=False)))
    assert records.services(SERVICE) == []
    assert records.missing(SERVICE) == [(INSTANCE, QTYPE.SRV), (INSTANCE, QTYPE.TXT)]
    srv = DNSRecord(DNSHeader(id=1, qr=1, aa=1))
    srv.add_answer(RR(DNSLabel(INSTANCE), QTYPE.SRV, ttl=10, rdata=SRV(0, 0, 443, "h.local")))
    srv.add_answer(RR(DNSLabel(INSTANCE), QTYPE.TXT, ttl=10, rdata=TXT([b"txtvers=1"])))
    records.add(parse_response(bytes(srv.pack())))
    assert records.missing(SERVICE) == [((b"h", b"local"), QTYPE.A)]


def test_goodbye_record_removes_instance() -> None:
    records = RecordSet()
    records.add(parse_response(dns_sd_answer()))
    records.add(parse_response(dns_sd_answer(ttl=0, with_additionals=False)))
    assert records.instances(SERVICE) == []


def test_names_compare_case_insensitively() -> None:
    records = RecordSet()
    records.add(parse_response(dns_sd_answer()))
    assert len(records.services("_IMPRINT._TCP.LOCAL")) == 1


def test_txt_rules() -> None:
    assert parse_txt([b"txtvers=1", b"PATH=/a", b"path=/b", b"=x", b"", b"flag", b"e="]) == {
        "txtvers": "1",
        "PATH": "/a",
        "flag": None,
        "e": "",
    }


def test_compression_loop_refused() -> None:
    header = struct.pack("!6H", 1, 0x8400, 0, 1, 0, 0)
    looping_name = b"\xc0\x0c"  # points at itself
    rr = looping_name + struct.pack("!HHIH", 12, 1, 10, 2) + b"\xc0\x0c"
    with pytest.raises(MdnsDecodeError):
        parse_response(header + rr)


def test_garbage_refused() -> None:
    with pytest.raises(MdnsDecodeError):
        parse_response(b"\x00\x01\x02")


def test_reject_reasons() -> None:
    answer = parse_response(dns_sd_answer(query_id=7))
    assert reject_reason(answer, ("10.0.0.1", 5353), expected_source=None, query_ids={7}) is None
    assert "port" in str(
        reject_reason(answer, ("10.0.0.1", 40000), expected_source=None, query_ids={7})
    )
    assert "id" in str(
        reject_reason(answer, ("10.0.0.1", 5353), expected_source=None, query_ids={8})
    )
    lab = ("127.0.0.1", 53531)
    assert reject_reason(answer, lab, expected_source=lab, query_ids=None) is None
    assert reject_reason(answer, ("127.0.0.1", 5), expected_source=lab, query_ids=None) is not None
    own_query = parse_response(build_query([(SERVICE, QTYPE.PTR)], query_id=0, qu=True))
    assert reject_reason(own_query, ("10.0.0.2", 5353), expected_source=None, query_ids=None)
    dig_query = parse_response(fixture_packets("mdns/dig-legacy-unicast-ptr.hex")[0])
    assert dig_query.query_id == 0x4477 and not dig_query.qr


def test_legacy_rules_checked() -> None:
    good = parse_response(dns_sd_answer())
    assert legacy_problems(good, [(SERVICE, QTYPE.PTR)]) == []
    long_ttl = parse_response(dns_sd_answer(ttl=120))
    assert any("TTL 120" in p for p in legacy_problems(long_ttl, [(SERVICE, QTYPE.PTR)]))
    flush = DNSRecord(DNSHeader(id=1, qr=1, aa=1))
    flush.add_answer(RR("h.local", QTYPE.A, rclass=0x8001, ttl=10, rdata=A("10.0.0.1")))
    problems = legacy_problems(parse_response(bytes(flush.pack())), [("h.local", QTYPE.A)])
    assert any("cache-flush" in p for p in problems)
    assert any("repeat the question" in p for p in problems)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512))
def test_response_parser_raises_only_decode_error(data: bytes) -> None:
    try:
        response = parse_response(data)
    except MdnsDecodeError:
        return
    RecordSet().add(response)
