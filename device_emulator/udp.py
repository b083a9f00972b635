"""The emulated device's datagram endpoints: bound sockets, and `recv(wait)` over them.

Every transport of the device and the fleet (DHCP over UDP or raw Ethernet, the mDNS browser,
the fleet's shared sockets and each device's view of them) answers `recv(wait)` the same way:
the next thing received, or None once `wait` seconds have passed. `Receiver` is that once; a
subclass says only where things come from: a socket (`SocketReceiver`, whose subclass reads and
filters datagrams in `_receive`) or a queue that callbacks fill (`QueueReceiver`).
Imports nothing from server/.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["QueueReceiver", "Receiver", "SocketReceiver", "bound_udp_socket"]

T = TypeVar("T")


def bound_udp_socket(
    address: tuple[str, int],
    *,
    reuse_address: bool = True,
    configure: Callable[[socket.socket], None] | None = None,
) -> socket.socket:
    """A non-blocking IPv4 UDP socket bound to `address` (SO_REUSEADDR unless told not to),
    `configure`d before binding; closed again when any step fails."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        if reuse_address:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if configure is not None:
            configure(sock)
        sock.bind(address)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class Receiver(Generic[T]):
    """`recv(wait)`: what is already there, else the next arrival within `wait` seconds."""

    async def recv(self, wait: float) -> T | None:
        """The next item received, or None after `wait` seconds (at once when `wait` <= 0)."""
        ready = self._ready()
        if ready is not None:
            return ready
        if wait <= 0:
            return None
        try:
            return await asyncio.wait_for(self._receive(), wait)
        except TimeoutError:
            return None

    def _ready(self) -> T | None:
        """An item that arrived before `recv` was called, if the source keeps one."""
        return None

    async def _receive(self) -> T:
        """Wait for the next item (cancelled when `recv`'s time is up)."""
        raise NotImplementedError


class QueueReceiver(Receiver[T]):
    """Items put on `_queue` by someone else (a protocol callback, a demultiplexer)."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[T] = asyncio.Queue()

    def _ready(self) -> T | None:
        return None if self._queue.empty() else self._queue.get_nowait()

    async def _receive(self) -> T:
        return await self._queue.get()


class SocketReceiver(Receiver[T]):
    """Items read from a non-blocking socket of the subclass's own making."""

    def __init__(self, sock: socket.socket, *, size: int = 65535) -> None:
        self._sock = sock
        self._size = size

    async def _datagram(self) -> tuple[bytes, tuple[str, int]]:
        """The next datagram on an IPv4 socket and its source address."""
        data, source = await asyncio.get_running_loop().sock_recvfrom(self._sock, self._size)
        return data, (str(source[0]), int(source[1]))

    def close(self) -> None:
        """Close the socket."""
        self._sock.close()
