"""UDP socket for the DHCP service: receive, hand to the service, send what comes back.

Thin on purpose: every protocol rule lives in the service and the pure cores. Each readable
event drains a bounded burst of datagrams and answers each one inline (`handle_now`: decode,
decide, respond, encode, sendto) with no queue or task hop. Only replies that wait for a lease
commit (full mode) are held; replies to one client leave in the order its datagrams came, and a
later datagram from that client is held behind them. At most `queue_size + workers` datagrams
are held at once; past that, datagrams are shed before decoding (counted as DHCP_QUEUE_FULL),
so a stalled store costs bounded memory. Every exception from one datagram is caught and
counted so the next one is still served.

Under a flood the receive queue itself is the signal: once per 16 datagrams the transport reads
how full the socket's receive buffer is (SO_MEMINFO, one getsockopt) and, past the thresholds
of overload.py, drops datagrams by their peeked message type before decoding them: new
DISCOVERs and INFORMs first, REQUESTs only when the kernel is about to drop anyway.

Two background tasks serve the log: the periodic decision summary (`summary_interval`) and
the trace list (`trace_file`, re-read when it changes; see trace.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import platform
import socket
import struct
import sys
from collections import deque
from pathlib import Path

from server.core.ports import bind_exclusive
from server.dhcp.overload import SHED_NEW_AT, peek_type, should_shed
from server.dhcp.responder import IgnoreReason
from server.dhcp.service import DhcpService, Outgoing, PendingReply
from server.dhcp.trace import TraceWatcher

_log = logging.getLogger("imprint.dhcp")

# Datagrams read per readable event before yielding to the loop (HTTP, mDNS, commits).
_BURST = 64
# chaddr's first 6 octets (RFC 2131 §2: chaddr starts at octet 28): the client key for ordering.
_CHADDR = slice(28, 34)
_MAX_DATAGRAM = 65535
# A burst that arrives while the loop is busy (a commit finishing, a GC pause, the HTTP side)
# waits in the socket buffer; the kernel default (~208 KiB, a few hundred datagrams) overflows
# silently, only /proc/net/snmp RcvbufErrors shows it.
DEFAULT_RECV_BUFFER = 4 << 20
# Python does not export SO_RCVBUFFORCE; 33 is its value in Linux's asm-generic/socket.h, which
# these architectures use (alpha, mips, parisc and sparc number it differently).
_SO_RCVBUFFORCE: int | None = getattr(socket, "SO_RCVBUFFORCE", None)
if (
    _SO_RCVBUFFORCE is None
    and sys.platform == "linux"
    and platform.machine() in ("x86_64", "aarch64", "i686", "armv7l", "riscv64")
):
    _SO_RCVBUFFORCE = 33
# SO_MEMINFO (Linux 3.17+, 55 in asm-generic): u32 counters, [0] receive memory in use, [1] the
# receive buffer size the kernel drops at.
_SO_MEMINFO = 55 if sys.platform == "linux" else None
_MEMINFO = struct.Struct("=II")
# Datagrams between two looks at the receive queue's depth.
_FILL_EVERY = 16
# Seconds between two looks at the trace file.
TRACE_POLL_S = 1.0


class _Held:
    """Datagrams for one client that wait for that client's lease commit, in arrival order."""

    __slots__ = ("pending", "out")

    def __init__(self, pending: PendingReply | None, out: list[Outgoing]) -> None:
        self.pending = pending
        self.out = out

    def ready(self) -> bool:
        return self.pending is None or self.pending.stored.done()

    def outgoing(self) -> list[Outgoing]:
        return self.out if self.pending is None else self.pending.finish()


