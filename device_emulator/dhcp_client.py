"""The emulated device's DHCP client: DHCPINFORM, or DISCOVER/OFFER/REQUEST/ACK, over UDP
sockets (loopback lab) or raw Ethernet frames on an interface (network namespaces).

Packets come from `dhcp_codec` (scapy-built, hand-decoded); this module only moves bytes and
keeps time. Imports nothing from server/.
"""

from __future__ import annotations

import asyncio
import fcntl
import ipaddress
import random
import socket
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from device_emulator.dhcp_codec import (
    ACK,
    BOOTREPLY,
    DEFAULT_REQUEST_OPTIONS,
    NAK,
    OFFER,
    DeviceIdentity,
    DhcpDecodeError,
    DhcpMessage,
    backoff_delay,
    build_discover,
    build_inform,
    build_request,
    decode_message,
    mac_to_text,
    options_as_hex,
    parse_provisioning,
    unwrap_frame,
    wrap_frame,
)
from device_emulator.provisioning import NoAnswer, ProvisioningInfo
from device_emulator.udp import SocketReceiver, bound_udp_socket

__all__ = [
    "DEFAULT_REQUEST_OPTIONS",
    "DeviceIdentity",
    "DhcpResult",
    "DhcpTransport",
    "NoAnswer",
    "RawL2Transport",
    "RetryPolicy",
    "UdpTransport",
    "discover_dhcp",
    "discover_request",
    "inform",
    "interface_ipv4",
    "interface_mac",
    "parse_provisioning",
]

LAB_SERVER_PORT = 6767  # lab stand-ins for 67/68, which need root to bind
LAB_CLIENT_PORT = 6868

_ETH_P_IP = 0x0800
_SOL_PACKET = 263
_PACKET_ADD_MEMBERSHIP = 1
_PACKET_MR_PROMISC = 1
_PACKET_OUTGOING = 4
_SIOCGIFADDR = 0x8915
_SIOCGIFHWADDR = 0x8927


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Retransmission timing (RFC 2131 §4.1): first wait `initial`, doubling up to `cap`,
    each randomised by ±`jitter` seconds. The exchange's `time_limit` bounds the total."""

    initial: float = 4.0
    cap: float = 64.0
    jitter: float = 1.0


class DhcpTransport(Protocol):
    """Moves DHCP payloads (the UDP data) between the device and the network."""

    # Whether a DISCOVER/REQUEST should set the broadcast flag by default: a raw-L2 device has
    # no address to receive a unicast reply on before it is configured (RFC 2131 §4.1).
    default_broadcast: bool

    async def send(self, payload: bytes) -> None:
        """Send one DHCP message towards the server(s)."""

    async def recv(self, wait: float) -> bytes | None:
        """Return the next DHCP payload received, or None after `wait` seconds."""

    def close(self) -> None:
        """Release the socket."""


class UdpTransport(SocketReceiver[bytes]):
    """Plain UDP sockets: to `server` from `client_port`; works on loopback without root.
    `recv(wait)` returns the next datagram on the client port."""

    default_broadcast = False

    def __init__(
        self,
        server: tuple[str, int],
        *,
        client_port: int = LAB_CLIENT_PORT,
        bind_address: str = "0.0.0.0",
    ) -> None:
        self.server = server
        super().__init__(
            bound_udp_socket(
                (bind_address, client_port),
                configure=lambda s: s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1),
            )
        )
        self.local_address: tuple[str, int] = self._sock.getsockname()

    async def send(self, payload: bytes) -> None:
        """Send one datagram to the server."""
        await asyncio.get_running_loop().sock_sendto(self._sock, payload, self.server)

    async def _receive(self) -> bytes:
        data, _source = await self._datagram()
        return data


def _ifreq(iface: str, request: int) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        return fcntl.ioctl(sock.fileno(), request, struct.pack("256s", iface.encode()[:15]))


def interface_mac(iface: str) -> str:
    """The hardware address of `iface` as aa:bb:cc:dd:ee:ff."""
    return mac_to_text(_ifreq(iface, _SIOCGIFHWADDR)[18:24])


def interface_ipv4(iface: str) -> str | None:
    """The first IPv4 address configured on `iface`, or None when it has none."""
    try:
        return str(ipaddress.IPv4Address(_ifreq(iface, _SIOCGIFADDR)[20:24]))
    except OSError:
        return None


