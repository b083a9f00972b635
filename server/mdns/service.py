"""mDNS glue, no sockets: datagram -> decode -> screen -> learn MAC -> policy -> responder -> sends.

Every datagram `handle` gets ends in exactly one of `imprint_mdns_packets_dropped_total{reason}`
or `imprint_mdns_answers_sent_total{kind}`; each policy decision is also counted in
`imprint_mdns_decisions_total{decision,reason}` and logged once on "imprint.mdns".
`handle` never raises: a fault of ours is counted as MDNS_INTERNAL_ERROR and logged.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from server.core.logs import summary_line
from server.core.metrics import Registry
from server.core.policy import Decision, Reason, decide
from server.core.ratelimit import TokenBuckets
from server.mdns.codec import DecodeError, DecodeReason, QueryDecoder
from server.mdns.neighbours import NeighbourResolver
from server.mdns.records import ServiceRecords
from server.mdns.responder import MDNS_PORT, Ignore, Network, ReplyKind, Responder
from server.provisioning.sightings import Sightings
from server.registry.model import DeviceView

INTERNAL_ERROR = "MDNS_INTERNAL_ERROR"
# More datagrams from one source than `[mdns] datagrams_per_source` allows: dropped undecoded.
SOURCE_FLOOD = "MDNS_SOURCE_FLOOD"

Send = tuple[bytes, tuple[str, int]]


class MdnsService:
    """One mDNS responder for one service instance, deciding through server.policy."""

    def __init__(
        self,
        records: ServiceRecords,
        index: Mapping[str, DeviceView],
        *,
        networks: Iterable[Network],
        neighbours: NeighbourResolver,
        metrics: Registry,
        rate: float = 1.0,
        burst: float = 8.0,
        datagram_rate: float = 100.0,
        datagram_burst: float = 200.0,
        max_sources: int = 4096,
        cache_size: int = 128,
        max_goodbye_peers: int = 1024,
        logger: logging.Logger | None = None,
        link: str = "",
        sightings: Sightings | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        """`sightings`: where a registered querier's latest sighting is noted (when, its
        address, this link, how its MAC was learned), timed by `wall_clock` (`now` in
        `handle` is monotonic)."""
        # `index` is the live registry mapping the store mutates: read on every packet, never
        # copied, so a registration applies to the next query.
        self._index = index
        self.link = link  # the interface this responder answers on, for logs
        self._sightings = sightings
        self._wall_clock = wall_clock
        self._neighbours = neighbours
        self._responder = Responder(
            records,
            networks,
            limiter=TokenBuckets(rate, burst, max_sources),
            cache_size=cache_size,
        )
        self._decoder = QueryDecoder()
        # Every datagram from one source, before it is decoded: the cheap bound on what one
        # host makes us parse (a busy host's own mDNS chatter is a few datagrams a second;
        # `rate` above limits only the queries for our service, after decoding).
        self._datagrams = TokenBuckets(datagram_rate, datagram_burst, max_sources)
        self._log = logger or logging.getLogger("imprint.mdns")
        # MACs whose queries are logged at INFO (the trace list, `imprint trace MAC`).
        self.trace: frozenset[str] = frozenset()
        # Decisions since the last summary, by (decision, reason).
        self._tally: dict[tuple[str, str], int] = {}
        # Set by the transport while it claims our names: gets every response from a peer.
        self.on_response: Callable[[bytes, str], None] | None = None
        self._peers: OrderedDict[str, float] = OrderedDict()  # answered via 5353 -> when
        self._max_peers = max_goodbye_peers
        self.received = metrics.counter(
            "imprint_mdns_packets_received_total", "mDNS datagrams received"
        )
        self.dropped = metrics.counter(
            "imprint_mdns_packets_dropped_total",
            "mDNS datagrams that got no answer, by reason code",
            ["reason"],
        )
        self.decisions = metrics.counter(
            "imprint_mdns_decisions_total",
            "policy decisions on mDNS queriers for our service",
            ["decision", "reason"],
        )
        self.answers = metrics.counter(
            "imprint_mdns_answers_sent_total",
            "mDNS answers handed to the transport, by kind (legacy, qu, qm, goodbye)",
            ["kind"],
        )
        self.mac_sources = metrics.counter(
            "imprint_mdns_mac_source_total",
            "where the MAC of a querier for our service came from (frame, static, neighbour, "
            "lease, unknown), by decision",
            ["source", "decision"],
        )
        self.capture = metrics.gauge(
            "imprint_mdns_frame_capture",
            "1 if queries on this interface are read as frames (MAC from the frame), else 0",
            ["interface"],
        )
        self.renames = metrics.counter(
            "imprint_mdns_renames_total",
            "times another responder held our instance or host name and we took the next one",
        )
        self.send_errors = metrics.counter(
            "imprint_mdns_send_errors_total", "mDNS datagrams the socket refused", ["reason"]
        )

    @property
    def responder(self) -> Responder:
        return self._responder

    @property
    def records(self) -> ServiceRecords:
        return self._responder.records

    def set_records(self, records: ServiceRecords) -> None:
        """Use new records (endpoint, host name or addresses changed) from the next packet on."""
        self._responder.set_records(records)

    def set_networks(self, networks: Iterable[Network]) -> None:
        """Use new on-link networks from the next packet on."""
        self._responder.set_networks(networks)

    def handle(
        self, data: bytes, source: Sequence[Any], now: float, frame_mac: str | None = None
    ) -> list[Send]:
        """Datagrams to send in answer to `data` from `source` (host, port, ...); never raises."""
        return self.respond(data, source, now, frame_mac)[1]

    def respond(
        self,
        data: bytes,
        source: Sequence[Any],
        now: float,
        frame_mac: str | None = None,
        jitter: float = 0.0,
    ) -> tuple[float, list[Send]]:
        """(delay in seconds, datagrams) in answer to `data`; never raises (see handle)."""
        self.received.inc()
        try:
            return self._handle(data, str(source[0]), int(source[1]), now, frame_mac, jitter)
        except Exception:
            self.dropped.inc(INTERNAL_ERROR)
            self._log.exception("mdns: internal error on a datagram from %r", source)
            return 0.0, []

    def _handle(
        self, data: bytes, ip: str, port: int, now: float, frame_mac: str | None, jitter: float
    ) -> tuple[float, list[Send]]:
        if not self._datagrams.allow(ip.split("%", 1)[0], now):
            self.dropped.inc(SOURCE_FLOOD)
            return 0.0, []
        try:
            query = self._decoder.decode(data)
        except DecodeError as e:
            self.dropped.inc(e.reason.value)
            self._log.debug("mdns: drop from %s:%d: %s", ip, port, e)
            if e.reason is DecodeReason.NOT_QUERY and self.on_response is not None:
                self.on_response(data, ip)  # a peer's response: a name of ours in use? (§9)
            return 0.0, []
        pending = self._responder.screen(query, ip, port, now)
        if isinstance(pending, Ignore):
            self.dropped.inc(pending.reason)
            return 0.0, []
        mac, how = self._neighbours.resolve(ip, now, frame_mac)
        if mac is None:
            decision = Decision(answer=False, reason=Reason.MAC_UNKNOWN)
        else:
            decision = decide(self._index, mac)
        verdict = "answer" if decision.answer else "ignore"
        if decision.answer and mac is not None and self._sightings is not None:
            self._sightings.heard(mac, ip, self._wall_clock(), interface=self.link, mac_from=how)
        self.decisions.inc(verdict, decision.reason.value)
        self.mac_sources.inc(how, verdict)
        key = (verdict, decision.reason.value)
        self._tally[key] = self._tally.get(key, 0) + 1
        # DEBUG for everyone, INFO for a traced MAC; nothing is built for a line not emitted.
        if mac is not None and mac in self.trace:
            level = logging.INFO
        elif self._log.isEnabledFor(logging.DEBUG):
            level = logging.DEBUG
        else:
            level = 0
        if level:
            self._log.log(
                level,
                "mdns query link=%s source=%s:%d mac=%s via=%s qname=%s decision=%s reason=%s",
                self.link or "-",
                ip,
                port,
                mac or "-",
                how,
                pending.qname,
                verdict,
                decision.reason.value,
            )
        result = self._responder.answer(pending, decision, jitter)
        if isinstance(result, Ignore):
            self.dropped.inc(result.reason)
            return 0.0, []
        self.answers.inc(result.kind.value)
        if result.kind is not ReplyKind.LEGACY:
            self._remember_peer(result.dest[0], now)
        return result.delay, [(result.payload, result.dest)]

    def set_trace(self, macs: frozenset[str]) -> None:
        """Log these MACs' queries at INFO from the next query on."""
        self.trace = macs

    def take_summary(self) -> dict[tuple[str, str], int]:
        """The decisions counted since the last call, by (decision, reason); starts afresh."""
        tally, self._tally = self._tally, {}
        return tally

    def log_summary(self, interval: float) -> None:
        """One INFO line with the decisions of the last `interval` seconds; none when there
        were none (an idle link logs nothing)."""
        tally = self.take_summary()
        if not tally or not self._log.isEnabledFor(logging.INFO):
            return
        line, counts = summary_line(tally)
        self._log.info(
            "mDNS%s last %g s: %s",
            f" on {self.link}" if self.link else "",
            interval,
            line.replace("datagrams", "queries", 1),
            extra={"link": self.link, "interval_s": interval, "decisions": counts},
        )

    def _remember_peer(self, ip: str, now: float) -> None:
        self._peers[ip] = now
        self._peers.move_to_end(ip)
        if len(self._peers) > self._max_peers:
            self._peers.popitem(last=False)

    def goodbyes(self, now: float) -> list[Send]:
        """Goodbye packets (TTL 0, RFC 6762 §10.1) for queriers that may still cache our records.

        Unicast to port 5353 of each querier answered (not legacy) within the longest TTL, never
        multicast: a multicast goodbye would tell every host on the link that the service
        existed. Legacy queriers are skipped: they hold our records for at most 10 s.
        """
        horizon = now - self.records.max_ttl
        peers = [ip for ip, when in self._peers.items() if when >= horizon]
        if not peers:
            return []
        packet = self._responder.goodbye()
        self._peers.clear()
        self.answers.inc("goodbye", amount=len(peers))
        return [(packet, (ip, MDNS_PORT)) for ip in peers]

    def count_send_error(self, exc: BaseException) -> None:
        """Count a datagram the transport could not send (OSError name as the reason)."""
        self.send_errors.inc(type(exc).__name__)
