"""Who gets an mDNS answer, where it goes, and its bytes. Pure: `now` and the decision come in.

Departure from RFC 6762, on purpose: §6 says a responder should usually multicast its answers so
that every host's cache stays in step. Imprint answers only queriers whose MAC is registered, and
only by unicast, so that hosts on the LAN that are not registered devices never learn that the
provisioning service exists. Per-device records are never announced unsolicited.

- QU question from port 5353 (§5.4): unicast to source:5353.
- QM question from port 5353: also unicast to source:5353 (the departure above), after the
  20-120 ms delay of §6 when the answer holds a shared record (a PTR).
- Any query from another port is legacy unicast (§6.7): unicast to source:port, echo the ID and the
  questions, TTL at most 10 s, no cache-flush bit.
- Sources that are not on one of our links are ignored (§11); responses never reach here (the
  codec refuses QR=1).

Encoded answers are cached per (records chosen, legacy question echo) with a zero ID, and the
2-byte ID is patched per query; which records a question set selects is cached too. Both caches
are bounded and dropped whenever the records change.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from server.core.policy import Decision
from server.core.ratelimit import TokenBuckets
from server.mdns.codec import Query, Question, encode_response, with_id
from server.mdns.records import CLASS_ANY, CLASS_IN, Selection, ServiceRecords

MDNS_PORT = 5353

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class IgnoreReason(StrEnum):
    """Stable reason codes for a decoded query that gets no answer (besides policy reasons)."""

    OFF_LINK = "MDNS_OFF_LINK"  # source address not on one of our links (RFC 6762 §11)
    BAD_SOURCE = "MDNS_BAD_SOURCE"  # source port 0 or an address that does not parse
    NO_QUESTION = "MDNS_NO_QUESTION"  # only known answers (a TC continuation, §7.2)
    NOT_OURS = "MDNS_NOT_OURS"  # no question for a name and type we hold
    RATE_LIMITED = "MDNS_RATE_LIMITED"  # this source asked too often
    KNOWN_ANSWERS = "MDNS_KNOWN_ANSWERS"  # the querier already holds every answer (§7.1)


class ReplyKind(StrEnum):
    LEGACY = "legacy"  # source port != 5353 (§6.7)
    QU = "qu"  # unicast requested (§5.4)
    QM = "qm"  # multicast requested, answered by unicast anyway (see module docstring)


@dataclass(frozen=True, slots=True)
class Ignore:
    reason: str


# RFC 6762 §6: an answer that holds a shared record (our PTRs) to a multicast question waits a
# random 20-120 ms, so answers from several responders on the link do not collide.
SHARED_DELAY_MIN = 0.020
SHARED_DELAY_SPAN = 0.100


@dataclass(frozen=True, slots=True)
class Reply:
    payload: bytes
    dest: tuple[str, int]
    kind: ReplyKind
    delay: float = 0.0  # seconds to wait before sending


@dataclass(frozen=True, slots=True)
class Pending:
    """A query that asks for our records from an acceptable source: now it needs a decision."""

    query: Query
    dest: tuple[str, int]
    kind: ReplyKind
    selection: Selection
    qname: str  # first question we answer, for logs


# (answer indexes, additional indexes, any question QU, first question answered), or _NOT_OURS.
_Selected = tuple[tuple[int, ...], tuple[int, ...], bool, str]
_NOT_OURS: _Selected = ((), (), False, "")


def _strip_scope(ip: str) -> str:
    return ip.split("%", 1)[0]


class Responder:
    """The sans-I/O mDNS responder for one set of records on a set of links."""

    def __init__(
        self,
        records: ServiceRecords,
        networks: Iterable[Network],
        *,
        limiter: TokenBuckets | None = None,
        cache_size: int = 128,
    ) -> None:
        self._records = records
        self._networks: tuple[Network, ...] = tuple(networks)
        self._on_link: dict[str, bool] = {}
        self._limiter = limiter
        self._cache: OrderedDict[tuple[object, ...], bytes] = OrderedDict()
        self._cache_size = cache_size
        # What our records answer for a question set, so a repeated query is not matched again.
        self._selections: dict[tuple[Question, ...], _Selected] = {}
        self.cache_hits = 0
        self.cache_misses = 0

    @property
    def records(self) -> ServiceRecords:
        return self._records

    def set_records(self, records: ServiceRecords) -> None:
        """Replace the records; answers encoded from the old ones are dropped."""
        self._records = records
        self._cache.clear()
        self._selections.clear()

    def set_networks(self, networks: Iterable[Network]) -> None:
        """Replace the on-link networks (interface addresses changed)."""
        self._networks = tuple(networks)
        self._on_link.clear()

    def is_on_link(self, ip: str) -> bool:
        """True if `ip` lies in one of our link networks."""
        known = self._on_link.get(ip)
        if known is not None:
            return known
        try:
            addr = ipaddress.ip_address(_strip_scope(ip))
        except ValueError:
            return False
        result = any(addr in net for net in self._networks)
        if len(self._on_link) >= 4096:  # bounded: sources are attacker-chosen
            self._on_link.clear()
        self._on_link[ip] = result
        return result

    def screen(self, query: Query, src_ip: str, src_port: int, now: float) -> Pending | Ignore:
        """Cheap checks before anyone looks up the querier's MAC; takes a rate-limit token."""
        if not 0 < src_port < 65536:
            return Ignore(IgnoreReason.BAD_SOURCE)
        if not self.is_on_link(src_ip):
            return Ignore(IgnoreReason.OFF_LINK)
        if not query.questions:
            return Ignore(IgnoreReason.NO_QUESTION)
        selection = self._selections.get(query.questions)
        if selection is None:
            selection = self._select(query.questions)
            if len(self._selections) >= 256:  # bounded: questions are the querier's choice
                self._selections.clear()
            self._selections[query.questions] = selection
        if selection is _NOT_OURS:
            return Ignore(IgnoreReason.NOT_OURS)
        answers, extra, qu, qname = selection
        if self._limiter is not None and not self._limiter.allow(_strip_scope(src_ip), now):
            return Ignore(IgnoreReason.RATE_LIMITED)
        if src_port != MDNS_PORT:
            kind, dest = ReplyKind.LEGACY, (src_ip, src_port)
        else:
            kind, dest = (ReplyKind.QU if qu else ReplyKind.QM), (src_ip, MDNS_PORT)
        return Pending(query, dest, kind, (answers, extra), qname)

    def _select(self, questions: tuple[Question, ...]) -> _Selected:
        """Our records answering `questions` (answers, additional, any QU, first qname)."""
        records = self._records
        answers: list[int] = []
        extra: list[int] = []
        qu = False
        qname = ""
        for q in questions:
            if q.qclass != CLASS_IN and q.qclass != CLASS_ANY:
                continue
            sel = records.select(q.name, q.qtype)
            if sel is None:
                continue
            if not qname:
                qname = q.name
            qu = qu or q.qu
            answers.extend(i for i in sel[0] if i not in answers)
            extra.extend(i for i in sel[1] if i not in extra)
        if not answers:
            return _NOT_OURS
        return (tuple(answers), tuple(i for i in extra if i not in answers), qu, qname)

    def answer(self, pending: Pending, decision: Decision, jitter: float = 0.0) -> Reply | Ignore:
        """The reply for a screened query given the policy decision on the querier's MAC.

        `jitter` in [0, 1) picks the §6 delay of a QM answer holding a shared record.
        """
        if not decision.answer:
            return Ignore(decision.reason.value)
        answers, extra = pending.selection
        query = pending.query
        records = self._records.records
        if query.known_answers:
            # RFC 6762 §7.1: leave out what the querier holds with at least half the true TTL.
            held: dict[tuple[str, int, bytes], int] = {}
            for ka in query.known_answers:
                if ka.rclass == CLASS_IN and ka.ttl > held.get(ka.key, -1):
                    held[ka.key] = ka.ttl
            if held:
                answers = tuple(
                    i for i in answers if held.get(records[i].key, -1) * 2 < records[i].ttl
                )
                extra = tuple(i for i in extra if held.get(records[i].key, -1) * 2 < records[i].ttl)
                if not answers:
                    return Ignore(IgnoreReason.KNOWN_ANSWERS)
        legacy = pending.kind is ReplyKind.LEGACY
        # A legacy answer echoes the questions exactly as asked, so they are part of its key.
        key: tuple[object, ...] = (answers, extra, query.questions) if legacy else (answers, extra)
        packet = self._cache.get(key)
        if packet is None:
            self.cache_misses += 1
            packet = encode_response(
                [records[i] for i in answers],
                [records[i] for i in extra],
                questions=query.questions if legacy else (),
                legacy=legacy,
            )
            self._cache[key] = packet
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        else:
            self.cache_hits += 1
            self._cache.move_to_end(key)
        # RFC 6762 §18.1: a unicast response to a particular query carries that query's ID.
        if query.id:
            packet = with_id(packet, query.id)
        delay = 0.0
        if pending.kind is ReplyKind.QM and any(not records[i].unique for i in answers):
            delay = SHARED_DELAY_MIN + SHARED_DELAY_SPAN * min(max(jitter, 0.0), 1.0)
        return Reply(packet, pending.dest, pending.kind, delay)

    def respond(
        self, query: Query, src_ip: str, src_port: int, decision: Decision, now: float
    ) -> Reply | Ignore:
        """screen() then answer(): the whole rule set for one query."""
        pending = self.screen(query, src_ip, src_port, now)
        if isinstance(pending, Ignore):
            return pending
        return self.answer(pending, decision)

    def goodbye(self) -> bytes:
        """Our service records (PTR, SRV, TXT) with TTL 0 (RFC 6762 §10.1), for unicast."""
        return encode_response(self._records.service_set, ttl=0)
