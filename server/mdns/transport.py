"""mDNS sockets only: a thin asyncio DatagramProtocol around MdnsService (IPv4).

Binds host:port (0.0.0.0:5353 in production, an ephemeral loopback port in the lab) with
SO_REUSEADDR/SO_REUSEPORT so it can share 5353 with avahi, joins 224.0.0.251 on the given
interface, and sends only unicast. With another responder on the same host, multicast queries
reach both sockets, but a unicast datagram to port 5353 reaches only one of them (Linux gives
it to one bound socket): QU queries are multicast, so that costs us only direct unicast queries.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
import time
from collections.abc import Callable
from typing import Any, cast

from server.mdns.service import MdnsService

MDNS_GROUP = "224.0.0.251"
_IP_MULTICAST_ALL = getattr(socket, "IP_MULTICAST_ALL", 49)  # Linux; absent from Python < 3.13
TRANSPORT_ERROR = "MDNS_TRANSPORT_ERROR"

log = logging.getLogger("imprint.mdns")


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, service: MdnsService, clock: Callable[[], float]) -> None:
        self.service = service
        self.clock = clock
        self.transport: asyncio.DatagramTransport | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # The selector loop's datagram transport does not subclass DatagramTransport.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        # A bad datagram must never stop the responder: count whatever escapes and carry on.
        try:
            self.send(self.service.handle(data, addr, self.clock()))
        except Exception:
            self.service.dropped.inc(TRANSPORT_ERROR)
            log.exception("mdns: transport error on a datagram from %r", addr)

    def send(self, datagrams: list[tuple[bytes, tuple[str, int]]]) -> None:
        for payload, dest in datagrams:
            if self.transport is None or self.transport.is_closing():
                return
            try:
                self.transport.sendto(payload, dest)
            except OSError as e:
                self.service.count_send_error(e)

    def error_received(self, exc: Exception) -> None:
        # ICMP errors for earlier sends (a querier that went away) land here.
        self.service.count_send_error(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


class MdnsServer:
    """A running mDNS transport; `close()` stops it (after unicast goodbyes by default)."""

    def __init__(self, protocol: _Protocol, sock_name: tuple[str, int]) -> None:
        self._protocol = protocol
        self.address = sock_name

    @property
    def service(self) -> MdnsService:
        return self._protocol.service

    def send_goodbyes(self) -> int:
        """Unicast TTL-0 service records to recent queriers (see MdnsService.goodbyes)."""
        datagrams = self._protocol.service.goodbyes(self._protocol.clock())
        self._protocol.send(datagrams)
        return len(datagrams)

    def close(self, goodbye: bool = True) -> None:
        """Stop answering; with `goodbye`, first withdraw our records from recent queriers."""
        transport = self._protocol.transport
        if transport is None or transport.is_closing():
            return
        if goodbye:
            self.send_goodbyes()
        transport.close()  # asyncio flushes queued datagrams before the socket closes

    async def wait_closed(self) -> None:
        await self._protocol.closed


def _open_socket(host: str, port: int, interface: str | None, join_group: bool) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if hasattr(socket, "SO_REUSEPORT"):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        # RFC 6762 §11: send with IP TTL 255 so receivers can tell the packet is link-local.
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 255)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 255)
        # We never send multicast, so our own sends need not loop back.
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
        # Only groups this socket joined: not 224.0.0.251 joined by avahi on other links.
        with contextlib.suppress(OSError):  # not Linux
            sock.setsockopt(socket.IPPROTO_IP, _IP_MULTICAST_ALL, 0)
        sock.bind((host, port))
        if join_group:
            ifindex = socket.if_nametoindex(interface) if interface else 0
            mreqn = struct.pack(
                "=4s4si", socket.inet_aton(MDNS_GROUP), socket.inet_aton("0.0.0.0"), ifindex
            )
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreqn)
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
    clock: Callable[[], float] = time.monotonic,
) -> MdnsServer:
    """Bind, join 224.0.0.251 on `interface` (default route's if None) and start answering.

    Raises OSError if the port cannot be bound or the interface does not exist (our config).
    """
    sock = _open_socket(host, port, interface, join_group)
    loop = asyncio.get_running_loop()
    try:
        _transport, protocol = await loop.create_datagram_endpoint(
            lambda: _Protocol(service, clock), sock=sock
        )
    except BaseException:
        sock.close()
        raise
    name = sock.getsockname()
    log.info("mdns: listening on %s:%d (interface %s)", name[0], name[1], interface or "any")
    return MdnsServer(protocol, (str(name[0]), int(name[1])))
