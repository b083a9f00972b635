"""Is another DHCP server on this segment? Ask like a client would, before full mode starts.

Two DHCP servers handing out leases on one segment give clients conflicting addresses, so
`imprint serve` in full mode first broadcasts a DHCPDISCOVER from a throwaway, locally
administered MAC and listens a bounded time for OFFERs (what ISC dhcpd's and Windows' "rogue
server detection" do). The frames go through an AF_PACKET socket, so the probe needs
CAP_NET_RAW only: no UDP port is bound and a DHCP client already on port 68 is not disturbed.

The packet builders and the reply parser below are pure (ids are passed in); `probe` is the
thin I/O part and `probe_segment` the policy `imprint serve` applies to the result.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import secrets
import select
import socket
import struct
import time
from dataclasses import dataclass, field

from server.config import ConfigError
from server.dhcp.codec import (
    BOOTREPLY,
    BOOTREQUEST,
    BROADCAST_FLAG,
    OPT_MESSAGE_TYPE,
    OPT_PARAM_REQUEST_LIST,
    OPT_SERVER_ID,
    ZERO_IP,
    DecodeError,
    DhcpMessage,
    MessageType,
    decode,
    encode,
    ip_text,
)

log = logging.getLogger("imprint.dhcp")

CLIENT_PORT = 68
SERVER_PORT = 67
PROBE_WAIT_S = 2.0  # how long to listen for OFFERs; servers answer within milliseconds
PROBE_SENDS = 2  # DISCOVERs sent, spread over the wait, in case one is lost
_ETH_P_IP = 0x0800
_PACKET_OUTGOING = 4
_BROADCAST_MAC = b"\xff" * 6
_IPPROTO_UDP = 17
_OPT_CLIENT_ID = 61
# Subnet mask, router, DNS, server id, lease time: what a real client asks for, so servers
# that only answer "complete" requests still answer this one.
_PRL = bytes((1, 3, 6, 51, 54))


class ProbeUnavailable(Exception):
    """The probe could not run (no privilege, no such interface); str(self) says what to fix."""


@dataclass(frozen=True, slots=True)
class ServerAnswer:
    """One OFFER heard in answer to the probe."""

    source_ip: str  # the IP source address of the OFFER
    source_mac: str  # the Ethernet source address it came from
    server_id: str  # option 54, or "" when absent
    offered: str  # yiaddr; 0.0.0.0 for a proxy-DHCP OFFER that leases nothing

    @property
    def leases_addresses(self) -> bool:
        """Whether this server hands out addresses (a proxyDHCP server does not, RFC 4578)."""
        return self.offered != "0.0.0.0"

    def describe(self) -> str:
        sid = f"server id {self.server_id}, " if self.server_id else ""
        return f"{self.source_ip} ({sid}MAC {self.source_mac}, offered {self.offered})"


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """What one probe on one interface heard."""

    interface: str
    mac: str  # the throwaway client MAC the DISCOVERs carried
    xid: int
    answers: tuple[ServerAnswer, ...] = field(default=())

    @property
    def leasing_servers(self) -> tuple[ServerAnswer, ...]:
        """Answers from servers that offered an address: the ones full mode would fight."""
        return tuple(a for a in self.answers if a.leases_addresses)


def probe_mac(rand: bytes) -> bytes:
    """02:00:00 + three octets of `rand`: locally administered, unicast (IEEE 802 U/L bit)."""
    if len(rand) != 3:
        raise ValueError("need 3 random octets")
    return b"\x02\x00\x00" + rand


def discover_payload(mac: bytes, xid: int, secs: int = 0) -> bytes:
    """A DHCPDISCOVER from `mac` with the broadcast flag set, so OFFERs come back broadcast.

    The flag matters: the probe's MAC is not the interface's, so a unicast OFFER to it would
    never reach us (RFC 2131 §4.1: flag set -> reply to 255.255.255.255).
    """
    msg = DhcpMessage(
        op=BOOTREQUEST,
        xid=xid,
        chaddr=mac,
        secs=secs,
        flags=BROADCAST_FLAG,
        options={
            OPT_MESSAGE_TYPE: bytes((MessageType.DISCOVER,)),
            _OPT_CLIENT_ID: b"\x01" + mac,  # RFC 2132 §9.14: type 1 (Ethernet) + MAC
            OPT_PARAM_REQUEST_LIST: _PRL,
        },
    )
    return encode(msg)


def _checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071): ones' complement of the ones' complement sum."""
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ipv4_udp(payload: bytes, src: bytes, dst: bytes, sport: int, dport: int) -> bytes:
    """An IPv4 datagram (no options, TTL 64, DF clear) carrying one UDP datagram."""
    ulen = 8 + len(payload)
    pseudo = src + dst + struct.pack("!BBH", 0, _IPPROTO_UDP, ulen)
    udp = struct.pack("!HHHH", sport, dport, ulen, 0) + payload
    csum = _checksum(pseudo + udp) or 0xFFFF  # RFC 768: a computed 0 is sent as all ones
    udp = udp[:6] + struct.pack("!H", csum) + udp[8:]
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + ulen, 0, 0, 64, _IPPROTO_UDP, 0, src, dst)
    header = header[:10] + struct.pack("!H", _checksum(header)) + header[12:]
    return header + udp


