"""DHCP glue without sockets: bytes in -> decode -> policy -> pool (full mode) -> respond -> bytes out.

Counts every packet in the metrics registry (no MAC labels). The `imprint.dhcp` log on a busy
network stays readable: one line per decision at DEBUG (with `extra=` fields), the same line at
INFO for the MACs being traced (`trace`, see server/dhcp/trace.py), the first sighting of an
unregistered MAC at INFO once, and a periodic INFO summary of the decisions by reason
(`log_summary`, called by the transport). Nothing is formatted for a line that is not emitted.
The registry `index` is read on every packet, so a device registered a moment ago is answered
on its next packet.

`handle_now` does all of a packet's work synchronously, so the transport can answer from its
receive callback with no queue or task hop. Only a reply whose lease changes must be stored first
(full mode: ACK, and the silent RELEASE/DECLINE) comes back as a `PendingReply`; its changes join
the group commit, which saves everything submitted during the previous save in one transaction.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from server.core.logs import RateLimitedLog, summary_line
from server.core.mac import mac_from_bytes
from server.core.metrics import Gauge, Registry
from server.core.policy import decide
from server.dhcp.codec import (
    BOOTREQUEST,
    OPT_VENDOR_CLASS,
    TYPE_NAMES,
    DecodeError,
    DhcpMessage,
    EncodeError,
    MessageType,
    decode,
    encode,
    ip_bytes,
    ip_text,
)
from server.dhcp.leasedb import SqliteLeaseWriter
from server.dhcp.pool import (
    Lease,
    LeasePool,
    LeaseState,
    LeaseStore,
    Subnet,
    check_server_address,
)
from server.dhcp.profiles import ProfileTable, VendorProfile
from server.dhcp.responder import (
    Ignore,
    IgnoreReason,
    Mode,
    Reply,
    ResponderContext,
    pool_step,
    respond,
)
from server.provisioning.sightings import Sightings
from server.registry.discovered import DiscoveredDevices, printable
from server.registry.model import DeviceView, ProvisioningEndpoint

_ZERO_MAC = bytes(6)


@dataclass(frozen=True, slots=True)
class DhcpConfig:
    """Everything the DHCP service needs from Settings (built by the composition root)."""

    mode: Mode
    server_ip: str  # our IPv4 address on the site VLAN: option 54 and full-mode subnet choice
    endpoint: ProvisioningEndpoint
    profiles: tuple[VendorProfile, ...] = ()  # site profiles, tried before the built-ins
    builtin_profiles: bool = True
    subnets: tuple[Subnet, ...] = ()  # full mode only
    client_port: int = 68  # lab knob: port of client-bound replies (68 on a real network)
    server_port: int = 67  # port of relay-bound replies
    max_size_cap: int = 1500  # largest reply even if option 57 allows more
    offer_hold: float = 60  # seconds an offered address stays reserved
    decline_quarantine: float = 86400  # seconds a declined address stays out of use


# Not frozen: one is built per reply, and a frozen dataclass's __init__ costs ~4x as much.
# Treat it as immutable all the same.
@dataclass(slots=True)
class Outgoing:
    """One datagram to send."""

    data: bytes
    dest: tuple[str, int]
    msg_type: int


# A lease batch waits at most this long for more changes before its transaction (so an ACK
# leaves at most this much later), unless it already holds COMMIT_BATCH_MAX.
COMMIT_DELAY_S = 0.002
COMMIT_BATCH_MAX = 128


class _GroupCommit:
    """Persist lease changes before their replies go out, many callers per transaction.

    Changes submitted during one burst of datagrams, or while a save is in flight, are saved
    together, so under load one SQLite transaction covers many ACKs. With an open `writer` the
    batch is saved inline, synchronously, by `flush()`: the transport calls it at the end of
    each burst it reads, so the ACKs leave in the same loop iteration, with no task and no extra
    wake-up (callers that wait outside a burst schedule one with `schedule_flush`). When the writer cannot take the
    write lock, or without one, the batch goes through the store's async `save_leases` in a task,
    and what is submitted meanwhile joins the next batch.
    """

    def __init__(
        self,
        store: LeaseStore,
        on_batch: Callable[[int, str], None],
        writer: SqliteLeaseWriter | None = None,
        log: logging.Logger | None = None,
    ) -> None:
        self._store = store
        self._on_batch = on_batch
        self._writer = writer
        self._log = log or logging.getLogger("imprint.dhcp")
        self._pending: list[Lease] = []
        self._callers = 0  # submissions in the batch being gathered
        self._batch: asyncio.Future[None] | None = None  # completes when that batch is stored
        self._task: asyncio.Task[None] | None = None
        self._checkpoint: asyncio.Task[None] | None = None
        self._flush_soon = False  # a call_soon(flush) is scheduled
        self._batch_started = 0.0  # loop time of the first change in the gathered batch
        self._timer: asyncio.TimerHandle | None = None  # flushes a young batch when it is due

    def submit(self, changes: Sequence[Lease]) -> asyncio.Future[None]:
        """A future that completes once `changes` are stored (or with what the store raised).

        Every submission of one batch gets the same future: one completion wakes them all.
        """
        self._pending.extend(changes)
        self._callers += 1
        fut = self._batch
        if fut is None:
            loop = asyncio.get_running_loop()
            fut = self._batch = loop.create_future()
            self._batch_started = loop.time()
        if self._task is not None and not self._task.done():
            return fut  # a save through the store is in flight: its loop takes this batch next
        writer = self._writer
        if writer is None or not writer.is_open:
            self._task = asyncio.create_task(self._run())
        # Else saved by the next flush(): the transport's at the end of this burst, or the one
        # the awaiting callers (commit, DhcpService.handle) schedule.
        return fut

    def schedule_flush(self) -> None:
        """Flush once the current callback returns (for callers that wait outside a burst)."""
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        if not self._flush_soon:
            self._flush_soon = True
            asyncio.get_running_loop().call_soon(self._flush_later)

    def flush(self, force: bool = False) -> None:
        """Save the batch gathered so far inline, unless a save through the store is in flight
        (that one takes it next). Completes the batch's future either way it ends.

        A batch younger than COMMIT_DELAY_S and smaller than COMMIT_BATCH_MAX waits (a timer)
        for more changes, unless `force`: at a few thousand exchanges per second one
        transaction then covers several ACKs instead of one each (measured at 3,000 DORA/s:
        one transaction per ACK was about a quarter of the server's CPU time)."""
        if self._batch is None or (self._task is not None and not self._task.done()):
            return
        loop = asyncio.get_running_loop()
        if not force and len(self._pending) < COMMIT_BATCH_MAX:
            due = self._batch_started + COMMIT_DELAY_S
            if loop.time() < due:
                if self._timer is None:
                    self._timer = loop.call_at(due, self._flush_due)
                return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        writer = self._writer
        if writer is None or not writer.is_open:
            self._task = asyncio.create_task(self._run())
            return
        leases = list({lease.ip: lease for lease in self._pending}.values())  # later ones win
        try:
            saved = writer.save_now(leases)
        except Exception as exc:  # the store's failure is every caller's failure
            batch, fut, callers = self._take()
            fut.set_exception(exc)
            self._on_batch(callers, "failed")
            return
        if not saved:  # another connection holds the write lock: wait for it in a task
            self._task = asyncio.create_task(self._run(once=True))
            return
        _, fut, callers = self._take()
        fut.set_result(None)
        self._on_batch(callers, "inline")
        if writer.checkpoint_due():
            self._checkpoint = asyncio.create_task(self._run_checkpoint(writer))

    def _flush_later(self) -> None:
        self._flush_soon = False
        self.flush()

    def _flush_due(self) -> None:
        self._timer = None
        self.flush(force=True)

    def _take(self) -> tuple[list[Lease], asyncio.Future[None], int]:
        batch, fut, callers = self._pending, self._batch, self._callers
        assert fut is not None
        self._pending, self._batch, self._callers = [], None, 0
        return batch, fut, callers

    async def commit(self, changes: Sequence[Lease]) -> None:
        """Return once `changes` are stored; raise what the store raised otherwise."""
        # Shielded: the future is the whole batch's, so cancelling this caller must not
        # cancel it for the others.
        fut = self.submit(changes)
        self._schedule_flush()
        await asyncio.shield(fut)

    async def drain(self) -> None:
        """Wait until every change submitted so far has been saved or has failed."""
        self.flush(force=True)
        while self._task is not None and not self._task.done():
            await asyncio.wait([self._task])
            self.flush(force=True)
        if self._checkpoint is not None and not self._checkpoint.done():
            await asyncio.wait([self._checkpoint])

    async def _run_checkpoint(self, writer: SqliteLeaseWriter) -> None:
        try:
            await writer.checkpoint()
        except Exception:
            # Not fatal: the WAL only grows until the next checkpoint succeeds.
            self._log.exception("lease database checkpoint failed")

    async def _run(self, once: bool = False) -> None:
        """Save batches through the store's async path until none is waiting; with `once`
        (the inline writer was refused the lock) just the one, then the next goes inline."""
        while self._batch is not None:
            batch, fut, callers = self._take()
            latest = {lease.ip: lease for lease in batch}  # later changes to one address win
            path = "failed"
            try:
                await self._store.save_leases(list(latest.values()))
                path = "store"
            except Exception as exc:  # the store's failure is every caller's failure
                if not fut.done():
                    fut.set_exception(exc)
            else:
                if not fut.done():
                    fut.set_result(None)
            self._on_batch(callers, path)
            if once:
                if self._batch is not None:
                    self._schedule_flush()  # runs once this task is done
                return


class PendingReply:
    """A reply that may leave only once its lease changes are stored (full mode).

    `stored` completes when the group commit has saved them (or failed); `finish()` then gives
    the datagrams to send: the reply, or none when the store failed (RFC 2131 §4.3.1: no ACK
    for an address we could not record).
    """

    __slots__ = ("stored", "_finish")

    def __init__(
        self, stored: asyncio.Future[None], finish: Callable[[BaseException | None], list[Outgoing]]
    ) -> None:
        self.stored = stored
        self._finish = finish

    def finish(self) -> list[Outgoing]:
        """The datagrams to send now that `stored` is done; call once, after it completes."""
        fut = self.stored
        return self._finish(asyncio.CancelledError() if fut.cancelled() else fut.exception())


def _client_address(reply: DhcpMessage, request: DhcpMessage, src: tuple[str, int]) -> str | None:
    """The address the device uses after this ACK: leased yiaddr, else its ciaddr, else source."""
    for raw in (reply.yiaddr, request.ciaddr):
        if raw != b"\0\0\0\0":
            return ip_text(raw)
    return None if src[0] in ("0.0.0.0", "") or request.giaddr != b"\0\0\0\0" else src[0]


class DhcpService:
    """Turns one received datagram into the datagrams to send back."""

    def __init__(
        self,
        config: DhcpConfig,
        index: Mapping[str, DeviceView],
        metrics: Registry,
        discovered: DiscoveredDevices | None = None,
        lease_store: LeaseStore | None = None,
        logger: logging.Logger | None = None,
        clock: Callable[[], float] = time.time,
        sightings: Sightings | None = None,
        lease_db: Path | None = None,
        profiles: ProfileTable | None = None,
        link: str = "",
        other_subnets: Sequence[Subnet] = (),
    ) -> None:
        """`lease_db`: the store's SQLite file; when given (full mode), lease batches are
        written inline on the loop (leasedb.py) and `lease_store` is the fallback.
        `profiles`: the table already rendered from `config` (the settings build it once);
        without it the service renders one. `link`: the interface this service answers on when
        there are several (named in its summary line); `other_subnets`: the subnets of the other
        links, whose stored leases are theirs, not strays of this one's."""
        try:
            server_id = ip_bytes(config.server_ip)
        except ValueError:
            raise ValueError(
                f"dhcp.server_ip: {config.server_ip!r} is not an IPv4 address; give this server's "
                "address on the site VLAN"
            ) from None
        self.config = config
        self.link = link
        self._other_subnets = tuple(other_subnets)
        self._index = index
        self._discovered = discovered
        self._sightings = sightings
        self._log = logger or logging.getLogger("imprint.dhcp")
        self._clock = clock
        # First sightings of unregistered MACs: a flood of spoofed MACs is a flood of "first"
        # sightings, so past a burst of 20 the log takes one every 3 s and counts the rest.
        self._sighting_log = RateLimitedLog(self._log, every=3.0, burst=20)
        # MACs whose decisions are logged at INFO with every detail (normalised, lower case).
        self.trace: frozenset[str] = frozenset()
        # Decisions since the last summary, by (decision, reason): the summary line's counts.
        self._tally: dict[tuple[str, str], int] = {}
        self.profiles = profiles or ProfileTable(
            config.profiles, config.endpoint, config.server_ip, builtins=config.builtin_profiles
        )
        for warning in self.profiles.warnings:
            self._log.warning("%s", warning)
        self.ctx = ResponderContext(
            mode=config.mode,
            server_id=server_id,
            profiles=self.profiles,
            client_port=config.client_port,
            server_port=config.server_port,
            max_size_cap=config.max_size_cap,
        )
        self.pool: LeasePool | None = None
        self._lease_store = lease_store
        self._commit: _GroupCommit | None = None
        self._writer: SqliteLeaseWriter | None = None
        if config.mode is Mode.FULL:
            if not config.subnets:
                raise ValueError("dhcp.subnets: mode 'full' needs at least one subnet with a pool")
            if lease_store is None:
                raise ValueError("dhcp: mode 'full' needs a lease store to persist leases")
            check_server_address(config.subnets, config.server_ip)
            self.pool = LeasePool(
                config.subnets,
                offer_hold=config.offer_hold,
                decline_quarantine=config.decline_quarantine,
            )
            if lease_db is not None:
                self._writer = SqliteLeaseWriter(lease_db)
            self._commit = _GroupCommit(lease_store, self._observe_batch, self._writer, self._log)
        self._received = metrics.counter(
            "imprint_dhcp_packets_received_total",
            "DHCP datagrams received, by message type",
            ["type"],
        )
        self._dropped = metrics.counter(
            "imprint_dhcp_packets_dropped_total",
            "DHCP datagrams not answered, by reason code",
            ["reason"],
        )
        self._decisions = metrics.counter(
            "imprint_dhcp_decisions_total",
            "DHCP decisions (reply, ignore, silent by protocol), by reason code",
            ["decision", "reason"],
        )
        self._shed = metrics.counter(
            "imprint_dhcp_packets_shed_total",
            "DHCP datagrams dropped undecoded because the receive queue was deep, by type",
            ["type"],
        )
        self._sent = metrics.counter(
            "imprint_dhcp_packets_sent_total", "DHCP replies sent, by message type", ["type"]
        )
        self.errors = metrics.counter(
            "imprint_dhcp_errors_total",
            "Unexpected exceptions caught per datagram, by stage",
            ["stage"],
        )
        self._batch = metrics.histogram(
            "imprint_dhcp_lease_commit_batch_size",
            "Replies waiting on one lease-store transaction",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128),
        )
        self._saves = metrics.counter(
            "imprint_dhcp_lease_saves_total",
            "Lease-store transactions, by path: inline on the event loop, through the store's "
            "connection (no inline writer, or its write lock was busy), or failed",
            ["path"],
        )
        self._lease_gauge: Gauge | None = None
        if self.pool is not None:
            self._lease_gauge = metrics.gauge(
                "imprint_dhcp_leases", "Full-mode leases known, by state", ["state"]
            )
            self._lease_gauge.add_function(self._lease_counts)

    # -- live changes (SIGHUP) --

    def set_profiles(self, table: ProfileTable) -> None:
        """Answer with `table` from the next datagram on (one assignment each, on the loop).

        The reply-options memo belongs to the table, so nothing the old profiles rendered
        survives the change."""
        self.config = replace(
            self.config, profiles=table.site_profiles, builtin_profiles=table.builtins
        )
        self.profiles = table
        self.ctx = replace(self.ctx, profiles=table)
        for warning in table.warnings:
            self._log.warning("%s", warning)

    def set_trace(self, macs: frozenset[str]) -> None:
        """Log these MACs' decisions at INFO with full detail from the next datagram on."""
        if macs == self.trace:
            return
        self.trace = macs
        self._log.info(
            "DHCP tracing %s",
            ", ".join(sorted(macs)) if macs else "no MACs",
            extra={"trace_macs": sorted(macs)},
        )

    # -- the periodic summary --

    def take_summary(self) -> dict[tuple[str, str], int]:
        """The decisions counted since the last call, by (decision, reason); starts afresh."""
        tally, self._tally = self._tally, {}
        return tally

    def log_summary(self, interval: float) -> None:
        """One INFO line with the decisions of the last `interval` seconds; none if there were
        none (an idle network logs nothing)."""
        tally = self.take_summary()
        if not tally or not self._log.isEnabledFor(logging.INFO):
            return
        line, counts = summary_line(tally)
        self._log.info(
            "DHCP%s last %g s: %s",
            f" on {self.link}" if self.link else "",
            interval,
            line,
            extra={
                "link": self.link,
                "interval_s": interval,
                "decisions": counts,
                "total": sum(tally.values()),
            },
        )

    # -- lifecycle --

    async def start(self) -> None:
        """Load persisted leases (full mode); call once before the first packet."""
        if self.pool is None or self._lease_store is None:
            return
        leases = await self._lease_store.load_leases()
        if self._other_subnets:  # one store for every link: leave the others' leases to them
            theirs = self._other_subnets
            leases = [
                lease
                for lease in leases
                if not any(ipaddress.IPv4Address(lease.ip) in sub.network for sub in theirs)
            ]
        skipped = self.pool.load(leases)
        if skipped:
            self._log.warning("ignored %d stored leases outside today's pools", skipped)
        if self._writer is not None and not self._writer.is_open:
            try:
                self._writer.open()
            except sqlite3.Error as e:
                # Still correct without it: every save goes through the store's async path.
                self._log.warning(
                    "lease database %s not opened for inline writes (%s); using the store",
                    self._writer.path,
                    e,
                )

    async def close(self) -> None:
        """Wait for submitted lease changes to be stored, then close the inline writer."""
        await self.drain()
        if self._lease_gauge is not None:
            self._lease_gauge.remove_function(self._lease_counts)
        if self._writer is not None:
            self._writer.close()

    async def expire_leases(self) -> int:
        """Persist leases that have lapsed by now; returns how many changed (full mode)."""
        if self.pool is None or self._commit is None:
            return 0
        changes = self.pool.expire(self._clock())
        if changes:
            await self._commit.commit(changes)
        return len(changes)

    def flush_commits(self) -> None:
        """Store the lease changes gathered so far now (the transport calls this at the end of
        each burst it reads), so their replies can leave in the same loop iteration."""
        if self._commit is not None:
            self._commit.flush()

    async def drain(self) -> None:
        """Wait for lease changes already submitted to be stored (call before closing the store)."""
        if self._commit is not None:
            await self._commit.drain()

    def count_drop(self, reason: str) -> None:
        """Count a datagram the transport dropped before handing it over (e.g. queue full)."""
        self._dropped.inc(reason)
        self._count("drop", reason)

    def count_shed(self, msg_type: int | None) -> None:
        """Count a datagram the transport shed undecoded (overload.py); `msg_type` as peeked."""
        tname = TYPE_NAMES.get(msg_type, "unknown") if msg_type is not None else "unknown"
        self._shed.inc(tname)
        self._dropped.inc(IgnoreReason.OVERLOAD)
        self._count("shed", tname)

    def _count(self, decision: str, reason: str) -> None:
        key = (decision, reason)
        tally = self._tally
        tally[key] = tally.get(key, 0) + 1

    # -- packet path --

    async def handle(self, data: bytes, src: tuple[str, int], iface: str) -> list[Outgoing]:
        """Datagrams to send in answer to `data`; never raises (errors are counted and logged)."""
        result = self.handle_now(data, src, iface)
        if isinstance(result, PendingReply):
            if self._commit is not None:
                self._commit.schedule_flush()  # after this callback: concurrent callers batch
            # finish() reads the outcome from the future: a store failure withholds the reply.
            await asyncio.wait([result.stored])
            return result.finish()
        return result

    def handle_now(
        self, data: bytes, src: tuple[str, int], iface: str
    ) -> list[Outgoing] | PendingReply:
        """Answer `data` without waiting: the datagrams to send now, or a PendingReply when
        lease changes must be stored first. Never raises (errors are counted and logged)."""
        try:
            return self._handle(data, src, iface)
        except Exception:
            self.errors.inc("handle")
            self._log.exception("DHCP packet from %s:%s could not be handled", src[0], src[1])
            return []

    def _handle(
        self, data: bytes, src: tuple[str, int], iface: str
    ) -> list[Outgoing] | PendingReply:
        try:
            request = decode(data)
        except DecodeError as e:
            self._received.inc("malformed")
            self._dropped.inc(e.reason)
            self._count("drop", e.reason)
            self._log.debug("DHCP datagram from %s:%s dropped: %s", src[0], src[1], e)
            return []
        mt = request.msg_type
        tname = TYPE_NAMES.get(mt, "unknown")
        self._received.inc(tname)
        if request.op != BOOTREQUEST:
            # Another server's reply: neither a decision about a device nor a sighting of one.
            self._dropped.inc(IgnoreReason.NOT_A_REQUEST)
            self._count("drop", IgnoreReason.NOT_A_REQUEST)
            return []
        chaddr = request.chaddr
        if chaddr[0] & 1 or chaddr == _ZERO_MAC:
            self._dropped.inc(IgnoreReason.BAD_CHADDR)
            self._count("drop", IgnoreReason.BAD_CHADDR)
            return []
        mac = mac_from_bytes(chaddr)
        decision = decide(self._index, mac)
        if not decision.answer:
            if self._discovered is not None:
                seen = self._discovered.record(
                    mac,
                    source="dhcp",
                    interface=iface,
                    now=self._clock(),
                    vendor_class=request.options.get(OPT_VENDOR_CLASS),
                )
                if seen.count == 1:  # first sighting (the list is bounded: [dhcp] discovered_max)
                    self._sighting_log.info(
                        "first-sighting",
                        "DHCP first sighting of unregistered %s on %s%s",
                        mac,
                        iface,
                        f" ({seen.vendor_class})" if seen.vendor_class else "",
                        extra={"mac": mac, "iface": iface, "vendor_class": seen.vendor_class},
                    )
            return self._ignored(request, tname, mac, iface, Ignore(decision.reason))
        pool_result = None
        if self.pool is not None:
            pool_result = pool_step(self.pool, request, self.ctx, self._clock())
        # The reply is built now (pure), but leaves only after its lease changes are stored.
        result = respond(request, decision, self.ctx, src=src, pool_result=pool_result)
        out: bytes | None = None
        if isinstance(result, Reply):
            try:
                out = encode(result.message, result.max_size)
            except EncodeError:
                # respond() fits the options to max_size, so this is our bug, not the peer's.
                self.errors.inc("encode")
                self._log.exception("DHCP reply could not be encoded", extra={"mac": mac})
        if pool_result is not None and pool_result.changes and self._commit is not None:
            stored = self._commit.submit(pool_result.changes)

            def finish(exc: BaseException | None) -> list[Outgoing]:
                if exc is not None:
                    # The pool keeps the binding in memory; the client's retry re-commits it.
                    self._log.error(
                        "lease store failed; reply withheld",
                        exc_info=exc,
                        extra={"mac": mac},
                    )
                    return self._ignored(
                        request, tname, mac, iface, Ignore(IgnoreReason.LEASE_STORE_FAILED)
                    )
                return self._reply(request, tname, mac, iface, src, result, out)

            return PendingReply(stored, finish)
        return self._reply(request, tname, mac, iface, src, result, out)

    def _reply(
        self,
        request: DhcpMessage,
        tname: str,
        mac: str,
        iface: str,
        src: tuple[str, int],
        result: Reply | Ignore,
        out: bytes | None,
    ) -> list[Outgoing]:
        if isinstance(result, Ignore):
            return self._ignored(request, tname, mac, iface, result)
        if out is None:  # counted and logged where encoding failed
            return []
        rtype = result.msg_type
        if self._sightings is not None and rtype == MessageType.ACK:
            # One per exchange, updated in place (sightings.py): when, where and what it was.
            self._sightings.saw(
                mac,
                _client_address(result.message, request, src),
                self._clock(),
                request.options.get(OPT_VENDOR_CLASS),
                iface,
            )
        self._sent.inc(TYPE_NAMES.get(rtype, "unknown"))
        self._decisions.inc("reply", result.reason)
        self._count("reply", result.reason)
        self._log_decision(request, tname, mac, iface, "reply", result.reason, result)
        return [Outgoing(out, result.dest, rtype)]

    def _ignored(
        self, request: DhcpMessage, tname: str, mac: str, iface: str, ignore: Ignore
    ) -> list[Outgoing]:
        decision = "silent" if ignore.handled else "ignore"
        self._decisions.inc(decision, ignore.reason)
        self._count(decision, ignore.reason)
        if not ignore.handled:
            self._dropped.inc(ignore.reason)
        self._log_decision(request, tname, mac, iface, decision, ignore.reason, None)
        return []

    def _log_decision(
        self,
        request: DhcpMessage,
        tname: str,
        mac: str,
        iface: str,
        decision: str,
        reason: str,
        reply: Reply | None,
    ) -> None:
        # DEBUG for everyone, INFO for a traced MAC; nothing is built for a line not emitted.
        if mac in self.trace:
            level = logging.INFO
        elif self._log.isEnabledFor(logging.DEBUG):
            level = logging.DEBUG
        else:
            return
        xid = request.xid
        codes = list(reply.option_codes) if reply is not None else []
        opts = request.options
        self._log.log(
            level,
            "DHCP %s xid=%08x mac=%s: %s %s options=%s",
            tname,
            xid,
            mac,
            decision,
            reason,
            codes,
            extra={
                "xid": f"{xid:08x}",
                "mac": mac,
                "msg_type": tname,
                "decision": decision,
                "reason": str(reason),
                "options_sent": codes,
                "iface": iface,
                "profile": reply.profile if reply is not None else "",
                "dest": f"{reply.dest[0]}:{reply.dest[1]}" if reply is not None else "",
                "dropped_options": list(reply.dropped_options) if reply is not None else [],
                "traced": level == logging.INFO,
                "ciaddr": ip_text(request.ciaddr),
                "giaddr": ip_text(request.giaddr),
                "yiaddr": ip_text(reply.message.yiaddr) if reply is not None else "",
                "options_received": sorted(opts),
                "vendor_class": printable(opts.get(OPT_VENDOR_CLASS) or b""),
            },
        )

    # -- metrics helpers --

    def _observe_batch(self, size: int, path: str) -> None:
        self._batch.observe(size)
        self._saves.inc(path)

    def _lease_counts(self) -> dict[tuple[str, ...], float]:
        counts: dict[tuple[str, ...], float] = {(s.value,): 0 for s in LeaseState}
        if self.pool is not None:
            for lease in self.pool.leases():
                counts[(lease.state.value,)] += 1
        return counts
