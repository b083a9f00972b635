"""mDNS codec: real captured queries decode; hostile names become DecodeError with a stable reason.

Our encoded answers are checked with independent parsers: scapy's DNS dissector and, when
installed, python-zeroconf's DNSIncoming.
"""

from __future__ import annotations

import contextlib
import struct

import dnslib
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.mdns.codec import (
    MAX_KNOWN_ANSWERS,
    MAX_MESSAGE,
    MAX_MESSAGE_LABELS,
    MAX_POINTER_HOPS,
    MAX_QUESTIONS,
    MAX_RECORDS,
    DecodeError,
    DecodeReason,
    Query,
    QueryDecoder,
    Question,
    decode_query,
    decode_records,
    encode_response,
    with_id,
)
from server.mdns.records import SERVICE_TTL, build_records
from server.registry.model import ProvisioningEndpoint
from tests.helpers.fixtures import load_packets

DIG = load_packets("mdns/dig-legacy-unicast-ptr.hex")[0]
ZC_QU, ZC_QM = load_packets("mdns/zeroconf-browse-ptr.hex")

ENDPOINT = ProvisioningEndpoint("https", "imprint.local", 8443, "/provision", "ab" * 32)
RECORDS = build_records(
    ENDPOINT, hostname="imprint", addresses=["198.18.77.1", "fd00::1"], service="_imprint._tcp"
)


def header(qd: int = 1, an: int = 0, ns: int = 0, ar: int = 0, flags: int = 0) -> bytes:
    return struct.pack("!6H", 0, flags, qd, an, ns, ar)


def reason_of(data: bytes) -> DecodeReason:
    with pytest.raises(DecodeError) as info:
        decode_query(data)
    return info.value.reason


# --- real captures -----------------------------------------------------------------------------


def test_dig_legacy_query_decodes_with_id_and_plain_class() -> None:
    q = decode_query(DIG[2])
    assert DIG[1] != 5353
    assert q.id == 0x4477
    assert q.questions == (Question("_imprint._tcp.local.", 12, 1, False),)
    assert q.known_answers == ()  # the EDNS OPT record is in the additional section


def test_zeroconf_qu_bit_is_split_out_of_the_class() -> None:
    qu = decode_query(ZC_QU[2])
    qm = decode_query(ZC_QM[2])
    assert qu.questions == (Question("_imprint._tcp.local.", 12, 1, True),)
    assert qm.questions == (Question("_imprint._tcp.local.", 12, 1, False),)
    assert qu.questions[0].wire_class == 0x8001


def test_known_answers_are_decoded_with_class_and_case_folded() -> None:
    d = dnslib.DNSRecord(dnslib.DNSHeader(id=0, bitmap=0))
    d.add_question(dnslib.DNSQuestion("_imprint._tcp.local.", 12, 1))
    d.add_answer(
        dnslib.RR(
            "_IMPRINT._tcp.local.",
            12,
            0x8001,
            3000,
            dnslib.PTR("IMPRINT._imprint._tcp.local."),
        )
    )
    q = decode_query(d.pack())
    (ka,) = q.known_answers
    assert (ka.name, ka.rtype, ka.rclass, ka.ttl) == ("_imprint._tcp.local.", 12, 1, 3000)
    assert ka.key == RECORDS.records[0].key  # same record as ours, whatever the case


# --- hostile names -------------------------------------------------------------------------------


def test_pointer_to_its_own_name_is_a_loop() -> None:
    data = header() + b"\x01a\xc0\x0c" + b"\x00\x0c\x00\x01"
    assert reason_of(data) is DecodeReason.POINTER_LOOP


def test_pointer_to_itself_is_a_loop() -> None:
    assert reason_of(header() + b"\xc0\x0c\x00\x0c\x00\x01") is DecodeReason.POINTER_LOOP


