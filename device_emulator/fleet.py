"""Many emulated devices in one process: MACs and codes from an exported CSV, bounded concurrency.

All devices share one DHCP transport (replies demultiplexed by xid: in the loopback lab every
reply goes to ciaddr:client_port, so N sockets on one port would steal each other's replies)
and, for mDNS, one UDP socket that sends from each device's own loopback address (IP_PKTINFO)
and sorts replies by the address they were sent to. Each device opens its own HTTPS
connection, from its own address when the fleet has per-device addresses.
Imports nothing from server/.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import ipaddress
import math
import resource
import socket
import ssl
import struct
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

from device_emulator.device import (
    Device,
    DeviceMachine,
    Discoverer,
    Event,
    Failure,
    HttpOptions,
    PinPolicy,
    SignInOptions,
    State,
    dhcp_discoverer,
    fixed_code,
    mdns_discoverer,
)
from device_emulator.dhcp_client import (
    LAB_CLIENT_PORT,
    DeviceIdentity,
    DhcpTransport,
    RawL2Transport,
    RetryPolicy,
)
from device_emulator.dhcp_codec import DEFAULT_REQUEST_OPTIONS, mac_to_bytes, mac_to_text
from device_emulator.https_client import TlsSessions, unverified_context
from device_emulator.mdns_client import MdnsTransport
from device_emulator.mdns_codec import DEFAULT_SERVICE
from device_emulator.udp import QueueReceiver, bound_udp_socket

__all__ = [
    "DhcpDemux",
    "FleetConfig",
    "FleetEntry",
    "FleetReport",
    "SharedMdns",
    "percentile",
    "raise_fd_limit",
    "read_export",
    "run_fleet",
]

_IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)  # Linux value; Python 3.11 has no constant
_PKTINFO = struct.Struct("@i4s4s")  # struct in_pktinfo: ifindex, spec_dst, addr


class ExportError(ValueError):
    """The CSV is not an Imprint device export; the message says what is wrong."""


@dataclass(frozen=True, slots=True)
class FleetEntry:
    """One device of the fleet: its MAC and the code printed next to it."""

    mac: str
    code: str
    location: str = ""


def read_export(text: str) -> tuple[list[FleetEntry], int]:
    """Devices with a code from an export CSV, and how many rows had no code (skipped).

    The header is `MAC ID,Location,Verification code,Code expires (UTC),State`; columns are
    found by name, so their order does not matter.
    """
    text = text.removeprefix("\ufeff")
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        raise ExportError("the CSV is empty") from None
    names = [h.strip().lower() for h in header]
    missing = [n for n in ("mac id", "verification code") if n not in names]
    if missing:
        raise ExportError(
            f"the CSV has no {' or '.join(repr(m) for m in missing)} column (header: "
            f"{','.join(header)}); use `imprint devices export` or GET .../devices/export.csv"
        )
    mac_col, code_col = names.index("mac id"), names.index("verification code")
    loc_col = names.index("location") if "location" in names else None
    entries: list[FleetEntry] = []
    skipped = 0
    seen: set[str] = set()
    for row in reader:
        if not row or all(not cell.strip() for cell in row):
            continue
        raw_mac = row[mac_col].strip() if mac_col < len(row) else ""
        code = row[code_col].strip() if code_col < len(row) else ""
        if not code:
            skipped += 1
            continue
        try:
            mac = mac_to_text(mac_to_bytes(raw_mac))
        except ValueError as exc:
            raise ExportError(f"line {reader.line_num}: {exc}") from None
        if mac in seen:
            raise ExportError(f"line {reader.line_num}: MAC {mac} appears twice")
        seen.add(mac)
        location = row[loc_col].strip() if loc_col is not None and loc_col < len(row) else ""
        entries.append(FleetEntry(mac, code, location))
    return entries, skipped


def raise_fd_limit() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit; return (soft, hard) now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def percentile(values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile (p in 0..100) of `values`, or None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


# --- shared DHCP transport -------------------------------------------------------------------


class DhcpDemux:
    """One DHCP transport shared by many devices; replies are handed to the view whose xid
    they carry (RFC 2131 §4.1: the client matches replies by xid)."""

    def __init__(self, transport: DhcpTransport) -> None:
        self.transport = transport
        self.default_broadcast = transport.default_broadcast
        self._queues: dict[int, asyncio.Queue[bytes]] = {}
        self._pump: asyncio.Task[None] | None = None
        self.received = 0
        self.unmatched = 0  # replies for no waiting device (late retransmission answers, junk)

    def start(self) -> None:
        """Start reading replies (needs a running loop)."""
        if isinstance(self.transport, SharedUdpDhcp):
            self.transport.listener = self._dispatch  # straight from the protocol callback
        elif self._pump is None:
            self._pump = asyncio.get_running_loop().create_task(self._read(), name="dhcp-demux")

    async def _read(self) -> None:
        while True:
            data = await self.transport.recv(3600.0)
            if data is not None:
                self._dispatch(data)

    def _dispatch(self, data: bytes) -> None:
        self.received += 1
        queue = self._queues.get(int.from_bytes(data[4:8], "big")) if len(data) >= 8 else None
        if queue is None:
            self.unmatched += 1
        else:
            queue.put_nowait(data)

    def view(self) -> DhcpView:
        """A per-device transport over the shared one."""
        return DhcpView(self)

    def _register(self, xid: int, queue: asyncio.Queue[bytes]) -> None:
        if self._queues.get(xid, queue) is not queue:
            raise RuntimeError(f"xid 0x{xid:08x} is already in use by another emulated device")
        self._queues[xid] = queue

    def _unregister(self, xid: int) -> None:
        self._queues.pop(xid, None)

    async def close(self) -> None:
        """Stop reading and close the shared transport."""
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump
            self._pump = None
        self.transport.close()


class SharedUdpDhcp(asyncio.DatagramProtocol, QueueReceiver[bytes]):
    """The lab's shared DHCP socket: UDP to the server from the client port, with a large
    receive buffer so a burst of replies to hundreds of devices is not dropped by the kernel.
    Satisfies DhcpTransport; wrap it in DhcpDemux to share it."""

    default_broadcast = False

    def __init__(self, server: tuple[str, int], rcvbuf: int) -> None:
        QueueReceiver.__init__(self)
        self.server = server
        self._rcvbuf = rcvbuf
        self._transport: asyncio.DatagramTransport | None = None
        self.local_address: tuple[str, int] = ("0.0.0.0", 0)
        self.send_errors = 0
        # When set, every datagram goes to it instead of the queue (DhcpDemux dispatch).
        self.listener: Callable[[bytes], None] | None = None

    @classmethod
    async def open(
        cls,
        server: tuple[str, int],
        *,
        client_port: int,
        bind_address: str = "0.0.0.0",
        rcvbuf: int = 8 << 20,
    ) -> SharedUdpDhcp:
        """Bind `bind_address:client_port` and send to `server`."""

        def large_buffer(sock: socket.socket) -> None:
            for option in (getattr(socket, "SO_RCVBUFFORCE", None), socket.SO_RCVBUF):
                if option is not None:
                    try:  # SO_RCVBUFFORCE passes net.core.rmem_max with CAP_NET_ADMIN
                        sock.setsockopt(socket.SOL_SOCKET, option, rcvbuf)
                        break
                    except OSError:
                        continue

        sock = bound_udp_socket((bind_address, client_port), configure=large_buffer)
        protocol = cls(server, rcvbuf)
        await asyncio.get_running_loop().create_datagram_endpoint(lambda: protocol, sock=sock)
        return protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # 3.11's selector datagram transport does not subclass DatagramTransport: cast.
        self._transport = cast(asyncio.DatagramTransport, transport)
        self.local_address = transport.get_extra_info("sockname")

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        if self.listener is not None:
            self.listener(data)
        else:
            self._queue.put_nowait(data)

    def error_received(self, exc: Exception) -> None:
        self.send_errors += 1

    async def send(self, payload: bytes) -> None:
        """Queue one datagram to the server."""
        if self._transport is not None:
            self._transport.sendto(payload, self.server)

    def close(self) -> None:
        """Close the socket."""
        if self._transport is not None:
            self._transport.close()


class DhcpView(QueueReceiver[bytes]):
    """One device's side of a DhcpDemux; satisfies the DhcpTransport protocol. `recv(wait)`
    returns the next reply carrying one of this view's xids."""

    def __init__(self, demux: DhcpDemux) -> None:
        super().__init__()
        self._demux = demux
        self.default_broadcast = demux.default_broadcast
        self._xids: set[int] = set()

    async def send(self, payload: bytes) -> None:
        """Send through the shared transport, first claiming the payload's xid for replies."""
        xid = int.from_bytes(payload[4:8], "big")
        if xid not in self._xids:
            self._demux._register(xid, self._queue)
            self._xids.add(xid)
        await self._demux.transport.send(payload)

    def close(self) -> None:
        """Give the xids back; the shared transport stays open."""
        for xid in self._xids:
            self._demux._unregister(xid)
        self._xids.clear()


