"""mDNS sockets only: a UDP socket that sends (and, without frame capture, receives), and an
optional AF_PACKET socket that receives whole frames so the querier's MAC is known.

Binds host:port (0.0.0.0:5353 in production, an ephemeral loopback port in the lab) for this
server alone (server/core/ports.py), or beside another responder on the host with `[mdns]
share_port` (Avahi), joins 224.0.0.251 on the given interface, and sends only unicast. Beside
another responder, multicast queries reach both sockets, but a unicast datagram to port 5353
reaches only one of them (Linux gives it to one bound socket): with frame capture every query is
read from its frame, so that costs nothing; without it, direct unicast queries may go unseen.

Frame capture (needs CAP_NET_RAW): an AF_PACKET socket bound to the interface, with the kernel
filter from server.mdns.frames attached before it is bound (so not one unfiltered frame is
queued), receives every query as an Ethernet frame. Queries are then answered from the frame
alone (MAC, addresses, ports and DNS payload all come from it) and the copies the UDP socket
also receives are read and dropped: nothing has to match a frame to a datagram, so there is no
race between the two sockets' queues. The UDP socket still sends every answer. Without the
capability, or with `capture=False`, the UDP socket receives as before and the MAC comes from the
neighbour table, the DHCP sightings or the static map.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import logging
import random
import socket
import struct
import time
from collections.abc import Callable
from typing import Any, cast

from server.core.ports import bind_exclusive
from server.mdns.codec import DecodeError, decode_records
from server.mdns.frames import (
    BPF_RET_K,
    SNAP_LEN,
    FrameError,
    mdns_filter,
    pack_filter,
    parse_frame,
)
from server.mdns.probe import ANNOUNCE_INTERVAL, ANNOUNCEMENTS, PROBE_INTERVAL, PROBES, Prober
from server.mdns.responder import MDNS_PORT, IgnoreReason
from server.mdns.service import MdnsService

MDNS_GROUP = "224.0.0.251"
MDNS_GROUP6 = "ff02::fb"
_IP_MULTICAST_ALL = getattr(socket, "IP_MULTICAST_ALL", 49)  # Linux; absent from Python < 3.13
TRANSPORT_ERROR = "MDNS_TRANSPORT_ERROR"
NOT_FOR_US = "MDNS_FRAME_NOT_FOR_US"  # multicast to 5353 but not the mDNS group

# linux/if_packet.h, asm-generic/socket.h, linux/if_ether.h
_SOL_PACKET = 263
_PACKET_IGNORE_OUTGOING = 23
_SO_ATTACH_FILTER = 26
_ETH_P_ALL = 0x0003
PACKET_HOST = 0
PACKET_OUTGOING = 4
_FRAMES_PER_WAKEUP = 64  # bound the work done per readiness callback, let other tasks run

log = logging.getLogger("imprint.mdns")


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, service: MdnsService, clock: Callable[[], float]) -> None:
        self.service = service
        self.clock = clock
        self.transport: asyncio.DatagramTransport | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # True while a FrameReader answers from frames: the UDP copies are then read and dropped.
        self.frames_answer = False
        self.scope_id = 0  # interface index for link-local IPv6 destinations

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # The selector loop's datagram transport does not subclass DatagramTransport.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        if self.frames_answer:
            return  # the frame of this datagram is (or was) answered by the FrameReader
        if self.scope_id and len(addr) >= 4 and addr[3] and addr[3] != self.scope_id:
            # IPv6 socket bound to [::]: fe80::/10 is on every link, so only the scope tells.
            self.service.received.inc()
            self.service.dropped.inc(IgnoreReason.OFF_LINK.value)
            return
        # A bad datagram must never stop the responder: count whatever escapes and carry on.
        try:
            self.send_later(*self.service.respond(data, addr, self.clock(), None, random.random()))
        except Exception:
            self.service.dropped.inc(TRANSPORT_ERROR)
            log.exception("mdns: transport error on a datagram from %r", addr)

    def send_later(self, delay: float, datagrams: list[tuple[bytes, tuple[str, int]]]) -> None:
        if not datagrams:
            return
        if delay > 0:
            asyncio.get_running_loop().call_later(delay, self.send, datagrams)
        else:
            self.send(datagrams)

    def multicast(self, payload: bytes) -> None:
        """Send `payload` to the mDNS group of this socket's family on its interface."""
        if self.transport is None or self.transport.is_closing():
            return
        dest: tuple[Any, ...] = (
            (MDNS_GROUP6, MDNS_PORT, 0, self.scope_id) if self.scope_id else (MDNS_GROUP, MDNS_PORT)
        )
        try:
            self.transport.sendto(payload, dest)
        except OSError as e:
            self.service.count_send_error(e)

    def send(self, datagrams: list[tuple[bytes, tuple[str, int]]]) -> None:
        for payload, dest in datagrams:
            if self.transport is None or self.transport.is_closing():
                return
            try:
                ip = dest[0]
                if self.scope_id and "%" not in ip and ip[:4].lower() == "fe80":
                    self.transport.sendto(payload, (dest[0], dest[1], 0, self.scope_id))
                else:
                    self.transport.sendto(payload, dest)
            except OSError as e:
                self.service.count_send_error(e)

    def error_received(self, exc: Exception) -> None:
        # ICMP errors for earlier sends (a querier that went away) land here.
        self.service.count_send_error(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


class FrameReader:
    """Reads filtered frames from an AF_PACKET socket and answers each through the UDP socket."""

    def __init__(
        self, sock: socket.socket, protocol: _Protocol, v6: _Protocol | None, interface: str
    ) -> None:
        self._sock = sock
        self._protocol = protocol
        self._v6 = v6
        self.interface = interface
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(sock.fileno(), self._readable)
        for p in (protocol, v6):
            if p is not None:
                p.frames_answer = True
                _udp_filter(p, True)

    def _readable(self) -> None:
        service = self._protocol.service
        for _ in range(_FRAMES_PER_WAKEUP):
            try:
                frame, addr = self._sock.recvfrom(SNAP_LEN)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                service.count_send_error(e)
                return
            try:
                self.frame_received(frame, int(addr[2]))
            except Exception:
                service.dropped.inc(TRANSPORT_ERROR)
                log.exception("mdns: transport error on a frame from %s", self.interface)

    def frame_received(self, frame: bytes, pkttype: int) -> None:
        """Answer one captured frame (our own outgoing frames are skipped)."""
        if pkttype == PACKET_OUTGOING:
            return
        service = self._protocol.service
        try:
            d = parse_frame(frame)
        except FrameError as e:
            service.received.inc()
            service.dropped.inc(e.reason.value)
            return
        sender = self._protocol if d.version == 4 else self._v6
        # What the kernel would hand our UDP socket: to the group we joined, or to this host
        # (a frame sent to our own MAC; unicast to another host's MAC never reaches us).
        group = MDNS_GROUP if d.version == 4 else MDNS_GROUP6
        if sender is None or (d.dst_ip != group and pkttype != PACKET_HOST):
            service.received.inc()
            service.dropped.inc(NOT_FOR_US)
            return
        sender.send_later(
            *service.respond(
                d.payload, (d.src_ip, d.src_port), sender.clock(), d.src_mac, random.random()
            )
        )

    def close(self) -> None:
        for p in (self._protocol, self._v6):
            if p is not None:
                p.frames_answer = False
                _udp_filter(p, False)
        with contextlib.suppress(Exception):
            self._loop.remove_reader(self._sock.fileno())
        self._sock.close()


_SO_DETACH_FILTER = 27
_DROP_ALL = pack_filter(((BPF_RET_K, 0, 0, 0),))


def _attach(sock: Any, program: bytes) -> None:
    buf = ctypes.create_string_buffer(program, len(program))
    fprog = struct.pack("HL", len(program) // 8, ctypes.addressof(buf))  # struct sock_fprog
    sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER, fprog)


def _udp_filter(protocol: _Protocol, drop: bool) -> None:
    """While frames are answered, the kernel drops the UDP socket's copy of every datagram
    (a socket filter returning 0), so none is queued, woken for, or read twice."""
    if protocol.transport is None:
        return
    sock = protocol.transport.get_extra_info("socket")
    try:
        if drop:
            _attach(sock, _DROP_ALL)
        else:
            sock.setsockopt(socket.SOL_SOCKET, _SO_DETACH_FILTER, 0)
    except OSError as e:  # the frames_answer flag still keeps the copies from being answered
        log.debug("mdns: UDP socket filter not %s: %s", "set" if drop else "removed", e)


def open_packet_socket(interface: str, port: int = 5353) -> socket.socket:
    """An AF_PACKET socket on `interface` passing only UDP to `port` (frames.mdns_filter).

    Raises PermissionError without CAP_NET_RAW, OSError if the interface does not exist.
    """
    # Protocol 0 receives nothing until bound: the filter is in place before the first frame.
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    try:
        _attach(sock, pack_filter(mdns_filter(port)))
        with contextlib.suppress(OSError):  # Linux >= 4.20; else skipped by pkttype
            sock.setsockopt(_SOL_PACKET, _PACKET_IGNORE_OUTGOING, 1)
        sock.bind((interface, _ETH_P_ALL))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class Claimer:
    """Probes for our names, renames on a conflict, announces (RFC 6762 §8, §9); see probe.py."""

    def __init__(
        self, prober: Prober, senders: list[_Protocol], announce: bool, interface: str
    ) -> None:
        self.prober = prober
        self._senders = senders
        self._service = senders[0].service
        self._announce = announce
        self.interface = interface
        self.announced = False
        self.claimed = asyncio.Event()
        self._conflict = asyncio.Event()
        self._clash = (False, False)
        self._service.on_response = self.response
        self.task = asyncio.get_running_loop().create_task(self._run(), name="mdns-claim")

    def response(self, data: bytes, ip: str) -> None:
        """A peer's response arrived: note a clash with a name of ours."""
        try:
            flags, records = decode_records(data)
        except DecodeError:
            return
        inst, host = self.prober.conflicts(flags, records)
        if inst or host:
            self._clash = (self._clash[0] or inst, self._clash[1] or host)
            log.warning(
                "mdns: %s answers for %s on %s: name conflict",
                ip,
                self.prober.records.instance if inst else self.prober.records.host,
                self.interface,
            )
            self._conflict.set()

    def _multicast(self, payload: bytes) -> None:
        for sender in self._senders:
            sender.multicast(payload)

    async def _wait_conflict(self, seconds: float) -> bool:
        try:
            await asyncio.wait_for(self._conflict.wait(), seconds)
        except TimeoutError:
            return False
        return True

    def _rename(self) -> bool:
        inst, host = self._clash
        self._clash = (False, False)
        self._conflict.clear()
        old = (self.prober.instance, self.prober.host)
        if not self.prober.rename(inst, host):
            log.error(
                "mdns: still conflicting after %d renames on %s: keeping %r",
                self.prober.renames,
                self.interface,
                self.prober.instance,
            )
            return False
        self._service.set_records(self.prober.records)
        self._service.renames.inc()
        log.warning(
            "mdns: renamed %r/%r to %r/%r on %s (RFC 6762 §9)",
            *old,
            self.prober.instance,
            self.prober.host,
            self.interface,
        )
        return True

    async def _run(self) -> None:
        while True:
            conflict = False
            for i in range(PROBES):
                self._multicast(self.prober.probe(first=i == 0))
                if await self._wait_conflict(PROBE_INTERVAL):
                    conflict = True
                    break
            if conflict and self._rename():
                continue
            self.claimed.set()
            log.info(
                "mdns: %s and %s are ours on %s",
                self.prober.records.instance,
                self.prober.records.host,
                self.interface,
            )
            if self._announce:
                for i in range(ANNOUNCEMENTS):
                    self._multicast(self.prober.announcement())
                    self.announced = True
                    if i + 1 < ANNOUNCEMENTS and await self._wait_conflict(ANNOUNCE_INTERVAL):
                        break
            await self._conflict.wait()  # a conflict after start-up (§9): rename, probe again
            if not self._rename():
                return
            self.claimed.clear()

    def goodbye(self) -> bool:
        """Multicast TTL 0 for everything announced; False if nothing was announced."""
        if not self.announced:
            return False
        self._multicast(self.prober.goodbye())
        return True

    def close(self) -> None:
        self.task.cancel()
        self._service.on_response = None


NO_CAPTURE_MESSAGE = (
    "mdns: frame capture off on %s: %s (the AF_PACKET socket needs CAP_NET_RAW). The querier's "
    "MAC now comes only from the kernel neighbour table and DHCP sightings, so a registered "
    "device that has not yet exchanged a packet with this host is ignored (IMP_MAC_UNKNOWN) on "
    "its first query. Grant CAP_NET_RAW (configs/imprint.service, Dockerfile) to fix it."
)


class MdnsServer:
    """A running mDNS transport; `close()` stops it (after unicast goodbyes by default)."""

    def __init__(
        self,
        protocol: _Protocol,
        sock_name: tuple[str, int],
        frames: FrameReader | None = None,
        v6: _Protocol | None = None,
    ) -> None:
        self._protocol = protocol
        self._v6 = v6
        self.address = sock_name
        self.frames = frames
        self.claimer: Claimer | None = None

    def claim(self, prober: Prober, *, announce: bool, interface: str) -> Claimer:
        """Start probing for our names in the background (RFC 6762 §8), then announce."""
        senders = [self._protocol] + ([self._v6] if self._v6 is not None else [])
        self.claimer = Claimer(prober, senders, announce, interface)
        return self.claimer

    @property
    def ipv6(self) -> bool:
        """True if an IPv6 socket joined ff02::fb on the interface."""
        return self._v6 is not None

    @property
    def capturing(self) -> bool:
        """True if queries are answered from captured frames (the MAC source is `frame`)."""
        return self.frames is not None

    @property
    def service(self) -> MdnsService:
        return self._protocol.service

    def send_goodbyes(self) -> int:
        """Unicast TTL-0 service records to recent queriers (see MdnsService.goodbyes)."""
        datagrams = self._protocol.service.goodbyes(self._protocol.clock())
        v4 = [d for d in datagrams if ":" not in d[1][0]]
        self._protocol.send(v4)
        if self._v6 is not None:
            self._v6.send([d for d in datagrams if ":" in d[1][0]])
        return len(datagrams)

    def close(self, goodbye: bool = True) -> None:
        """Stop answering; with `goodbye`, first withdraw our records from recent queriers."""
        transport = self._protocol.transport
        if transport is None or transport.is_closing():
            return
        if self.frames is not None:
            self.frames.close()
            self.frames = None
        claimer, self.claimer = self.claimer, None
        if claimer is not None:
            claimer.close()
        # After a multicast announcement every host may hold our records: withdraw them from
        # the group (§10.1). Otherwise only the queriers we answered can, so tell just them.
        if goodbye and not (claimer is not None and claimer.goodbye()):
            self.send_goodbyes()
        transport.close()  # asyncio flushes queued datagrams before the socket closes
        if self._v6 is not None and self._v6.transport is not None:
            self._v6.transport.close()

    async def wait_closed(self) -> None:
        await self._protocol.closed
        if self._v6 is not None:
            await self._v6.closed


def _bind_device(sock: socket.socket, interface: str) -> None:
    """Receive and send only on `interface`: with one socket per link on the same port, a
    unicast query reaches the socket of the link it came in on (SO_BINDTODEVICE)."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, interface.encode())
    except PermissionError:
        # Kernels before 5.7 want CAP_NET_RAW for this; the on-link check still applies.
        log.warning("mdns: cannot bind the UDP socket to %s (needs CAP_NET_RAW)", interface)


def _share(sock: socket.socket, share_port: bool) -> None:
    """Exclusive by default (server/core/ports.py). `[mdns] share_port` binds beside another
    responder that allows it (Avahi sets SO_REUSEADDR): SO_REUSEADDR only, never SO_REUSEPORT,
    which would let the kernel hand some of our unicast queries to the other process."""
    if share_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)


def _open_socket(
    host: str, port: int, interface: str | None, join_group: bool, share_port: bool = False
) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
    try:
        _share(sock, share_port)
        # RFC 6762 §11: send with IP TTL 255 so receivers can tell the packet is link-local.
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 255)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 255)
        # We never send multicast, so our own sends need not loop back.
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
        # Only groups this socket joined: not 224.0.0.251 joined by avahi on other links.
        with contextlib.suppress(OSError):  # not Linux
            sock.setsockopt(socket.IPPROTO_IP, _IP_MULTICAST_ALL, 0)
        if interface and interface != "lo":
            _bind_device(sock, interface)
        bind_exclusive(sock, (host, port), "mDNS", "[mdns] port, or share_port = true")
        if join_group:
            ifindex = socket.if_nametoindex(interface) if interface else 0
            mreqn = struct.pack(
                "=4s4si", socket.inet_aton(MDNS_GROUP), socket.inet_aton("0.0.0.0"), ifindex
            )
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreqn)
            if ifindex:  # probes and announcements leave on this link, not the default route's
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, mreqn)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _open_socket6(port: int, interface: str, share_port: bool = False) -> socket.socket:
    """[::]:port, IPv6 only, member of ff02::fb on `interface`."""
    ifindex = socket.if_nametoindex(interface)
    sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
    try:
        _share(sock, share_port)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        # RFC 6762 §11: hop limit 255 on everything we send.
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, 255)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 0)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, ifindex)
        _bind_device(sock, interface)
        bind_exclusive(sock, ("::", port), "mDNS (IPv6)", "[mdns] port, or share_port = true")
        mreq = socket.inet_pton(socket.AF_INET6, MDNS_GROUP6) + struct.pack("=I", ifindex)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, mreq)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


async def start_mdns(
    service: MdnsService,
    host: str = "0.0.0.0",
    port: int = 5353,
    interface: str | None = None,
    *,
    join_group: bool = True,
    capture: bool = False,
    ipv6: bool = False,
    share_port: bool = False,
    clock: Callable[[], float] = time.monotonic,
) -> MdnsServer:
    """Bind, join 224.0.0.251 on `interface` (default route's if None) and start answering.

    With `capture` (needs `interface`), queries are read as frames from a packet socket; if
    that is not permitted, the reason is logged once and the UDP socket receives instead.
    Raises OSError if the port cannot be bound (another process holds it and `share_port` is
    off) or the interface does not exist (our config).
    """
    sock = _open_socket(host, port, interface, join_group, share_port)
    loop = asyncio.get_running_loop()
    try:
        _transport, protocol = await loop.create_datagram_endpoint(
            lambda: _Protocol(service, clock), sock=sock
        )
    except BaseException:
        sock.close()
        raise
    name = sock.getsockname()
    v6: _Protocol | None = None
    if ipv6 and interface:
        try:
            sock6 = _open_socket6(int(name[1]), interface, share_port)
            _t6, v6 = await loop.create_datagram_endpoint(
                lambda: _Protocol(service, clock), sock=sock6
            )
            v6.scope_id = socket.if_nametoindex(interface)
        except OSError as e:
            if e.errno == errno.EADDRINUSE:  # taken, not missing: not a reason to go on quietly
                if protocol.transport is not None:
                    protocol.transport.close()
                raise
            # No IPv6 on this host or link: IPv4 still works, say so once.
            log.warning("mdns: no IPv6 on %s (%s): answering over IPv4 only", interface, e)
            v6 = None
    frames: FrameReader | None = None
    if capture and interface:
        try:
            packet = open_packet_socket(interface, int(name[1]))
        except PermissionError as e:
            log.warning(NO_CAPTURE_MESSAGE, interface, e.strerror or e)
        except OSError as e:
            if e.errno not in (errno.EPERM, errno.EACCES):
                for p in (protocol, v6):
                    if p is not None and p.transport is not None:
                        p.transport.close()
                raise
            log.warning(NO_CAPTURE_MESSAGE, interface, e.strerror or e)
        else:
            frames = FrameReader(packet, protocol, v6, interface)
    service.capture.set(1 if frames else 0, interface or "any")
    log.info(
        "mdns: listening on %s:%d%s (interface %s, MAC from %s)",
        name[0],
        name[1],
        " and [::]" if v6 else "",
        interface or "any",
        "frames" if frames else "neighbour table and DHCP sightings",
    )
    return MdnsServer(protocol, (str(name[0]), int(name[1])), frames, v6)