def test_forward_pointer_is_refused() -> None:
    data = header() + b"\xc0\x12\x00\x0c\x00\x01" + b"\x01a\x00"
    assert reason_of(data) is DecodeReason.FORWARD_POINTER


def test_pointer_into_the_header_is_refused() -> None:
    assert reason_of(header() + b"\xc0\x04\x00\x0c\x00\x01") is DecodeReason.BAD_POINTER


def _pointer_chain_packet(depth: int) -> bytes:
    """A real question, then a NULL record whose rdata is `depth` pointers each to the one
    before (the first to the question name), then a record named by the last pointer."""
    question = b"\x08_imprint\x04_tcp\x05local\x00" + b"\x00\x0c\x00\x01"
    rdata_at = 12 + len(question) + 1 + 10
    chain = bytearray()
    prev = 12
    for k in range(depth):
        chain += struct.pack("!H", 0xC000 | prev)
        prev = rdata_at + 2 * k
    null_rr = b"\x00" + struct.pack("!HHIH", 10, 1, 0, len(chain)) + bytes(chain)
    last = b"" + struct.pack("!H", 0xC000 | prev)
    a_rr = last + struct.pack("!HHIH", 1, 1, 120, 4) + b"\xc6\x12\x4d\x01"
    return header(qd=1, an=2) + question + null_rr + a_rr


def test_pointer_chain_4000_deep_is_a_decode_error_not_recursion() -> None:
    data = _pointer_chain_packet(4000)
    assert reason_of(data) is DecodeReason.POINTER_DEPTH


def test_dnslib_alone_recurses_on_the_same_chain() -> None:
    """The fault the walker guards against: if dnslib ever fixes it, this test says so."""
    with pytest.raises(RecursionError):
        dnslib.DNSRecord.parse(_pointer_chain_packet(4000))


def test_pointer_chain_within_the_hop_limit_is_accepted() -> None:
    q = decode_query(_pointer_chain_packet(MAX_POINTER_HOPS - 1))
    assert q.known_answers[0].name == "_imprint._tcp.local."
    assert reason_of(_pointer_chain_packet(MAX_POINTER_HOPS + 1)) is DecodeReason.POINTER_DEPTH


def _chained_questions(count: int, *, chain: bool = True) -> bytes:
    """`count` questions; each one's name is a label and a pointer to the previous question's
    name (so question k takes k jumps), or with `chain` off, a pointer to the first name."""
    first = b"\x08_imprint\x04_tcp\x05local\x00"
    body = first + b"\x00\x0c\x00\x01"
    starts = [12]
    for _ in range(count - 1):
        at = 12 + len(body)
        target = starts[-1] if chain else 12
        body += b"\x01a" + struct.pack("!H", 0xC000 | target) + b"\x00\x0c\x00\x01"
        starts.append(at)
    return header(qd=count) + body


def test_the_issues_65_kb_chained_query_is_refused_at_its_header() -> None:
    """10,826 questions chained by pointers held the loop 2.9 s; 1,492 in 9 KB, 449 ms."""
    assert reason_of(_chained_questions(10_826, chain=False)) is DecodeReason.TOO_MANY
    assert reason_of(_chained_questions(1_492)) is DecodeReason.TOO_MANY
    assert reason_of(header(qd=1, an=MAX_RECORDS + 1)) is DecodeReason.TOO_MANY


def test_pointer_jumps_are_budgeted_per_message_not_only_per_name() -> None:
    # Every name within the per-name limit, but 64 questions chained cost 2,016 jumps.
    assert reason_of(_chained_questions(MAX_QUESTIONS)) is DecodeReason.POINTER_DEPTH
    # The same count, each name one jump from the first: a real message's shape.
    q = decode_query(_chained_questions(MAX_QUESTIONS, chain=False))
    assert len(q.questions) == MAX_QUESTIONS
    assert q.questions[1].name == "a._imprint._tcp.local."