class RawL2Transport(SocketReceiver[bytes]):
    """Raw Ethernet frames on `iface` (AF_PACKET; needs CAP_NET_RAW, e.g. root in a netns).

    Frames go out as broadcasts from the MAC in the payload's chaddr, with the payload's ciaddr
    as IP source, so one transport can speak for many emulated devices. Received frames are
    kept when addressed to broadcast, the interface, or a MAC this transport has sent from:
    `recv(wait)` returns the next such frame's UDP payload to the client port; `close()` also
    leaves promiscuous mode.
    """

    default_broadcast = True

    def __init__(
        self, iface: str, *, client_port: int = 68, server_port: int = 67, promisc: bool = False
    ) -> None:
        self.iface = iface
        self.client_port = client_port
        self.server_port = server_port
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(_ETH_P_IP))
        try:
            sock.bind((iface, _ETH_P_IP))
            sock.setblocking(False)
            if promisc:
                # A device MAC other than the interface's own: unicast replies to it are only
                # delivered to us in promiscuous mode.
                mreq = struct.pack(
                    "iHH8s", socket.if_nametoindex(iface), _PACKET_MR_PROMISC, 0, b""
                )
                sock.setsockopt(_SOL_PACKET, _PACKET_ADD_MEMBERSHIP, mreq)
        except OSError:
            sock.close()
            raise
        super().__init__(sock)
        self._macs: set[bytes] = {self._sock.getsockname()[4][:6]}

    async def send(self, payload: bytes) -> None:
        """Broadcast one DHCP payload in an Ethernet/IPv4/UDP frame."""
        chaddr = payload[28:34]
        ciaddr = str(ipaddress.IPv4Address(payload[12:16]))
        self._macs.add(chaddr)
        frame = wrap_frame(
            payload,
            src_mac=mac_to_text(chaddr),
            src_ip=ciaddr,
            sport=self.client_port,
            dport=self.server_port,
        )
        await asyncio.get_running_loop().sock_sendall(self._sock, frame)

    async def _receive(self) -> bytes:
        loop = asyncio.get_running_loop()
        while True:
            frame, address = await loop.sock_recvfrom(self._sock, self._size)
            if address[2] == _PACKET_OUTGOING:
                continue  # our own transmission, looped back by the packet socket
            udp = unwrap_frame(frame)
            if udp is None or udp.dport != self.client_port:
                continue
            if udp.dst_mac[0] & 1 or udp.dst_mac in self._macs:  # group bit: broadcast
                return udp.payload


def open_transport(
    *,
    iface: str | None = None,
    server: tuple[str, int] | None = None,
    client_port: int | None = None,
    bind_address: str = "0.0.0.0",
    promisc: bool = False,
) -> DhcpTransport:
    """Raw L2 on `iface`, or UDP to `server`; exactly one of the two must be given."""
    if (iface is None) == (server is None):
        raise ValueError("give either an interface (raw L2) or a server address (UDP)")
    if iface is not None:
        return RawL2Transport(iface, client_port=client_port or 68, promisc=promisc)
    assert server is not None
    port = LAB_CLIENT_PORT if client_port is None else client_port
    return UdpTransport(server, client_port=port, bind_address=bind_address)