# --- shared mDNS socket ----------------------------------------------------------------------


class SharedMdns:
    """One UDP socket for the legacy-unicast mDNS queries (RFC 6762 §6.7) of many devices.

    Each device sends from its own address (IP_PKTINFO source selection, so loopback devices
    127.x.y.z are told apart by the responder); the answer comes back to that address, which
    IP_PKTINFO on receive tells us, and goes to that device's queue.
    """

    def __init__(self, server: tuple[str, int], *, bind_address: str = "0.0.0.0") -> None:
        self.server = server
        self._sock = bound_udp_socket(
            (bind_address, 0),
            reuse_address=False,
            configure=lambda s: s.setsockopt(socket.IPPROTO_IP, _IP_PKTINFO, 1),
        )
        self.port: int = self._sock.getsockname()[1]
        self._queues: dict[str, asyncio.Queue[tuple[bytes, tuple[str, int]]]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self.unmatched = 0
        self.send_drops = 0

    def start(self) -> None:
        """Start reading (needs a running loop)."""
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
            self._loop.add_reader(self._sock.fileno(), self._readable)

    def _readable(self) -> None:
        for _ in range(256):  # bounded: let other callbacks run between bursts
            try:
                data, ancdata, _flags, source = self._sock.recvmsg(9000, socket.CMSG_SPACE(12))
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self.unmatched += 1
                continue
            destination = None
            for level, kind, value in ancdata:
                if level == socket.IPPROTO_IP and kind == _IP_PKTINFO and len(value) >= 12:
                    destination = socket.inet_ntoa(_PKTINFO.unpack(value[:12])[2])
            queue = self._queues.get(destination or "")
            if queue is None:
                self.unmatched += 1
            else:
                queue.put_nowait((data, (str(source[0]), int(source[1]))))

    def view(self, address: str) -> MdnsTransport:
        """A per-device transport that sends from `address`; usable with query_service."""
        # query_service is typed for MdnsTransport but only uses qu, server, send, recv.
        return cast(MdnsTransport, _MdnsView(self, address))

    def _send_from(self, address: str, payload: bytes) -> None:
        info = _PKTINFO.pack(0, socket.inet_aton(address), b"\0\0\0\0")
        try:
            self._sock.sendmsg([payload], [(socket.IPPROTO_IP, _IP_PKTINFO, info)], 0, self.server)
        except BlockingIOError:
            self.send_drops += 1  # the query is retransmitted by the browse (RFC 6762 §5.2)

    def close(self) -> None:
        """Stop reading and close the socket."""
        if self._loop is not None:
            self._loop.remove_reader(self._sock.fileno())
            self._loop = None
        self._sock.close()


class _MdnsView(QueueReceiver[tuple[bytes, tuple[str, int]]]):
    """One device's legacy-unicast browse over SharedMdns."""

    qu = False

    def __init__(self, shared: SharedMdns, address: str) -> None:
        super().__init__()
        self._shared = shared
        self.address = address
        self.server: tuple[str, int] | None = shared.server
        self.destination = shared.server
        self.local_address = (address, shared.port)
        if address in shared._queues:
            raise RuntimeError(f"{address} is already browsing")
        shared._queues[address] = self._queue

    async def send(self, payload: bytes) -> None:
        self._shared._send_from(self.address, payload)

    def close(self) -> None:
        self._shared._queues.pop(self.address, None)


# --- the fleet -------------------------------------------------------------------------------


@dataclass(frozen=True)
class FleetConfig:
    """How the fleet discovers Imprint and talks to it."""

    discover: Literal["dhcp", "mdns", "both"] = "dhcp"
    parallel_discovery: bool = False
    concurrency: int = 200
    # DHCP: UDP to `dhcp_server` from `client_port` (lab), or raw Ethernet on `iface`.
    dhcp_server: tuple[str, int] | None = None
    iface: str | None = None
    client_port: int | None = None
    bind_address: str = "0.0.0.0"
    ciaddr: str | None = None  # shared INFORM address when there are no per-device addresses
    address_base: str | None = None  # device i uses address_base + i (ciaddr, mDNS, HTTPS)
    vendor_class: str | None = "MS-UC-Client"
    request_options: tuple[int, ...] = DEFAULT_REQUEST_OPTIONS
    dhcp_time_limit: float = 10.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    # mDNS: legacy unicast to `mdns_server` (lab responder) from each device's address.
    mdns_server: tuple[str, int] | None = None
    service: str = DEFAULT_SERVICE
    mdns_time_limit: float = 3.0
    pin: PinPolicy = field(default_factory=PinPolicy)
    http_timeout: float = 10.0
    keep_alive: bool = True
    # Remote sign-in (RFC 8628) after provisioning: each device starts the device authorization
    # and polls until it holds its tokens (someone approves its user code meanwhile). A device
    # gives its worker back once it shows its user code, so polling devices do not count
    # against `concurrency`.
    sign_in: bool = False
    sign_in_time_limit: float = 300.0  # seconds from power-on
    # Resume one TLS session across the fleet's devices (each device resumes its own anyway).
    share_tls_sessions: bool = False


@dataclass
class DeviceOutcome:
    """What one device of the fleet ended with."""

    mac: str
    state: State
    error: str | None
    message: str | None
    time_to_provision: float | None
    discovery_time: float | None
    http_time: float
    step: str | None = None  # where it failed: discover, provision, authorize, token
    steps: dict[str, float] = field(default_factory=dict)  # seconds per step it completed


@dataclass
class FleetReport:
    """The fleet's summary: counts, failures by reason, time to provision, wall time."""

    devices: int
    skipped_no_code: int
    concurrency: int
    wall_time: float
    outcomes: list[DeviceOutcome]
    dhcp_unmatched: int = 0
    mdns_unmatched: int = 0
    fd_limit: tuple[int, int] = (0, 0)
    sign_in: bool = False
    tls_offered: int = 0
    tls_resumed: int = 0
    cpu_s: float = 0.0  # this process's CPU seconds during the run

    @property
    def provisioned(self) -> int:
        """Devices that reached the sign-in screen."""
        return sum(1 for o in self.outcomes if "provision" in o.steps)

    @property
    def signed_in(self) -> int:
        """Devices that hold their tokens (with sign-in)."""
        return sum(1 for o in self.outcomes if o.state is State.SIGNED_IN)

    def failures_by_step(self) -> dict[str, dict[str, int]]:
        """Failed devices by the step they failed in, then by reason."""
        out: dict[str, Counter[str]] = {}
        for o in self.outcomes:
            if o.step is not None:
                out.setdefault(o.step, Counter())[o.error or "unknown"] += 1
        return {step: dict(c.most_common()) for step, c in out.items()}

    def step_times(self) -> dict[str, dict[str, float | None]]:
        """p50/p99 seconds per step, over the devices that completed it."""
        out: dict[str, dict[str, float | None]] = {}
        for step in STEPS:
            values = [o.steps[step] for o in self.outcomes if step in o.steps]
            if values:
                out[step] = {
                    "p50": percentile(values, 50),
                    "p99": percentile(values, 99),
                    "max": max(values),
                }
        return out

    @property
    def failures(self) -> Counter[str]:
        """Failed devices by error code."""
        return Counter(o.error or "unknown" for o in self.outcomes if o.step is not None)

    def failure_examples(self) -> dict[str, str]:
        """The first message seen for each error code."""
        out: dict[str, str] = {}
        for o in self.outcomes:
            if o.step is not None and o.error and o.error not in out:
                out[o.error] = o.message or ""
        return out

    def times(self) -> list[float]:
        """Power-on to sign-in screen, seconds, for every provisioned device."""
        return [o.time_to_provision for o in self.outcomes if o.time_to_provision is not None]

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready form."""
        times = self.times()
        disc = [o.discovery_time for o in self.outcomes if o.discovery_time is not None]
        http = [o.http_time for o in self.outcomes if o.state is State.SIGN_IN_SCREEN]
        return {
            "devices": self.devices,
            "skipped_no_code": self.skipped_no_code,
            "concurrency": self.concurrency,
            "provisioned": self.provisioned,
            "failed": dict(self.failures),
            "failure_examples": self.failure_examples(),
            "time_to_provision_s": {
                "p50": percentile(times, 50),
                "p99": percentile(times, 99),
                "max": max(times) if times else None,
            },
            "discovery_s": {"p50": percentile(disc, 50), "p99": percentile(disc, 99)},
            "code_post_s": {"p50": percentile(http, 50), "p99": percentile(http, 99)},
            "wall_time_s": self.wall_time,
            "devices_per_s": self.provisioned / self.wall_time if self.wall_time else None,
            "dhcp_unmatched_replies": self.dhcp_unmatched,
            "mdns_unmatched_replies": self.mdns_unmatched,
            "fd_limit": list(self.fd_limit),
            "sign_in": self.sign_in,
            "signed_in": self.signed_in,
            "failures_by_step": self.failures_by_step(),
            "steps_s": self.step_times(),
            "tls_sessions": {"offered": self.tls_offered, "resumed": self.tls_resumed},
            "cpu_s": self.cpu_s,
            "cpu_per_device_ms": 1000 * self.cpu_s / self.devices if self.devices else None,
        }

    def lines(self) -> list[str]:
        """The summary as text lines."""

        def ms(value: float | None) -> str:
            return "-" if value is None else f"{value * 1000:.1f} ms"

        d = self.as_dict()
        out = [
            f"devices: {self.devices} with a code ({self.skipped_no_code} rows skipped: no code), "
            f"concurrency {self.concurrency}",
            f"provisioned: {self.provisioned}",
        ]
        failures = self.failures
        if failures:
            out.append(f"failed: {sum(failures.values())}")
            examples = self.failure_examples()
            for error, count in failures.most_common():
                out.append(f"  {error}: {count}  e.g. {examples.get(error, '')}")
        else:
            out.append("failed: 0")
        t = d["time_to_provision_s"]
        out.append(
            "time to provision (power-on to sign-in screen): "
            f"p50 {ms(t['p50'])}, p99 {ms(t['p99'])}, max {ms(t['max'])}"
        )
        out.append(
            f"  discovery p50 {ms(d['discovery_s']['p50'])}, p99 {ms(d['discovery_s']['p99'])}; "
            f"code POST (connect, TLS, request) p50 {ms(d['code_post_s']['p50'])}, "
            f"p99 {ms(d['code_post_s']['p99'])}"
        )
        rate = d["devices_per_s"]
        out.append(
            f"wall time: {self.wall_time:.2f} s"
            + (f" ({rate:.0f} devices/s)" if rate is not None else "")
        )
        if self.sign_in:
            out.append(f"signed in: {self.signed_in}")
            for step, counts in self.failures_by_step().items():
                out.append(
                    f"  failed at {step}: " + ", ".join(f"{k} {v}" for k, v in counts.items())
                )
            for step, t in self.step_times().items():
                out.append(f"  {step}: p50 {ms(t['p50'])}, p99 {ms(t['p99'])}")
        out.append(
            f"TLS sessions resumed: {self.tls_resumed} of {self.tls_offered} offered; "
            f"emulator CPU {self.cpu_s:.2f} s"
        )
        if self.dhcp_unmatched or self.mdns_unmatched:
            out.append(
                f"replies for no waiting device: DHCP {self.dhcp_unmatched}, "
                f"mDNS {self.mdns_unmatched}"
            )
        return out


def device_address(base: str, index: int) -> str:
    """The address of device `index` when the fleet has per-device addresses."""
    address = ipaddress.IPv4Address(base) + index
    if ipaddress.IPv4Address(base).is_loopback and not address.is_loopback:
        raise ValueError(f"{base} + {index} leaves 127.0.0.0/8")
    return str(address)


async def run_fleet(
    config: FleetConfig,
    entries: Sequence[FleetEntry],
    *,
    skipped: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> FleetReport:
    """Run every entry as a device, at most `config.concurrency` at a time; never raises for a
    device's failure (it is counted)."""
    if config.concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    uses_dhcp = config.discover in ("dhcp", "both")
    uses_mdns = config.discover in ("mdns", "both")
    if uses_mdns and config.mdns_server is None:
        raise ValueError("the fleet browses mDNS by legacy unicast: give the responder address")
    if uses_mdns and config.address_base is None:
        raise ValueError(
            "mDNS tells devices apart by their source address: give per-device addresses "
            "(address_base, e.g. 127.1.0.0)"
        )
    if uses_dhcp and config.ciaddr is None and config.address_base is None and config.iface is None:
        raise ValueError("DHCPINFORM needs an address: give ciaddr or address_base")
    if config.address_base is not None and entries:
        device_address(config.address_base, len(entries) - 1)  # the range fits
    fd_limit = raise_fd_limit()
    demux: DhcpDemux | None = None
    mdns: SharedMdns | None = None
    if uses_dhcp:
        demux = DhcpDemux(await _open_dhcp(config))
        demux.start()
    if uses_mdns:
        assert config.mdns_server is not None
        mdns = SharedMdns(config.mdns_server)
        mdns.start()
    context: ssl.SSLContext = unverified_context()  # one context: building one costs ~ms
    fleet_sessions = TlsSessions() if config.share_tls_sessions else None
    counted: list[TlsSessions] = [fleet_sessions] if fleet_sessions is not None else []
    background: set[asyncio.Task[DeviceOutcome]] = set()
    sign_in_options = (
        SignInOptions(time_limit=config.sign_in_time_limit, max_sign_ins=3)
        if config.sign_in
        else None
    )
    cpu0 = time.process_time()
    outcomes: list[DeviceOutcome] = []
    queue: asyncio.Queue[tuple[int, FleetEntry]] = asyncio.Queue()
    for item in enumerate(entries):
        queue.put_nowait(item)

    async def one(
        index: int, entry: FleetEntry, released: asyncio.Event | None = None
    ) -> DeviceOutcome:
        address = (
            device_address(config.address_base, index) if config.address_base else config.ciaddr
        )
        discoverers: list[tuple[str, Discoverer]] = []
        view = demux.view() if demux is not None else None
        if view is not None:
            identity = DeviceIdentity(
                mac=entry.mac,
                vendor_class=config.vendor_class,
                request_options=config.request_options,
            )
            discoverers.append(
                (
                    "dhcp",
                    dhcp_discoverer(
                        identity,
                        view,
                        ciaddr=address,
                        time_limit=config.dhcp_time_limit,
                        retry=config.retry,
                    ),
                )
            )
        if mdns is not None:
            assert address is not None
            shared_mdns = mdns
            discoverers.append(
                (
                    "mdns",
                    mdns_discoverer(
                        lambda: shared_mdns.view(address),
                        service=config.service,
                        time_limit=config.mdns_time_limit,
                    ),
                )
            )
        sessions = fleet_sessions
        if sessions is None:
            sessions = TlsSessions()  # the device resumes its own session on a new connection
            counted.append(sessions)

        def listen(machine: DeviceMachine, event: Event) -> None:
            # Once the user code shows (or the device is done), its worker takes the next one.
            if released is not None and (
                event.state in (State.SIGNING_IN, State.FAILED, State.SIGNED_IN)
            ):
                released.set()

        device = Device(
            entry.mac,
            discoverers,
            fixed_code(entry.code),
            parallel_discovery=config.parallel_discovery,
            pin_policy=config.pin,
            http=HttpOptions(
                context=context,
                local_address=address if config.address_base else None,
                timeout=config.http_timeout,
                keep_alive=config.keep_alive,
                sessions=sessions,
            ),
            listener=listen,
            sign_in=sign_in_options,
        )
        try:
            machine = await device.run()
        except Exception as exc:  # a bug or an environment error must not stop the fleet
            machine = device.machine
            if not machine.finished:
                machine.fail(
                    Failure("emulator_error", f"{type(exc).__name__}: {exc}"),
                    asyncio.get_running_loop().time(),
                )
        finally:
            if view is not None:
                view.close()
            if released is not None:
                released.set()
        return _outcome(machine, device, config.sign_in)

    done = 0

    async def worker() -> None:
        nonlocal done
        while True:
            try:
                index, entry = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            if not config.sign_in:
                outcomes.append(await one(index, entry))
                finished()
                continue
            released = asyncio.Event()
            task = asyncio.create_task(one(index, entry, released))
            background.add(task)
            task.add_done_callback(collect)
            await released.wait()

    def finished() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, len(entries))

    def collect(task: asyncio.Task[DeviceOutcome]) -> None:
        background.discard(task)
        if not task.cancelled() and task.exception() is None:
            outcomes.append(task.result())
            finished()

    started = time.perf_counter()
    try:
        workers = [
            asyncio.create_task(worker()) for _ in range(min(config.concurrency, len(entries)))
        ]
        await asyncio.gather(*workers)
        while background:  # devices polling for their tokens
            await asyncio.gather(*list(background), return_exceptions=True)
    finally:
        wall = time.perf_counter() - started
        if demux is not None:
            await demux.close()
        if mdns is not None:
            mdns.close()
    return FleetReport(
        devices=len(entries),
        skipped_no_code=skipped,
        concurrency=config.concurrency,
        wall_time=wall,
        outcomes=outcomes,
        dhcp_unmatched=demux.unmatched if demux is not None else 0,
        mdns_unmatched=mdns.unmatched if mdns is not None else 0,
        fd_limit=fd_limit,
        sign_in=config.sign_in,
        tls_offered=sum(c.offered for c in counted),
        tls_resumed=sum(c.resumed for c in counted),
        cpu_s=time.process_time() - cpu0,
    )