# Inputs found by bench/reliability/fuzz.py (issue 17). _ROOT_PTR is a PTR record of the root
# name pointing at the root: 12 bytes, the smallest record dnslib is handed.
_ROOT_PTR = b"\x00\x00\x0c\x00\x01\x00\x00\x00\x78\x00\x01\x00"
_WIDE_NAME = b"\x01a" * 127 + b"\x00"  # 255 bytes, the most labels a name may have


def test_fuzz_found_256_smallest_known_answers_parse_only_the_first_ones() -> None:
    """8988 bytes, header 256 answers, 748 records: 10 ms of dnslib for 256 before."""
    data = struct.pack("!6H", 10681, 0, 0, 256, 0, 0) + _ROOT_PTR * 748
    assert len(data) == 8988
    q = decode_query(data)
    assert len(q.known_answers) == MAX_KNOWN_ANSWERS
    assert q.known_answers[0].name == "."
    # Records past the cap are still walked: a bad one among them refuses the message.
    assert (
        reason_of(
            struct.pack("!6H", 0, 0, 0, 256, 0, 0)
            + _ROOT_PTR * 255
            + b"\x00\x00\x0c\x00\x01\x00\x00\x00\x78\x00\x01\xc0"
        )
        is DecodeReason.TRUNCATED
    )


def test_fuzz_found_response_of_748_records_is_refused_at_its_header() -> None:
    """decode_records had no count bound: 748 of them held the loop 14-60 ms."""
    data = struct.pack("!6H", 33873, 0x8400, 0, 748, 0, 0) + _ROOT_PTR * 748
    with pytest.raises(DecodeError) as info:
        decode_records(data)
    assert info.value.reason is DecodeReason.TOO_MANY
    flags, records = decode_records(struct.pack("!6H", 1, 0x8400, 0, 256, 0, 0) + _ROOT_PTR * 256)
    assert flags == 0x8400 and len(records) == MAX_KNOWN_ANSWERS


def test_one_wide_name_named_again_and_again_by_pointers_is_refused() -> None:
    """255 known answers whose owner and target are one pointer to a 127-label name: 3.8 KB,
    every jump count in bounds, 280 ms of decoding before the per-message label count."""
    ptr = b"\xc0\x0c\x00\x0c\x00\x01\x00\x00\x00\x78\x00\x02\xc0\x0c"
    data = header(qd=1, an=255) + _WIDE_NAME + b"\x00\x0c\x00\x01" + ptr * 255
    assert reason_of(data) is DecodeReason.TOO_MANY
    questions = header(qd=64) + _WIDE_NAME + b"\x00\x0c\x00\x01" + b"\xc0\x0c\x00\x0c\x00\x01" * 63
    assert reason_of(questions) is DecodeReason.TOO_MANY


def test_labels_are_counted_per_message_up_to_the_limit() -> None:
    def names(labels: int) -> bytes:
        full, rest = divmod(labels, 100)
        qs = [b"\x01a" * 100 + b"\x00"] * full + ([b"\x01a" * rest + b"\x00"] if rest else [])
        return header(qd=len(qs)) + b"".join(n + b"\x00\x01\x00\x01" for n in qs)

    assert len(decode_query(names(MAX_MESSAGE_LABELS)).questions) == 11
    assert reason_of(names(MAX_MESSAGE_LABELS + 1)) is DecodeReason.TOO_MANY


def test_a_datagram_over_9000_bytes_is_refused_before_it_is_walked() -> None:
    question = b"\x08_imprint\x04_tcp\x05local\x00\x00\x0c\x00\x01"
    fits = header() + question
    fits += bytes(MAX_MESSAGE - len(fits))  # trailing bytes after the last entry are ignored
    assert decode_query(fits).questions[0].name == "_imprint._tcp.local."
    assert reason_of(fits + b"\x00") is DecodeReason.TOO_LARGE


