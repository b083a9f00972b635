"""mDNS wire codec: bytes -> Query, our records -> bytes. dnslib stays inside this module.

dnslib is not safe on hostile input by itself: a chain of ~1,500 compression pointers makes it
raise RecursionError instead of a DNS error, it accepts labels over 63 bytes and names over 255
bytes, and it keeps the QU / cache-flush bit inside the class value. So `decode_query` first walks
the raw bytes itself (`_walk`): header counts against the data, every name (pointer loops,
forward pointers, hop limit, label and name length, UTF-8), every record's framing. Only then are
the entries we use (questions, and known answers of the types we hold) handed to dnslib, each at
the offset the walker found, and each must end where the walker said it ends. Anything dnslib
raises becomes a DecodeError. The only exception `decode_query` raises is DecodeError.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from dnslib import (
    AAAA,
    PTR,
    RR,
    SRV,
    TXT,
    A,
    DNSBuffer,
    DNSHeader,
    DNSLabel,
    DNSQuestion,
    DNSRecord,
)

from server.mdns.names import (
    MAX_LABEL,
    MAX_NAME,
    Labels,
    canonical_wire_name,
    labels_to_text,
    name_key,
    text_to_labels,
)
from server.mdns.records import (
    CLASS_IN,
    TYPE_A,
    TYPE_AAAA,
    TYPE_PTR,
    TYPE_SRV,
    TYPE_TXT,
    AddressData,
    PtrData,
    Record,
    SrvData,
    TxtData,
)

HEADER_LEN = 12
FLAG_QR = 0x8000
FLAG_AA = 0x0400
FLAG_TC = 0x0200
OPCODE_MASK = 0x7800
RCODE_MASK = 0x000F
TOP_BIT = 0x8000  # QU bit in a question's class (RFC 6762 §5.4), cache-flush in a record's §10.2
LEGACY_MAX_TTL = 10  # RFC 6762 §6.7
LEGACY_MAX_SIZE = 512  # RFC 1035 §4.2.1: a legacy resolver may not take more over UDP

# A name of 255 bytes has at most 127 labels, so a well-formed name never needs more jumps.
MAX_POINTER_HOPS = 128
# What one message may cost before it is refused (issue 17: a 65 KB query of 10,826 questions
# chained by pointers held the event loop 2.9 s). RFC 6762 §17: an mDNS packet, IP and UDP
# headers included, must not exceed 9000 bytes. A real query asks a few questions and lists at
# most a few dozen known answers; a real message's names take about one jump each.
MAX_MESSAGE = 9000
MAX_QUESTIONS = 64
MAX_RECORDS = 256
MAX_MESSAGE_HOPS = 512
# Pointers let a few bytes stand for a long name again and again: 255 known answers each naming
# one 127-label name by a pointer were 3.8 KB and held the loop 280 ms, with every jump count in
# bounds (issue 17, found by bench/reliability/fuzz.py). So the labels read across all names of
# a message are counted too; a real query of a few dozen known answers reads a few hundred.
MAX_MESSAGE_LABELS = 1024
# Records of the types we hold are handed to dnslib at 40-100 us each: 256 of the smallest
# (3 KB) took 10 ms, 64 SRV records 7 ms. Only the first MAX_KNOWN_ANSWERS are parsed; later ones
# are still walked (framing, names) but left out. For a query that costs at most an answer the
# querier already holds (known-answer suppression is an optimisation, RFC 6762 §7.1); a real
# query carries a handful, and RFC 6762 §7.2 spreads long lists over several packets.
MAX_KNOWN_ANSWERS = 32

# Known-answer types we hold records of; others cannot suppress anything of ours, so they are
# framed and name-checked by the walker but never handed to dnslib.
_KNOWN_ANSWER_TYPES = frozenset({TYPE_A, TYPE_AAAA, TYPE_PTR, TYPE_SRV, TYPE_TXT})
# Offset of the domain name inside the rdata of the types above that carry one.
_RDATA_NAME_AT = {TYPE_PTR: 0, TYPE_SRV: 6}


class DecodeReason(StrEnum):
    """Stable reason codes for a datagram we cannot use: logs, metrics and tests use them."""

    TRUNCATED = "MDNS_TRUNCATED"  # ends inside the header, a name or a record
    TOO_LARGE = "MDNS_TOO_LARGE"  # over MAX_MESSAGE bytes: refused before any parsing
    TOO_MANY = "MDNS_TOO_MANY"  # more questions, records or labels than any real query holds
    NOT_QUERY = "MDNS_NOT_QUERY"  # QR=1: a response, not for a responder to answer
    BAD_OPCODE = "MDNS_BAD_OPCODE"  # RFC 6762 §18.3: non-zero opcode is silently ignored
    BAD_RCODE = "MDNS_BAD_RCODE"  # RFC 6762 §18.11: non-zero rcode is silently ignored
    COUNT_MISMATCH = "MDNS_COUNT_MISMATCH"  # header counts more entries than the data holds
    POINTER_LOOP = "MDNS_POINTER_LOOP"  # a pointer back into the name it is part of
    FORWARD_POINTER = "MDNS_FORWARD_POINTER"  # a pointer to a later offset
    BAD_POINTER = "MDNS_BAD_POINTER"  # a pointer into the header
    POINTER_DEPTH = "MDNS_POINTER_DEPTH"  # more jumps than any real name needs
    LABEL_TOO_LONG = "MDNS_LABEL_TOO_LONG"  # length byte 64-191 (RFC 1035 §2.3.4 / 6891 §5)
    NAME_TOO_LONG = "MDNS_NAME_TOO_LONG"  # over 255 bytes expanded
    BAD_LABEL = "MDNS_BAD_LABEL"  # label not UTF-8 (RFC 6762 §16)
    BAD_RDATA = "MDNS_BAD_RDATA"  # rdata of a known answer does not match its type or length
    MALFORMED = "MDNS_MALFORMED"  # dnslib refused what the walker let through


class DecodeError(Exception):
    """A peer sent bytes we cannot use; `reason` is a stable DecodeReason."""

    def __init__(self, reason: DecodeReason, detail: str = "") -> None:
        super().__init__(f"{reason.value}: {detail}" if detail else reason.value)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Question:
    """One question; `qclass` without the QU bit, `name` as sent (escaped text, trailing dot)."""

    name: str
    qtype: int
    qclass: int
    qu: bool

    @property
    def wire_class(self) -> int:
        return self.qclass | (TOP_BIT if self.qu else 0)


@dataclass(frozen=True, slots=True)
class KnownAnswer:
    """A record the querier already holds (RFC 6762 §7.1); `name` is case-folded."""

    name: str
    rtype: int
    rclass: int  # without the cache-flush bit
    ttl: int
    rdata: bytes  # canonical: uncompressed, names lower-cased (records.canonical_rdata)

    @property
    def key(self) -> tuple[str, int, bytes]:
        return (self.name, self.rtype, self.rdata)


@dataclass(frozen=True, slots=True)
class Query:
    """A decoded mDNS query (QR=0, opcode 0, rcode 0)."""

    id: int
    flags: int
    questions: tuple[Question, ...]
    known_answers: tuple[KnownAnswer, ...]

    @property
    def truncated(self) -> bool:
        """TC bit: more known answers follow in later packets (RFC 6762 §7.2)."""
        return bool(self.flags & FLAG_TC)


@dataclass(slots=True)
class _Layout:
    questions: list[tuple[int, int]]  # (start, end) of each question
    answers: list[tuple[int, int]]  # (start, end) of known answers of _KNOWN_ANSWER_TYPES


def _walk_name(data: bytes, pos: int, budget: list[int]) -> int:
    """Validate the name at `pos` and return the offset just after it in place. Each pointer
    jump spends one of `budget[0]`, the jumps the whole message has left, and each label read
    one of `budget[1]`, the labels it has left."""
    n = len(data)
    segment = pos  # start of the labels read since the last jump
    end = -1
    hops = 0
    length = 1  # the root byte
    while True:
        if pos >= n:
            raise DecodeError(DecodeReason.TRUNCATED, f"name runs past the end at {pos}")
        b = data[pos]
        if b >= 0xC0:
            if pos + 1 >= n:
                raise DecodeError(DecodeReason.TRUNCATED, f"pointer cut short at {pos}")
            target = ((b & 0x3F) << 8) | data[pos + 1]
            if end < 0:
                end = pos + 2
            # RFC 1035 §4.1.4 pointers refer to a prior occurrence. We require every jump to land
            # strictly before the labels read since the previous one, so positions only ever go
            # down and no name can be read twice: that rules out every loop by construction.
            if target > pos:
                raise DecodeError(
                    DecodeReason.FORWARD_POINTER, f"pointer at {pos} points forward to {target}"
                )
            if target >= segment:
                raise DecodeError(
                    DecodeReason.POINTER_LOOP, f"pointer at {pos} points back into its own name"
                )
            if target < HEADER_LEN:
                raise DecodeError(
                    DecodeReason.BAD_POINTER, f"pointer at {pos} points into the header"
                )
            hops += 1
            if hops > MAX_POINTER_HOPS:
                raise DecodeError(
                    DecodeReason.POINTER_DEPTH, f"more than {MAX_POINTER_HOPS} pointer jumps"
                )
            budget[0] -= 1
            if budget[0] < 0:
                raise DecodeError(
                    DecodeReason.POINTER_DEPTH,
                    f"more than {MAX_MESSAGE_HOPS} pointer jumps in one message",
                )
            pos = segment = target
            continue
        if b > MAX_LABEL:
            # 0x40 and 0x80 label types: obsolete/extended (RFC 6891 §5), never valid in mDNS.
            raise DecodeError(DecodeReason.LABEL_TOO_LONG, f"label length byte {b:#04x} at {pos}")
        if b == 0:
            return end if end >= 0 else pos + 1
        budget[1] -= 1
        if budget[1] < 0:
            raise DecodeError(
                DecodeReason.TOO_MANY, f"more than {MAX_MESSAGE_LABELS} labels in one message"
            )
        length += b + 1
        if length > MAX_NAME:
            raise DecodeError(DecodeReason.NAME_TOO_LONG, f"name longer than {MAX_NAME} bytes")
        stop = pos + 1 + b
        if stop > n:
            raise DecodeError(DecodeReason.TRUNCATED, f"label at {pos} runs past the end")
        label = data[pos + 1 : stop]
        if not label.isascii():
            try:
                label.decode("utf-8")
            except UnicodeDecodeError:
                raise DecodeError(DecodeReason.BAD_LABEL, f"label at {pos} is not UTF-8") from None
        pos = stop


def _walk(data: bytes, counts: tuple[int, int, int, int], every: bool = False) -> _Layout:
    """Validate framing and names of every section; return where the entries we use are.

    Records of the types we hold are listed from the answer section, or with `every` from all
    three record sections (a response's records, for conflict detection): the first
    MAX_KNOWN_ANSWERS of them.
    """
    n = len(data)
    if n > MAX_MESSAGE:
        raise DecodeError(DecodeReason.TOO_LARGE, f"{n} bytes, at most {MAX_MESSAGE}")
    qd, an, ns, ar = counts
    pos = HEADER_LEN
    budget = [MAX_MESSAGE_HOPS, MAX_MESSAGE_LABELS]
    questions: list[tuple[int, int]] = []
    for i in range(qd):
        if pos >= n:
            raise DecodeError(
                DecodeReason.COUNT_MISMATCH, f"header says {qd} questions, data holds {i}"
            )
        start = pos
        pos = _walk_name(data, pos, budget) + 4
        if pos > n:
            raise DecodeError(DecodeReason.TRUNCATED, f"question {i} cut short")
        questions.append((start, pos))
    answers: list[tuple[int, int]] = []
    for section, count in enumerate((an, ns, ar)):
        for i in range(count):
            if pos >= n:
                raise DecodeError(
                    DecodeReason.COUNT_MISMATCH,
                    f"header says {count} records in section {section + 1}, data holds {i}",
                )
            start = pos
            fixed = _walk_name(data, pos, budget)
            if fixed + 10 > n:
                raise DecodeError(DecodeReason.TRUNCATED, f"record at {start} cut short")
            rtype, _rclass, _ttl, rdlength = struct.unpack_from("!HHIH", data, fixed)
            rdata = fixed + 10
            pos = rdata + rdlength
            if pos > n:
                raise DecodeError(DecodeReason.TRUNCATED, f"rdata of record at {start} cut short")
            if (section == 0 or every) and rtype in _KNOWN_ANSWER_TYPES:
                if rdlength == 0:
                    raise DecodeError(DecodeReason.BAD_RDATA, f"empty rdata at {start}")
                at = _RDATA_NAME_AT.get(rtype)
                if at is not None and (
                    rdlength <= at or _walk_name(data, rdata + at, budget) != pos
                ):
                    raise DecodeError(
                        DecodeReason.BAD_RDATA, f"name in rdata at {start} does not fit"
                    )
                if len(answers) < MAX_KNOWN_ANSWERS:
                    answers.append((start, pos))
    return _Layout(questions, answers)


def _labels(label: object) -> Labels:
    assert isinstance(label, DNSLabel)
    return tuple(label.label)


def _known_answer(rr: object) -> KnownAnswer:
    assert isinstance(rr, RR)
    rd = rr.rdata
    rtype = int(rr.rtype)
    if rtype == TYPE_PTR:
        rdata = canonical_wire_name(_labels(rd.label))
    elif rtype == TYPE_SRV:
        rdata = struct.pack("!HHH", rd.priority, rd.weight, rd.port) + canonical_wire_name(
            _labels(rd.target)
        )
    elif rtype == TYPE_TXT:
        rdata = b"".join(bytes((len(s),)) + bytes(s) for s in rd.data)
    else:  # A, AAAA
        rdata = bytes(rd.data)
    return KnownAnswer(
        name=name_key(labels_to_text(_labels(rr.rname))),
        rtype=rtype,
        rclass=int(rr.rclass) & ~TOP_BIT,
        ttl=int(rr.ttl),
        rdata=rdata,
    )


def _check_counts(questions: int, records: int) -> None:
    if questions > MAX_QUESTIONS or records > MAX_RECORDS:
        raise DecodeError(
            DecodeReason.TOO_MANY,
            f"{questions} questions and {records} records; at most {MAX_QUESTIONS} and {MAX_RECORDS}",
        )


def decode_query(data: bytes) -> Query:
    """Decode one mDNS query datagram, or raise DecodeError (and nothing else)."""
    if len(data) < HEADER_LEN:
        raise DecodeError(DecodeReason.TRUNCATED, f"{len(data)} bytes, shorter than a header")
    msg_id, flags, qd, an, ns, ar = struct.unpack_from("!6H", data)
    if flags & FLAG_QR:
        raise DecodeError(DecodeReason.NOT_QUERY)
    if flags & OPCODE_MASK:
        raise DecodeError(DecodeReason.BAD_OPCODE, f"opcode {(flags & OPCODE_MASK) >> 11}")
    if flags & RCODE_MASK:
        raise DecodeError(DecodeReason.BAD_RCODE, f"rcode {flags & RCODE_MASK}")
    _check_counts(qd, an + ns + ar)
    layout = _walk(data, (qd, an, ns, ar))
    buf = DNSBuffer(data)
    questions: list[Question] = []
    known: list[KnownAnswer] = []
    try:
        for start, end in layout.questions:
            buf.offset = start
            q = DNSQuestion.parse(buf)
            if buf.offset != end:
                raise DecodeError(DecodeReason.MALFORMED, f"question at {start}: length differs")
            qclass = int(q.qclass)
            questions.append(
                Question(
                    name=labels_to_text(_labels(q.qname)),
                    qtype=int(q.qtype),
                    qclass=qclass & ~TOP_BIT,
                    qu=bool(qclass & TOP_BIT),
                )
            )
        for start, end in layout.answers:
            buf.offset = start
            rr = RR.parse(buf)
            if buf.offset != end:
                raise DecodeError(
                    DecodeReason.BAD_RDATA, f"record at {start}: rdata length does not match type"
                )
            known.append(_known_answer(rr))
    except DecodeError:
        raise
    except Exception as e:  # noqa: BLE001 - dnslib raises many kinds; a peer's bytes, not ours
        raise DecodeError(DecodeReason.MALFORMED, f"{type(e).__name__}: {e}") from None
    return Query(id=msg_id, flags=flags, questions=tuple(questions), known_answers=tuple(known))


class QueryDecoder:
    """`decode_query` with a bounded memo of recent query bodies (everything after the ID).

    On a busy link nearly every query is one of a few byte strings that differ only in their ID
    (every device browses for the same service), so a body seen before is not walked and parsed
    again: the memo maps the body to what decode_query made of it, and only the ID is read from
    the new datagram. Decoding is a pure function of the bytes, so a hit returns exactly what a
    fresh decode would. Bodies longer than `max_body` (queries with long known-answer lists) and
    datagrams that fail to decode are never kept; when full, the oldest entry goes.
    """

    def __init__(self, size: int = 256, max_body: int = 512) -> None:
        self._memo: dict[bytes, Query] = {}
        self._size = size
        self._max_body = max_body
        self.hits = 0

    def decode(self, data: bytes) -> Query:
        """Decode one mDNS query datagram, or raise DecodeError (and nothing else)."""
        body = bytes(data[2:])  # hashable even when given a bytearray
        known = self._memo.get(body)
        if known is not None:
            self.hits += 1
            msg_id = (data[0] << 8) | data[1]
            if msg_id == known.id:
                return known
            return Query(msg_id, known.flags, known.questions, known.known_answers)
        query = decode_query(data)
        if len(body) <= self._max_body:
            memo = self._memo
            if len(memo) >= self._size:
                del memo[next(iter(memo))]
            memo[body] = query
        return query


def decode_records(data: bytes) -> tuple[int, tuple[KnownAnswer, ...]]:
    """(flags, records of the types we hold in every section) of any mDNS message.

    Used on responses (and probes' authority sections) from other hosts to notice a name of ours
    in use (RFC 6762 §8.1, §9); at most MAX_KNOWN_ANSWERS records. Raises DecodeError only.
    """
    if len(data) < HEADER_LEN:
        raise DecodeError(DecodeReason.TRUNCATED, f"{len(data)} bytes, shorter than a header")
    _id, flags, qd, an, ns, ar = struct.unpack_from("!6H", data)
    # The same bounds as a query's: 700 small records in 8 KB took 28 ms before (issue 17).
    _check_counts(qd, an + ns + ar)
    layout = _walk(data, (qd, an, ns, ar), every=True)
    buf = DNSBuffer(data)
    out: list[KnownAnswer] = []
    try:
        for start, end in layout.answers:
            buf.offset = start
            rr = RR.parse(buf)
            if buf.offset != end:
                raise DecodeError(DecodeReason.BAD_RDATA, f"record at {start}: length differs")
            out.append(_known_answer(rr))
    except DecodeError:
        raise
    except Exception as e:  # noqa: BLE001 - dnslib raises many kinds; a peer's bytes, not ours
        raise DecodeError(DecodeReason.MALFORMED, f"{type(e).__name__}: {e}") from None
    return flags, tuple(out)


def encode_probe(names: Sequence[str], authority: Sequence[Record], *, qu: bool) -> bytes:
    """A probe query (RFC 6762 §8.1): type ANY for each name, our proposed records as authority."""
    header = DNSHeader(id=0, bitmap=0)
    record = DNSRecord(
        header,
        [
            DNSQuestion(DNSLabel(text_to_labels(n)), 255, CLASS_IN | (TOP_BIT if qu else 0))
            for n in names
        ],
        [],
        auth=[_rr(r, False, None, flush=False) for r in authority],
    )
    packed = record.pack()
    assert isinstance(packed, bytes | bytearray)
    return bytes(packed)


def _rdata(record: Record) -> object:
    rd = record.rdata
    if isinstance(rd, PtrData):
        return PTR(DNSLabel(rd.target))
    if isinstance(rd, SrvData):
        return SRV(rd.priority, rd.weight, rd.port, DNSLabel(rd.target))
    if isinstance(rd, TxtData):
        return TXT(list(rd.strings))
    assert isinstance(rd, AddressData)
    return A(tuple(rd.packed)) if record.rtype == TYPE_A else AAAA(tuple(rd.packed))


def _rr(record: Record, legacy: bool, ttl: int | None, *, flush: bool = True) -> object:
    value = record.ttl if ttl is None else ttl
    rclass = CLASS_IN
    if legacy:
        # RFC 6762 §6.7: TTL at most 10 s and no cache-flush bit to a legacy resolver.
        value = min(value, LEGACY_MAX_TTL)
    elif record.unique and flush:  # §10.2: never in a probe's authority section
        rclass |= TOP_BIT  # §10.2 cache-flush: this record set is all there is
    return RR(DNSLabel(record.labels), record.rtype, rclass, value, _rdata(record))


def encode_response(
    answers: Sequence[Record],
    additionals: Sequence[Record] = (),
    *,
    msg_id: int = 0,
    questions: Sequence[Question] = (),
    legacy: bool = False,
    ttl: int | None = None,
) -> bytes:
    """Encode an authoritative response; `ttl` overrides every TTL (0 for goodbye packets).

    `questions` are echoed only for legacy unicast (RFC 6762 §6.7); other mDNS responses carry
    none (§6). A legacy answer over 512 bytes loses its additional records (RFC 2181 §9).
    """

    def pack(extra: Sequence[Record]) -> bytes:
        header = DNSHeader(id=msg_id, bitmap=FLAG_QR | FLAG_AA)
        record = DNSRecord(
            header,
            [
                DNSQuestion(DNSLabel(text_to_labels(q.name)), q.qtype, q.wire_class)
                for q in questions
            ]
            if legacy
            else [],
            [_rr(r, legacy, ttl) for r in answers],
            ar=[_rr(r, legacy, ttl) for r in extra],
        )
        packed = record.pack()
        assert isinstance(packed, bytes | bytearray)
        return bytes(packed)

    packet = pack(additionals)
    if legacy and additionals and len(packet) > LEGACY_MAX_SIZE:
        packet = pack(())
    return packet


def with_id(packet: bytes, msg_id: int) -> bytes:
    """`packet` with its 16-bit message ID replaced (cheap: no re-encoding)."""
    return msg_id.to_bytes(2, "big") + packet[2:]