def discover_datagram(mac: bytes, xid: int, secs: int = 0) -> bytes:
    """The probe as an IP datagram: 0.0.0.0:68 -> 255.255.255.255:67, as a client without an
    address sends it (RFC 2131 §4.1)."""
    return ipv4_udp(
        discover_payload(mac, xid, secs), ZERO_IP, b"\xff\xff\xff\xff", CLIENT_PORT, SERVER_PORT
    )


def parse_offer(datagram: bytes, xid: int, mac: bytes, source_mac: bytes) -> ServerAnswer | None:
    """The OFFER in this IPv4 datagram if it answers our DISCOVER (`xid`, `mac`), else None.

    Checksums are not verified: a reply from a local veth may carry a partial checksum that the
    receiving stack never fills in (checksum offload), and the DHCP decode checks the content.
    """
    if len(datagram) < 28 or datagram[0] >> 4 != 4 or datagram[9] != _IPPROTO_UDP:
        return None
    ihl = (datagram[0] & 0x0F) * 4
    total = struct.unpack_from("!H", datagram, 2)[0]
    if ihl < 20 or total > len(datagram) or total < ihl + 8:
        return None
    if struct.unpack_from("!H", datagram, 6)[0] & 0x3FFF:
        return None  # a fragment: OFFERs fit one frame (RFC 2131 §2: 576 octets unless asked)
    _sport, dport, ulen = struct.unpack_from("!HHH", datagram, ihl)
    if dport != CLIENT_PORT or ulen < 8 or ihl + ulen > total:
        return None
    try:
        msg = decode(datagram[ihl + 8 : ihl + ulen])
    except DecodeError:
        return None
    if msg.op != BOOTREPLY or msg.xid != xid or msg.chaddr != mac:
        return None
    if msg.msg_type != MessageType.OFFER:
        return None
    sid = msg.options.get(OPT_SERVER_ID, b"")
    return ServerAnswer(
        source_ip=ip_text(datagram[12:16]),
        source_mac=source_mac.hex(":"),
        server_id=ip_text(sid) if len(sid) == 4 else "",
        offered=ip_text(msg.yiaddr),
    )