def test_label_over_63_bytes_is_refused() -> None:
    data = header() + b"\x40" + b"a" * 64 + b"\x00" + b"\x00\x01\x00\x01"
    assert reason_of(data) is DecodeReason.LABEL_TOO_LONG
    # dnslib alone takes it as a 64-byte label:
    assert len(dnslib.DNSRecord.parse(data).q.qname.label[0]) == 64


def test_name_over_255_bytes_is_refused() -> None:
    name = (b"\x3f" + b"a" * 63) * 4 + b"\x00"  # 257 bytes on the wire
    data = header() + name + b"\x00\x01\x00\x01"
    assert reason_of(data) is DecodeReason.NAME_TOO_LONG


def test_name_of_exactly_255_bytes_is_accepted() -> None:
    name = (b"\x3f" + b"a" * 63) * 3 + b"\x3d" + b"b" * 61 + b"\x00"
    assert len(name) == 255
    q = decode_query(header() + name + b"\x00\x01\x00\x01")
    assert q.questions[0].name.endswith("b" * 61 + ".")


def test_counts_larger_than_the_data_are_refused() -> None:
    one = b"\x01a\x00\x00\x01\x00\x01"
    assert reason_of(header(qd=3) + one) is DecodeReason.COUNT_MISMATCH
    assert reason_of(header(qd=1, an=5) + one) is DecodeReason.COUNT_MISMATCH
    assert reason_of(header(qd=MAX_QUESTIONS)) is DecodeReason.COUNT_MISMATCH
    assert reason_of(header(qd=65535)) is DecodeReason.TOO_MANY  # refused before any walking


def test_truncated_packets_are_refused() -> None:
    assert reason_of(b"\x00" * 11) is DecodeReason.TRUNCATED
    assert reason_of(header() + b"\x05ab") is DecodeReason.TRUNCATED
    assert reason_of(header() + b"\x01a\x00\x00\x01") is DecodeReason.TRUNCATED
    assert reason_of(header() + b"\xc0") is DecodeReason.TRUNCATED
    rr = b"\x01a\x00" + struct.pack("!HHIH", 1, 1, 10, 4) + b"\x01\x02"
    assert reason_of(header(qd=0, an=1) + rr) is DecodeReason.TRUNCATED


def test_responses_and_odd_opcodes_and_rcodes_are_refused() -> None:
    q = b"\x01a\x00\x00\x01\x00\x01"
    assert reason_of(header(flags=0x8400) + q) is DecodeReason.NOT_QUERY
    assert reason_of(header(flags=0x2000) + q) is DecodeReason.BAD_OPCODE  # UPDATE (5)
    assert reason_of(header(flags=0x0003) + q) is DecodeReason.BAD_RCODE
    ours = encode_response(RECORDS.records[:1])
    assert reason_of(ours) is DecodeReason.NOT_QUERY


def test_non_utf8_label_is_refused() -> None:
    data = header() + b"\x02\xff\xfe\x00" + b"\x00\x01\x00\x01"
    assert reason_of(data) is DecodeReason.BAD_LABEL


def test_known_answer_rdata_must_match_its_type() -> None:
    q = b"\x01a\x00\x00\x01\x00\x01"
    a5 = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 10, 5) + b"\x01\x02\x03\x04\x05"
    assert reason_of(header(an=1) + q + a5) is DecodeReason.BAD_RDATA
    # A PTR whose name ends before its rdata does: dnslib would misalign every later record.
    ptr = b"\xc0\x0c" + struct.pack("!HHIH", 12, 1, 10, 5) + b"\x01b\x00\x00\x00"
    assert reason_of(header(an=1) + q + ptr) is DecodeReason.BAD_RDATA
    empty = b"\xc0\x0c" + struct.pack("!HHIH", 16, 1, 10, 0)
    assert reason_of(header(an=1) + q + empty) is DecodeReason.BAD_RDATA