class DhcpServer:
    """A bound DHCP socket answered from the event loop's reader callback; `close()` stops it."""

    def __init__(
        self,
        service: DhcpService,
        interface: str,
        queue_size: int,
        workers: int,
        expire_interval: float,
        summary_interval: float = 0,
        trace_file: Path | None = None,
    ) -> None:
        self.service = service
        self.interface = interface
        # The old budget of workers + queued datagrams, now held replies + datagrams behind them.
        self._max_held = queue_size + workers
        self._held = 0
        self._by_client: dict[bytes, deque[_Held]] = {}
        self._by_batch: dict[asyncio.Future[None], list[bytes]] = {}
        self._watched: set[asyncio.Future[None]] = set()  # batches with a done callback
        self._unsent: deque[Outgoing] = deque()
        self._expire_interval = expire_interval
        self._summary_interval = summary_interval
        self._trace = TraceWatcher(trace_file) if trace_file is not None else None
        self._meminfo = _SO_MEMINFO
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._writing = False
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def sockname(self) -> tuple[str, int]:
        """The bound (host, port); useful when port 0 asked for an ephemeral port."""
        assert self._sock is not None
        name = self._sock.getsockname()
        return (str(name[0]), int(name[1]))

    @property
    def recv_buffer(self) -> int:
        """The receive buffer the kernel granted (Linux reports twice what was asked for)."""
        assert self._sock is not None
        return int(self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))

    @property
    def held(self) -> int:
        """Datagrams held now: waiting for a lease commit, or behind one of the same client."""
        return self._held

    async def _start(self, sock: socket.socket) -> None:
        await self.service.start()
        self._loop = asyncio.get_running_loop()
        self._sock = sock
        self._loop.add_reader(sock.fileno(), self._readable)
        if self.service.pool is not None:
            self._tasks.append(asyncio.create_task(self._expire_loop()))
        if self._summary_interval > 0:
            self._tasks.append(asyncio.create_task(self._summary_loop()))
        if self._trace is not None:
            self._check_trace()  # traced from the first datagram on
            self._tasks.append(asyncio.create_task(self._trace_loop()))

    def queue_fill(self) -> float:
        """Share of the receive buffer in use now (0.0 .. 1.0); 0.0 where it cannot be read."""
        sock, opt = self._sock, self._meminfo
        if sock is None or opt is None:
            return 0.0
        try:
            used, size = _MEMINFO.unpack(sock.getsockopt(socket.SOL_SOCKET, opt, _MEMINFO.size))
        except (OSError, struct.error):
            self._meminfo = None  # not this kernel: never shed by depth
            return 0.0
        return used / size if size else 0.0

    # -- receive --

    def _readable(self) -> None:
        sock = self._sock
        if sock is None:
            return
        try:
            self._read_burst(sock)
        finally:
            # The burst's lease changes in one inline transaction, then its replies, all in
            # this callback: no task and no extra loop iteration per commit.
            self.service.flush_commits()
            self._settle()

    def _read_burst(self, sock: socket.socket) -> None:
        fill = self.queue_fill()
        for n in range(_BURST):
            if n and not n % _FILL_EVERY:
                fill = self.queue_fill()
            try:
                data, addr = sock.recvfrom(_MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                # ICMP errors for earlier sends (e.g. port unreachable) surface here; not fatal.
                self.service.errors.inc("socket")
                _log.debug("DHCP socket error: %s", e)
                continue
            if fill >= SHED_NEW_AT:
                mt = peek_type(data)
                if should_shed(mt, fill):
                    self.service.count_shed(mt)
                    continue
            try:
                self._datagram(data, addr)  # AF_INET: already a (host, port) tuple
            except Exception:
                self.service.errors.inc("worker")
                _log.exception("DHCP transport error")

    def _datagram(self, data: bytes, addr: tuple[str, int]) -> None:
        if self._held >= self._max_held:
            self.service.count_drop(IgnoreReason.QUEUE_FULL)
            return
        result = self.service.handle_now(data, addr, self.interface)
        by_client = self._by_client
        line = by_client.get(data[_CHADDR]) if by_client else None
        if isinstance(result, PendingReply):
            key = data[_CHADDR]
            entry = _Held(result, [])
            if line is None:
                by_client[key] = deque((entry,))
            else:
                line.append(entry)
            self._held += 1
            # Released per commit batch, not per reply: the batch's future is shared.
            keys = self._by_batch.get(result.stored)
            if keys is None:
                self._by_batch[result.stored] = [key]
            else:
                keys.append(key)
        elif line is not None:
            if result:
                # Keep this client's replies in order: wait behind its pending commit.
                line.append(_Held(None, result))
                self._held += 1
        else:
            for out in result:
                self._send(out)

    def _settle(self) -> None:
        """Release the lines whose batch is stored; wait (a done callback) for the others."""
        if not self._by_batch:
            return
        for batch in list(self._by_batch):
            if batch in self._watched:
                continue
            if batch.done():
                self._stored(batch)
            else:  # saved through the store's connection: released when that completes
                self._watched.add(batch)
                batch.add_done_callback(self._stored)

    def _stored(self, batch: asyncio.Future[None]) -> None:
        self._watched.discard(batch)
        for key in self._by_batch.pop(batch, ()):
            self._release(key)

    def _release(self, key: bytes) -> None:
        """Send the replies at the head of `key`'s line whose commits are done."""
        line = self._by_client.get(key)
        if line is None:
            return
        while line and line[0].ready():
            entry = line.popleft()
            self._held -= 1
            try:
                outs = entry.outgoing()
            except Exception:
                self.service.errors.inc("worker")
                _log.exception("DHCP transport error")
                continue
            for out in outs:
                self._send(out)
        if not line:
            del self._by_client[key]

    # -- send --

    def _send(self, out: Outgoing) -> None:
        if self._unsent:
            self._queue_unsent(out)
            return
        sock = self._sock
        if sock is None:
            return
        try:
            sock.sendto(out.data, out.dest)
        except (BlockingIOError, InterruptedError):
            self._queue_unsent(out)
        except OSError as e:
            self.service.errors.inc("send")
            _log.warning("DHCP reply to %s:%s not sent: %s", *out.dest, e)

    def _queue_unsent(self, out: Outgoing) -> None:
        # The send buffer is full: keep a bounded backlog and flush it when writable.
        if len(self._unsent) >= self._max_held:
            self.service.errors.inc("send")
            return
        self._unsent.append(out)
        if not self._writing and self._loop is not None and self._sock is not None:
            self._loop.add_writer(self._sock.fileno(), self._writable)
            self._writing = True

    def _writable(self) -> None:
        sock = self._sock
        while self._unsent and sock is not None:
            out = self._unsent[0]
            try:
                sock.sendto(out.data, out.dest)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                self.service.errors.inc("send")
                _log.warning("DHCP reply to %s:%s not sent: %s", *out.dest, e)
            self._unsent.popleft()
        if self._writing and self._loop is not None and sock is not None:
            self._loop.remove_writer(sock.fileno())
        self._writing = False

    # -- lifecycle --

    async def _expire_loop(self) -> None:
        while True:
            await asyncio.sleep(self._expire_interval)
            try:
                await self.service.expire_leases()
            except Exception:
                self.service.errors.inc("expire")
                _log.exception("DHCP lease expiry failed")

    async def _summary_loop(self) -> None:
        interval = self._summary_interval
        while True:
            await asyncio.sleep(interval)
            try:
                self.service.log_summary(interval)
            except Exception:
                self.service.errors.inc("summary")
                _log.exception("DHCP summary failed")

    def _check_trace(self) -> None:
        assert self._trace is not None
        try:
            change = self._trace.poll()
        except OSError as e:
            _log.warning("DHCP trace list %s not read: %s", self._trace.path, e)
            return
        if change is None:
            return
        macs, bad = change
        for line in bad:
            _log.warning("DHCP trace list %s: %s (skipped)", self._trace.path, line)
        self.service.set_trace(macs)

    async def _trace_loop(self) -> None:
        while True:
            await asyncio.sleep(TRACE_POLL_S)
            self._check_trace()

    async def close(self) -> None:
        """Stop reading, close the socket, wait for submitted lease changes to be stored.

        Replies still waiting for their commit are not sent; their leases are stored anyway.
        """
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._tasks.clear()
        sock, self._sock = self._sock, None
        if sock is not None and self._loop is not None:
            self._loop.remove_reader(sock.fileno())
            if self._writing:
                self._loop.remove_writer(sock.fileno())
                self._writing = False
        if sock is not None:
            sock.close()
        self._unsent.clear()
        self._by_client.clear()  # their commits still complete; the replies are not sent
        self._by_batch.clear()
        self._watched.clear()
        self._held = 0
        with contextlib.suppress(Exception):
            await self.service.close()


def interface_address(interface: str) -> str:
    """The IPv4 address of a network interface (Linux SIOCGIFADDR); OSError if it has none.

    For `dhcp.server_ip` left unset: the server identifier defaults to the bound interface's address.
    """
    siocgifaddr = 0x8915
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifreq = struct.pack("256s", interface.encode()[:15])
        res = fcntl.ioctl(s.fileno(), siocgifaddr, ifreq)
    return socket.inet_ntoa(res[20:24])


def _set_recv_buffer(sock: socket.socket, size: int) -> None:
    """Ask for a `size`-octet receive buffer: up to net.core.rmem_max for anyone, and past it
    for root (SO_RCVBUFFORCE, CAP_NET_ADMIN). A smaller buffer than asked is not an error."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
    # Linux reports twice the payload size it granted (the rest is its own bookkeeping).
    if _SO_RCVBUFFORCE is not None and sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) < size:
        with contextlib.suppress(OSError):  # EPERM without CAP_NET_ADMIN
            sock.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, size)


def _socket(host: str, port: int, interface: str | None, recv_buffer: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        # No SO_REUSEADDR: the port is this server's alone (server/core/ports.py).
        # Replies to clients without an address go to 255.255.255.255 (RFC 2131 §4.1).
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        if recv_buffer > 0:
            _set_recv_buffer(sock, recv_buffer)
        if interface:
            # Without this a 0.0.0.0-bound socket would hear (and broadcast on) every
            # interface; with it, broadcasts leave through the site VLAN only. Needs root or
            # CAP_NET_RAW.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, interface.encode() + b"\0")
        bind_exclusive(sock, (host, port), "DHCP", "[dhcp] port")
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
    recv_buffer: int = DEFAULT_RECV_BUFFER,
    summary_interval: float = 0,
    trace_file: Path | None = None,
) -> DhcpServer:
    """Bind the DHCP socket, load leases and start answering; raises OSError if bind fails.

    At most `queue_size + workers` datagrams wait for lease commits at once; more are shed.
    `recv_buffer` is the socket receive buffer in octets (0 keeps the kernel default).
    `summary_interval`: seconds between INFO summaries of the decisions (0: none).
    `trace_file`: the trace list to follow (trace.py); None traces nobody.
    """
    if queue_size < 1 or workers < 1:
        raise ValueError("dhcp: queue_size and workers must be at least 1")
    sock = _socket(host, port, interface, recv_buffer)
    server = DhcpServer(
        service,
        interface or host,
        queue_size,
        workers,
        expire_interval,
        summary_interval=summary_interval,
        trace_file=trace_file,
    )
    try:
        await server._start(sock)
    except BaseException:
        await server.close()
        sock.close()
        raise
    return server