async def _open_dhcp(config: FleetConfig) -> DhcpTransport:
    if config.iface is not None:
        # The devices' MACs are not the interface's: unicast replies to them need promiscuous
        # mode; the raw transport sends each payload from the MAC in its chaddr.
        return RawL2Transport(config.iface, client_port=config.client_port or 68, promisc=True)
    if config.dhcp_server is None:
        raise ValueError("DHCP discovery needs a server address (lab) or an interface")
    return await SharedUdpDhcp.open(
        config.dhcp_server,
        client_port=LAB_CLIENT_PORT if config.client_port is None else config.client_port,
        bind_address=config.bind_address,
    )


STEPS = ("discover", "provision", "authorize", "approve_wait", "token", "total")
# The step a device was in when it stopped, by its last state before FAILED (or its last state).
_STEP_OF = {
    State.BOOT: "discover",
    State.DISCOVER: "discover",
    State.PROVISION_SCREEN: "provision",
    State.CODE_ENTRY: "provision",
    State.PROVISIONING: "provision",
    State.SIGN_IN_SCREEN: "authorize",
    State.SIGNING_IN: "token",
    State.POLLING: "token",
}


def _outcome(machine: DeviceMachine, device: Device, sign_in: bool) -> DeviceOutcome:
    start = machine.entered(State.DISCOVER)
    found = machine.entered(State.PROVISION_SCREEN)
    provisioned = machine.entered(State.SIGN_IN_SCREEN)
    showing = machine.entered(State.SIGNING_IN)
    signed = machine.entered(State.SIGNED_IN)
    steps: dict[str, float] = {}
    if start is not None and found is not None:
        steps["discover"] = found - start
    if found is not None and provisioned is not None:
        steps["provision"] = provisioned - found
    if provisioned is not None and showing is not None:
        steps["authorize"] = showing - provisioned
    if showing is not None and signed is not None and device.last_poll_at is not None:
        steps["approve_wait"] = device.last_poll_at - showing
        steps["token"] = device.token_time
    boot = machine.entered(State.BOOT)
    if boot is not None and (signed if sign_in else provisioned) is not None:
        steps["total"] = (signed if sign_in else provisioned) - boot  # type: ignore[operator]
    failure = machine.failure
    error, message, step = None, None, None
    if failure is not None:
        error, message = failure.error, failure.message
        before = [e.state for e in machine.events if e.state is not State.FAILED]
        step = _STEP_OF.get(before[-1], "token") if before else "discover"
    elif sign_in and not machine.is_in(State.SIGNED_IN):
        # Stopped without tokens: the time limit, or no device authorization could be had.
        step = _STEP_OF.get(machine.state, "token")
        problem = machine.sign_in_problem
        if problem is not None:
            error, message = problem.error, problem.message
        elif machine.notice:
            error, message = "not_signed_in", machine.notice
        else:
            error, message = "time_limit", "not approved within the sign-in time limit"
    return DeviceOutcome(
        mac=machine.mac,
        state=machine.state,
        error=error,
        message=message,
        time_to_provision=machine.time_to_provision,
        discovery_time=steps.get("discover"),
        http_time=device.http_time,
        step=step,
        steps=steps,
    )


def load_export(path: Path) -> tuple[list[FleetEntry], int]:
    """read_export on a file."""
    return read_export(path.read_text(encoding="utf-8-sig"))