def test_records_of_other_types_and_sections_are_framed_not_parsed() -> None:
    q = b"\x01a\x00\x00\x01\x00\x01"
    # A record type dnslib would choke on (an SOA with garbage rdata) in the authority section.
    soa = b"\xc0\x0c" + struct.pack("!HHIH", 6, 1, 10, 3) + b"\xff\xff\xff"
    decoded = decode_query(header(ns=1) + q + soa)
    assert decoded.known_answers == ()


def test_trailing_bytes_after_the_counted_entries_are_ignored() -> None:
    assert decode_query(ZC_QM[2] + b"\x00\x00").questions == decode_query(ZC_QM[2]).questions


# --- encoding ----------------------------------------------------------------------------------


def _ptr_answer(legacy: bool) -> bytes:
    sel = RECORDS.select("_imprint._tcp.local.", 12)
    assert sel is not None
    recs = RECORDS.records
    qs = decode_query(DIG[2]).questions if legacy else ()
    return encode_response(
        [recs[i] for i in sel[0]],
        [recs[i] for i in sel[1]],
        msg_id=0x4477 if legacy else 0,
        questions=qs,
        legacy=legacy,
    )


def test_encoded_answer_reads_back_with_scapy() -> None:
    from scapy.layers.dns import DNS

    pkt = DNS(_ptr_answer(legacy=False))
    assert pkt.qr == 1 and pkt.aa == 1 and pkt.qdcount == 0
    assert pkt.ancount == 1 and pkt.arcount == 4
    an = pkt.an[0]
    assert an.rrname == b"_imprint._tcp.local." and an.type == 12 and an.ttl == SERVICE_TTL
    assert an.rdata == b"Imprint._imprint._tcp.local."
    by_type = {rr.type: rr for rr in pkt.ar}
    assert by_type[33].port == 8443 and by_type[33].target == b"imprint.local."
    assert by_type[1].rdata == "198.18.77.1"
    assert by_type[28].rdata == "fd00::1"
    assert by_type[16].rdata[0] == b"txtvers=1"
    # cache-flush bit (RFC 6762 §10.2) on unique records only, never on the shared PTR
    assert all(rr.cacheflush == 1 and rr.rclass == 1 for rr in pkt.ar)
    assert an.cacheflush == 0 and an.rclass == 1


def test_legacy_answer_reads_back_with_scapy() -> None:
    from scapy.layers.dns import DNS

    pkt = DNS(_ptr_answer(legacy=True))
    assert pkt.id == 0x4477 and pkt.qdcount == 1
    assert pkt.qd[0].qname == b"_imprint._tcp.local." and pkt.qd[0].qtype == 12
    records = [pkt.an[0], *pkt.ar]
    assert all(rr.ttl <= 10 for rr in records)
    assert all(rr.cacheflush == 0 and rr.rclass == 1 for rr in records)


def test_encoded_answer_reads_back_with_zeroconf() -> None:
    zc = pytest.importorskip("zeroconf")
    incoming = zc.DNSIncoming(_ptr_answer(legacy=False))
    assert incoming.valid and incoming.is_response()
    recs = incoming.answers()
    ptr = next(r for r in recs if isinstance(r, zc.DNSPointer))
    srv = next(r for r in recs if isinstance(r, zc.DNSService))
    txt = next(r for r in recs if isinstance(r, zc.DNSText))
    addrs = {r.address for r in recs if isinstance(r, zc.DNSAddress)}
    assert ptr.alias == "Imprint._imprint._tcp.local."
    assert (srv.server, srv.port) == ("imprint.local.", 8443)
    assert srv.unique and txt.unique and not ptr.unique
    assert txt.text.startswith(b"\x09txtvers=1")
    assert addrs == {bytes([198, 18, 77, 1]), bytes.fromhex("fd00" + "00" * 13 + "01")}


def test_with_id_patches_only_the_id() -> None:
    packet = _ptr_answer(legacy=True)
    patched = with_id(packet, 0xBEEF)
    assert patched[:2] == b"\xbe\xef" and patched[2:] == packet[2:]


