"""UDP socket for the DHCP service: receive, queue, hand to the service, send what comes back.

Thin on purpose: every protocol rule lives in the service and the pure cores. The queue is
bounded so a flood sheds load (dropped and counted) instead of growing memory, and every
exception from one datagram is caught and counted so the next one is still served.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import socket
import struct

from server.dhcp.responder import IgnoreReason
from server.dhcp.service import DhcpService

_log = logging.getLogger("imprint.dhcp")


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, server: DhcpServer) -> None:
        self._server = server

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self._server._enqueue(data, (str(addr[0]), int(addr[1])))

    def error_received(self, exc: Exception) -> None:
        # ICMP errors for earlier sends (e.g. port unreachable) land here; they are not fatal.
        self._server.service.errors.inc("socket")
        _log.debug("DHCP socket error: %s", exc)


class DhcpServer:
    """A bound DHCP socket with its worker tasks; `close()` stops both."""

    def __init__(
        self,
        service: DhcpService,
        interface: str,
        queue_size: int,
        workers: int,
        expire_interval: float,
    ) -> None:
        self.service = service
        self.interface = interface
        self._queue: asyncio.Queue[tuple[bytes, tuple[str, int]]] = asyncio.Queue(queue_size)
        self._workers_n = workers
        self._expire_interval = expire_interval
        self._transport: asyncio.DatagramTransport | None = None
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def sockname(self) -> tuple[str, int]:
        """The bound (host, port); useful when port 0 asked for an ephemeral port."""
        assert self._transport is not None
        name = self._transport.get_extra_info("sockname")
        return (str(name[0]), int(name[1]))

    def _enqueue(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            self._queue.put_nowait((data, addr))
        except asyncio.QueueFull:
            self.service.count_drop(IgnoreReason.QUEUE_FULL)

    async def _start(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: _Protocol(self), sock=sock)
        self._transport = transport
        await self.service.start()
        for _ in range(self._workers_n):
            self._tasks.append(asyncio.create_task(self._work()))
        if self.service.pool is not None:
            self._tasks.append(asyncio.create_task(self._expire_loop()))

    async def _work(self) -> None:
        service = self.service
        iface = self.interface
        while True:
            data, addr = await self._queue.get()
            try:
                for out in await service.handle(data, addr, iface):
                    transport = self._transport
                    if transport is None:  # closed while this datagram was being handled
                        return
                    try:
                        transport.sendto(out.data, out.dest)
                    except OSError as e:
                        service.errors.inc("send")
                        _log.warning("DHCP reply to %s:%s not sent: %s", *out.dest, e)
            except Exception:
                service.errors.inc("worker")
                _log.exception("DHCP worker error")

    async def _expire_loop(self) -> None:
        while True:
            await asyncio.sleep(self._expire_interval)
            try:
                await self.service.expire_leases()
            except Exception:
                self.service.errors.inc("expire")
                _log.exception("DHCP lease expiry failed")

    async def close(self) -> None:
        """Stop the workers and close the socket; queued datagrams are dropped."""
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._tasks.clear()
        if self._transport is not None:
            self._transport.close()
            self._transport = None


def interface_address(interface: str) -> str:
    """The IPv4 address of a network interface (Linux SIOCGIFADDR); OSError if it has none.

    For `dhcp.server_ip` left unset: the server identifier defaults to the bound interface's address.
    """
    siocgifaddr = 0x8915
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifreq = struct.pack("256s", interface.encode()[:15])
        res = fcntl.ioctl(s.fileno(), siocgifaddr, ifreq)
    return socket.inet_ntoa(res[20:24])


def _socket(host: str, port: int, interface: str | None) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Replies to clients without an address go to 255.255.255.255 (RFC 2131 §4.1).
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        if interface:
            # Without this a 0.0.0.0-bound socket would hear (and broadcast on) every
            # interface; with it, broadcasts leave through the site VLAN only. Needs root or
            # CAP_NET_RAW.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, interface.encode() + b"\0")
        sock.bind((host, port))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


async def start_dhcp(
    service: DhcpService,
    host: str = "0.0.0.0",
    port: int = 67,
    interface: str | None = None,
    *,
    queue_size: int = 4096,
    workers: int = 8,
    expire_interval: float = 60.0,
) -> DhcpServer:
    """Bind the DHCP socket, load leases, start `workers` tasks; raises OSError if bind fails."""
    if queue_size < 1 or workers < 1:
        raise ValueError("dhcp: queue_size and workers must be at least 1")
    sock = _socket(host, port, interface)
    server = DhcpServer(service, interface or host, queue_size, workers, expire_interval)
    try:
        await server._start(sock)
    except BaseException:
        await server.close()
        sock.close()
        raise
    return server