@dataclass(frozen=True, slots=True)
class DhcpResult:
    """What one exchange produced: the final reply, the offer (if any), and what it means."""

    exchange: str  # "inform" or "discover"
    xid: int
    reply: DhcpMessage  # ACK/NAK; the OFFER itself when no ACK came after it
    offer: DhcpMessage | None
    provisioning: ProvisioningInfo
    sent: int  # datagrams sent, retransmissions included
    ignored: int  # datagrams received and dropped (garbage, other xid, other device)
    offers: tuple[DhcpMessage, ...] = ()
    problems: tuple[str, ...] = field(default=())

    @property
    def message_type(self) -> str:
        """Name of the final reply's type (`ACK`, `NAK`, `OFFER`)."""
        return self.reply.message_type_name

    @property
    def server_id(self) -> str | None:
        """Option 54 of the final reply."""
        return self.reply.server_id

    @property
    def yiaddr(self) -> str:
        """Address the server gave (0.0.0.0 for INFORM and proxy replies)."""
        return self.reply.yiaddr

    @property
    def options(self) -> Mapping[int, bytes]:
        """All options of the final reply, raw."""
        return self.reply.options

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready form."""
        return {
            "exchange": self.exchange,
            "xid": f"0x{self.xid:08x}",
            "message_type": self.message_type,
            "server_id": self.server_id,
            "yiaddr": self.yiaddr,
            "options": options_as_hex(self.options),
            "offer": None
            if self.offer is None
            else {
                "server_id": self.offer.server_id,
                "yiaddr": self.offer.yiaddr,
                "options": options_as_hex(self.offer.options),
            },
            "sent": self.sent,
            "ignored": self.ignored,
            "provisioning": self.provisioning.as_dict(),
            "problems": list(self.problems),
        }


@dataclass
class _Exchange:
    """One xid's conversation: sends with retransmission and waits for matching replies."""

    transport: DhcpTransport
    mac: bytes
    xid: int
    retry: RetryPolicy
    rng: random.Random
    started: float
    deadline: float
    sent: int = 0
    ignored: int = 0

    def _matches(self, data: bytes, accept: Callable[[DhcpMessage], bool]) -> DhcpMessage | None:
        try:
            msg = decode_message(data)
        except DhcpDecodeError:
            self.ignored += 1
            return None
        if (
            msg.op != BOOTREPLY
            or msg.xid != self.xid
            or msg.chaddr[:6] != self.mac
            or not accept(msg)
        ):
            self.ignored += 1
            return None
        return msg

    async def run(
        self, build: Callable[[int], bytes], accept: Callable[[DhcpMessage], bool], what: str
    ) -> DhcpMessage:
        """Send `build(secs)`, retransmitting with backoff, until `accept` takes a reply."""
        loop = asyncio.get_running_loop()
        attempt = 0
        while (now := loop.time()) < self.deadline:
            await self.transport.send(build(int(now - self.started)))
            self.sent += 1
            delay = backoff_delay(attempt, self.retry.initial, self.retry.cap)
            if self.retry.jitter:
                delay = max(
                    delay / 2, delay + self.rng.uniform(-self.retry.jitter, self.retry.jitter)
                )
            wait_until = min(now + delay, self.deadline)
            while (remaining := wait_until - loop.time()) > 0:
                data = await self.transport.recv(remaining)
                if data is None:
                    break
                msg = self._matches(data, accept)
                if msg is not None:
                    return msg
            attempt += 1
        raise NoAnswer(
            f"no {what} for xid 0x{self.xid:08x} from MAC {mac_to_text(self.mac)} after "
            f"{self.sent} transmission{'' if self.sent == 1 else 's'}"
        )

    async def more(self, accept: Callable[[DhcpMessage], bool], until: float) -> list[DhcpMessage]:
        """Collect further accepted replies until `until` (no retransmission)."""
        loop = asyncio.get_running_loop()
        out: list[DhcpMessage] = []
        while (remaining := min(until, self.deadline) - loop.time()) > 0:
            data = await self.transport.recv(remaining)
            if data is None:
                break
            msg = self._matches(data, accept)
            if msg is not None:
                out.append(msg)
                if parse_provisioning(msg.options).found:
                    break
        return out


def _new_exchange(
    transport: DhcpTransport,
    identity: DeviceIdentity,
    time_limit: float,
    retry: RetryPolicy,
    xid: int | None,
    rng: random.Random | None,
) -> _Exchange:
    if time_limit <= 0:
        raise ValueError("time_limit must be positive")
    rng = rng or random.SystemRandom()
    now = asyncio.get_running_loop().time()
    return _Exchange(
        transport=transport,
        mac=identity.mac_bytes,
        xid=rng.getrandbits(32) if xid is None else xid,
        retry=retry,
        rng=rng,
        started=now,
        deadline=now + time_limit,
    )


async def inform(
    identity: DeviceIdentity,
    transport: DhcpTransport,
    *,
    ciaddr: str,
    time_limit: float = 10.0,
    retry: RetryPolicy | None = None,
    broadcast: bool | None = None,
    xid: int | None = None,
    rng: random.Random | None = None,
) -> DhcpResult:
    """DHCPINFORM from `ciaddr`; return the DHCPACK and what it says, or raise NoAnswer."""
    ex = _new_exchange(transport, identity, time_limit, retry or RetryPolicy(), xid, rng)
    flag = False if broadcast is None else broadcast  # the device has an address (§4.4.3)

    def build(secs: int) -> bytes:
        return build_inform(identity, xid=ex.xid, ciaddr=ciaddr, secs=secs, broadcast=flag)

    reply = await ex.run(build, lambda m: m.message_type == ACK, "DHCPACK to DHCPINFORM")
    problems = list(reply.problems)
    # RFC 2131 §4.3.5: an ACK to INFORM carries no lease time and no address.
    if 51 in reply.options:
        problems.append("DHCPACK to DHCPINFORM carries a lease time (option 51)")
    if reply.yiaddr != "0.0.0.0":
        problems.append(f"DHCPACK to DHCPINFORM has yiaddr {reply.yiaddr}")
    if reply.server_id is None:
        problems.append("DHCPACK has no server identifier (option 54)")
    return DhcpResult(
        exchange="inform",
        xid=ex.xid,
        reply=reply,
        offer=None,
        provisioning=parse_provisioning(reply.options, identity.vendor_class),
        sent=ex.sent,
        ignored=ex.ignored,
        problems=tuple(problems),
    )