def test_goodbye_ttl_zero() -> None:
    data = encode_response(RECORDS.service_set, ttl=0)
    parsed = dnslib.DNSRecord.parse(data)
    assert [rr.ttl for rr in parsed.rr] == [0, 0, 0]


# --- fuzzing -----------------------------------------------------------------------------------


def _decode_or_decode_error(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        decode_query(data)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=600))
def test_random_bytes_only_ever_raise_decode_error(data: bytes) -> None:
    _decode_or_decode_error(data)


@settings(max_examples=400, deadline=None)
@given(
    base=st.sampled_from([DIG[2], ZC_QU[2], ZC_QM[2], _pointer_chain_packet(5)]),
    edits=st.lists(
        st.tuples(st.integers(0, 10_000), st.integers(0, 255), st.sampled_from("rid")),
        min_size=1,
        max_size=6,
    ),
    cut=st.integers(0, 10_000),
)
def test_mutated_queries_only_ever_raise_decode_error(
    base: bytes, edits: list[tuple[int, int, str]], cut: int
) -> None:
    data = bytearray(base)
    for pos, value, op in edits:
        at = pos % (len(data) + 1)
        if op == "r" and at < len(data):
            data[at] = value
        elif op == "i":
            data.insert(at, value)
        elif op == "d" and at < len(data):
            del data[at]
    _decode_or_decode_error(bytes(data[: max(cut, 12)]))


# --- QueryDecoder: the memo of recent query bodies ----------------------------------------------


def _decode_or_reason(decode: object, data: bytes) -> Query | DecodeReason:
    assert callable(decode)
    try:
        result = decode(data)
    except DecodeError as e:
        return e.reason
    assert isinstance(result, Query)
    return result


@settings(max_examples=300, deadline=None)
@given(
    base=st.sampled_from([DIG[2], ZC_QU[2], ZC_QM[2], _pointer_chain_packet(5)]),
    ids=st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=8),
    edits=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=3),
)
def test_decoder_memo_gives_what_a_fresh_decode_gives(
    base: bytes, ids: list[int], edits: list[tuple[int, int]]
) -> None:
    decoder = QueryDecoder(size=4)
    data = bytearray(base)
    for pos, value in edits:
        data[pos % len(data)] = value
    for msg_id in ids:  # the same body under several IDs: later ones are memo hits
        datagram = struct.pack("!H", msg_id) + bytes(data[2:])
        assert _decode_or_reason(decoder.decode, datagram) == _decode_or_reason(
            decode_query, datagram
        )


def test_decoder_memo_hits_patch_only_the_id_and_skip_failures_and_long_bodies() -> None:
    decoder = QueryDecoder(size=2, max_body=len(DIG[2]) - 2)
    first = decoder.decode(DIG[2])
    again = decoder.decode(b"\xbe\xef" + DIG[2][2:])
    assert decoder.hits == 1
    assert again.id == 0xBEEF and again.questions is first.questions
    bad = DIG[2][:20]  # ends inside the question
    for _ in range(2):
        with pytest.raises(DecodeError):
            decoder.decode(bad)
    assert decoder.hits == 1  # a refused datagram is never remembered
    decoder.decode(DIG[2])
    assert decoder.hits == 2  # DIG's body is exactly max_body: kept
    long = ZC_QM[2] + b"\0" * (len(DIG[2]) - len(ZC_QM[2]) + 1)  # trailing bytes: longer
    decoder.decode(long)
    decoder.decode(long)
    assert decoder.hits == 2  # longer than max_body: decoded afresh each time


def test_decoder_memo_is_bounded_oldest_first() -> None:
    decoder = QueryDecoder(size=2)
    for data in (DIG[2], ZC_QU[2], ZC_QM[2]):  # the third pushes DIG's body out
        decoder.decode(data)
    decoder.decode(ZC_QM[2])
    decoder.decode(DIG[2])
    assert decoder.hits == 1