def probe(
    interface: str,
    *,
    wait: float = PROBE_WAIT_S,
    sends: int = PROBE_SENDS,
    mac: bytes | None = None,
    xid: int | None = None,
) -> ProbeResult:
    """Broadcast DHCPDISCOVERs on `interface`, collect OFFERs for `wait` seconds (blocking).

    Raises ProbeUnavailable when the probe cannot run (needs CAP_NET_RAW; the interface must
    exist). Run it in a thread from async code (`probe_segment` does).
    """
    mac = mac if mac is not None else probe_mac(secrets.token_bytes(3))
    xid = xid if xid is not None else secrets.randbits(32)
    try:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(_ETH_P_IP))
    except PermissionError as e:
        raise ProbeUnavailable(
            f"cannot probe {interface} for other DHCP servers: opening a packet socket needs "
            f"CAP_NET_RAW ({e.strerror}); run with AmbientCapabilities=CAP_NET_RAW (see "
            "configs/imprint.service)"
        ) from e
    answers: dict[tuple[str, str], ServerAnswer] = {}
    try:
        try:
            sock.bind((interface, _ETH_P_IP))
        except OSError as e:
            what = "no such interface" if e.errno == errno.ENODEV else e.strerror
            raise ProbeUnavailable(
                f"cannot probe {interface} for other DHCP servers: {what}; check [dhcp] interface"
            ) from e
        start = time.monotonic()
        deadline = start + wait
        sends = max(1, sends)
        sent = 0
        while True:
            now = time.monotonic()
            if sent < sends and now >= start + sent * wait / sends:
                secs = int(now - start)
                try:
                    sock.sendto(
                        discover_datagram(mac, xid, secs),
                        (interface, _ETH_P_IP, 0, 0, _BROADCAST_MAC),
                    )
                except OSError as e:
                    raise ProbeUnavailable(
                        f"cannot probe {interface} for other DHCP servers: sending failed "
                        f"({e.strerror}); is the interface up?"
                    ) from e
                sent += 1
                continue
            if now >= deadline:
                break
            next_send = start + sent * wait / sends if sent < sends else deadline
            ready, _, _ = select.select([sock], [], [], max(0.0, min(deadline, next_send) - now))
            if not ready:
                continue
            try:
                data, addr = sock.recvfrom(65535)
            except OSError as e:
                raise ProbeUnavailable(
                    f"cannot probe {interface} for other DHCP servers: receiving failed "
                    f"({e.strerror})"
                ) from e
            if addr[2] == _PACKET_OUTGOING:
                continue  # our own DISCOVER, looped back to packet sockets
            answer = parse_offer(data, xid, mac, bytes(addr[4][:6]))
            if answer is not None:
                answers.setdefault((answer.source_ip, answer.server_id), answer)
    finally:
        sock.close()
    return ProbeResult(interface, mac.hex(":"), xid, tuple(answers.values()))


def _is_loopback_host(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


async def probe_segment(
    interface: str | None, host: str, *, wait: float = PROBE_WAIT_S
) -> ProbeResult | None:
    """Refuse (ConfigError) when another DHCP server leases addresses on the segment, or when
    the probe cannot run; None when there is no segment to probe (a loopback lab)."""
    override = "start with `imprint serve --no-dhcp-probe` to skip this check"
    if interface is None:
        if _is_loopback_host(host):
            log.info("DHCP full mode on loopback %s: no segment to probe for other servers", host)
            return None
        raise ConfigError(
            "dhcp.interface: full mode probes the site VLAN for another DHCP server before it "
            f"starts, and needs to know which interface that is; set it, or {override}"
        )
    try:
        result = await asyncio.to_thread(probe, interface, wait=wait)
    except ProbeUnavailable as e:
        raise ConfigError(f"{e}; or {override}") from e
    rivals = result.leasing_servers
    for a in result.answers:
        if not a.leases_addresses:
            log.info("proxy DHCP server on %s (leases nothing): %s", interface, a.describe())
    if rivals:
        raise ConfigError(
            f"another DHCP server answers on {interface}: "
            + "; ".join(a.describe() for a in rivals)
            + ". Two servers leasing on one segment hand out conflicting addresses: stop it, or "
            f"run Imprint beside it with [dhcp] mode = 'inform' or 'proxy', or {override}"
        )
    log.info(
        "no other DHCP server answered on %s within %.1f s (probe MAC %s)",
        interface,
        wait,
        result.mac,
    )
    return result