async def discover_request(
    identity: DeviceIdentity,
    transport: DhcpTransport,
    *,
    time_limit: float = 10.0,
    retry: RetryPolicy | None = None,
    offer_wait: float = 1.0,
    broadcast: bool | None = None,
    xid: int | None = None,
    rng: random.Random | None = None,
) -> DhcpResult:
    """DISCOVER -> OFFER -> REQUEST -> ACK/NAK within `time_limit` in total; raise NoAnswer if no
    OFFER came.

    Several servers may offer (a site DHCP server with an address, Imprint in proxy mode with
    options only). After the first OFFER the device listens up to `offer_wait` seconds more and
    takes the first offer that carries provisioning information, else the first offer.

    Proxy offers (yiaddr 0.0.0.0) have no address to request. Their provisioning information
    is recorded from the OFFER, and, as PXE clients do with a proxy DHCP server, a REQUEST is
    still sent with option 54 naming that server (and no option 50); its ACK is accepted and
    read too. If that ACK never comes, the result is the OFFER with a problem noted.
    """
    ex = _new_exchange(transport, identity, time_limit, retry or RetryPolicy(), xid, rng)
    flag = transport.default_broadcast if broadcast is None else broadcast
    loop = asyncio.get_running_loop()

    def build_disc(secs: int) -> bytes:
        return build_discover(identity, xid=ex.xid, secs=secs, broadcast=flag)

    def is_offer(msg: DhcpMessage) -> bool:
        return msg.message_type == OFFER

    first = await ex.run(build_disc, is_offer, "DHCPOFFER")
    offers = [first]
    if not parse_provisioning(first.options).found and offer_wait > 0:
        offers += await ex.more(is_offer, loop.time() + offer_wait)
    offer = next((o for o in offers if parse_provisioning(o.options).found), first)
    offer_info = parse_provisioning(offer.options, identity.vendor_class)
    problems = list(offer.problems)
    server_id = offer.server_id
    if server_id is None:
        # RFC 2131 §4.3.1: an OFFER MUST carry option 54; without it the device cannot
        # address its REQUEST to this server.
        problems.append("DHCPOFFER has no server identifier (option 54); REQUEST not sent")
        return _discover_result(ex, offer, offer, offer_info, offers, problems)
    requested = None if offer.yiaddr == "0.0.0.0" else offer.yiaddr

    def build_req(secs: int) -> bytes:
        return build_request(
            identity,
            xid=ex.xid,
            server_id=server_id,
            requested_ip=requested,
            secs=secs,
            broadcast=flag,
        )

    def is_answer(msg: DhcpMessage) -> bool:
        # Replies from other servers are not for this REQUEST (RFC 2131 §4.4.1).
        return msg.message_type in (ACK, NAK) and msg.server_id in (None, server_id)

    try:
        reply = await ex.run(build_req, is_answer, "DHCPACK/DHCPNAK")
    except NoAnswer as exc:
        problems.append(str(exc))
        return _discover_result(ex, offer, offer, offer_info, offers, problems)
    problems += reply.problems
    info = offer_info
    if reply.message_type == ACK:
        ack_info = parse_provisioning(reply.options, identity.vendor_class)
        if ack_info.found:
            info = ack_info
        if requested is not None and reply.yiaddr != requested:
            problems.append(f"DHCPACK yiaddr {reply.yiaddr} differs from offered {requested}")
    return _discover_result(ex, reply, offer, info, offers, problems)


def _discover_result(
    ex: _Exchange,
    reply: DhcpMessage,
    offer: DhcpMessage,
    info: ProvisioningInfo,
    offers: list[DhcpMessage],
    problems: list[str],
) -> DhcpResult:
    return DhcpResult(
        exchange="discover",
        xid=ex.xid,
        reply=reply,
        offer=offer,
        provisioning=info,
        sent=ex.sent,
        ignored=ex.ignored,
        offers=tuple(offers),
        problems=tuple(problems),
    )


async def discover_dhcp(
    identity: DeviceIdentity,
    transport: DhcpTransport,
    *,
    ciaddr: str | None = None,
    time_limit: float = 10.0,
    retry: RetryPolicy | None = None,
) -> ProvisioningInfo:
    """What a booting device learns by DHCP: INFORM when it has `ciaddr`, else DISCOVER.

    Raises NoAnswer when nothing came back (an unregistered MAC gets silence).
    """
    if ciaddr is not None:
        result = await inform(
            identity, transport, ciaddr=ciaddr, time_limit=time_limit, retry=retry
        )
    else:
        result = await discover_request(identity, transport, time_limit=time_limit, retry=retry)
    return result.provisioning
