"""Ethernet frames carrying mDNS queries: the kernel filter and the parser. Pure, no sockets.

The querier's MAC is only in the Ethernet header, which a UDP socket never shows. The transport
reads whole frames from an AF_PACKET socket that a classic BPF program (`mdns_filter`) limits in
the kernel to UDP with destination port 5353 over IPv4 and IPv6, untagged or with one 802.1Q tag,
and answers from the frame alone (`parse_frame` gives the MAC, addresses, ports and the DNS
payload), so no frame ever has to be matched to a datagram read from another socket.

`parse_frame` checks what the kernel's IP and UDP input would check before a datagram reaches a
socket, except checksums (the Ethernet FCS already covered the frame): versions, header and total
lengths, no fragments, UDP length. Every refusal is a FrameError with a stable reason. Addresses
are written as text by `inet_ntop` (a pure formatter), as a UDP socket's recvfrom writes them.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import StrEnum
from socket import AF_INET as _AF_INET
from socket import AF_INET6 as _AF_INET6
from socket import inet_ntop as _ntop

ETH_HEADER = 14
ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
ETH_P_8021Q = 0x8100
ETH_P_8021AD = 0x88A8
IPPROTO_UDP = 17
MDNS_PORT = 5353
IPV6_HEADER = 40
UDP_HEADER = 8

# A frame the filter passes is cut to this many bytes; mDNS packets stay under 9000 (RFC 6762
# §17), so nothing we could answer is lost.
SNAP_LEN = 9216


class FrameReason(StrEnum):
    """Stable reason codes for a captured frame we cannot use."""

    SHORT = "MDNS_FRAME_SHORT"  # ends inside a header
    NOT_IP = "MDNS_FRAME_NOT_IP"  # EtherType is neither IPv4 nor IPv6 (after one VLAN tag)
    BAD_IP = "MDNS_FRAME_BAD_IP"  # wrong version, header length or total length
    FRAGMENT = "MDNS_FRAME_FRAGMENT"  # an IPv4 fragment: the kernel reassembles, we do not
    NOT_UDP = "MDNS_FRAME_NOT_UDP"  # next protocol is not UDP (IPv6 extension headers included)
    BAD_UDP = "MDNS_FRAME_BAD_UDP"  # UDP length disagrees with the IP length
    NOT_MDNS = "MDNS_FRAME_NOT_MDNS"  # destination port is not 5353
    BAD_MAC = "MDNS_FRAME_BAD_MAC"  # source MAC is multicast or zero: no one device sent it


class FrameError(Exception):
    """A captured frame we cannot use; `reason` is a stable FrameReason."""

    def __init__(self, reason: FrameReason, detail: str = "") -> None:
        super().__init__(f"{reason.value}: {detail}" if detail else reason.value)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class FrameDatagram:
    """The UDP datagram inside one Ethernet frame, with the frame's source MAC."""

    src_mac: str  # aa:bb:cc:dd:ee:ff
    vlan: int | None  # 802.1Q VLAN id when the frame carried a tag
    version: int  # 4 or 6
    src_ip: str
    dst_ip: str
    src_port: int
    dst_port: int
    hop_limit: int  # IPv4 TTL or IPv6 hop limit
    payload: bytes


_IP4 = struct.Struct("!BBHHHBBH4s4s")
_IP6 = struct.Struct("!IHBB16s16s")
_UDP = struct.Struct("!HHHH")


def parse_frame(frame: bytes) -> FrameDatagram:
    """Decode Ethernet (+ one 802.1Q tag) / IPv4 or IPv6 / UDP; raise FrameError if unusable."""
    n = len(frame)
    if n < ETH_HEADER:
        raise FrameError(FrameReason.SHORT, f"{n} bytes, shorter than an Ethernet header")
    src = frame[6:12]
    if src[0] & 0x01 or src == b"\0\0\0\0\0\0":
        raise FrameError(FrameReason.BAD_MAC, src.hex(":"))
    ethertype = (frame[12] << 8) | frame[13]
    off = ETH_HEADER
    vlan: int | None = None
    if ethertype in (ETH_P_8021Q, ETH_P_8021AD):
        if n < off + 4:
            raise FrameError(FrameReason.SHORT, "VLAN tag cut short")
        vlan = ((frame[14] << 8) | frame[15]) & 0x0FFF
        ethertype = (frame[16] << 8) | frame[17]
        off += 4
    if ethertype == ETH_P_IP:
        if n < off + 20:
            raise FrameError(FrameReason.SHORT, "IPv4 header cut short")
        vihl, _tos, total, _ident, frag, ttl, proto, _csum, s, d = _IP4.unpack_from(frame, off)
        ihl = (vihl & 0x0F) * 4
        if vihl >> 4 != 4 or ihl < 20:
            raise FrameError(FrameReason.BAD_IP, f"version/IHL byte {vihl:#04x}")
        if total < ihl + UDP_HEADER or off + total > n:
            raise FrameError(FrameReason.BAD_IP, f"total length {total}, frame holds {n - off}")
        if frag & 0x3FFF:  # MF flag or a fragment offset
            raise FrameError(FrameReason.FRAGMENT)
        if proto != IPPROTO_UDP:
            raise FrameError(FrameReason.NOT_UDP, f"protocol {proto}")
        udp = off + ihl
        end = off + total
        version = 4
        src_ip = _ntop(_AF_INET, s)
        dst_ip = _ntop(_AF_INET, d)
        hop = ttl
    elif ethertype == ETH_P_IPV6:
        if n < off + IPV6_HEADER:
            raise FrameError(FrameReason.SHORT, "IPv6 header cut short")
        vtf, plen, nxt, hop, s, d = _IP6.unpack_from(frame, off)
        if vtf >> 28 != 6:
            raise FrameError(FrameReason.BAD_IP, f"version {vtf >> 28}")
        if plen < UDP_HEADER or off + IPV6_HEADER + plen > n:
            raise FrameError(FrameReason.BAD_IP, f"payload length {plen}")
        if nxt != IPPROTO_UDP:
            # mDNS queries carry no extension headers; a jumbogram or fragment is not for us.
            raise FrameError(FrameReason.NOT_UDP, f"next header {nxt}")
        udp = off + IPV6_HEADER
        end = udp + plen
        version = 6
        src_ip = _ntop(_AF_INET6, s)
        dst_ip = _ntop(_AF_INET6, d)
    else:
        raise FrameError(FrameReason.NOT_IP, f"EtherType {ethertype:#06x}")
    sport, dport, ulen, _ucsum = _UDP.unpack_from(frame, udp)
    if ulen < UDP_HEADER or udp + ulen > end:
        raise FrameError(FrameReason.BAD_UDP, f"UDP length {ulen}, IP carries {end - udp}")
    if dport != MDNS_PORT:
        raise FrameError(FrameReason.NOT_MDNS, f"destination port {dport}")
    return FrameDatagram(
        src_mac=src.hex(":"),
        vlan=vlan,
        version=version,
        src_ip=src_ip,
        dst_ip=dst_ip,
        src_port=sport,
        dst_port=dport,
        hop_limit=hop,
        payload=bytes(frame[udp + UDP_HEADER : udp + ulen]),
    )


# Classic BPF (linux/filter.h): (code, jt, jf, k) per instruction.
BpfInsn = tuple[int, int, int, int]
BPF_LD_H_ABS = 0x28
BPF_LD_B_ABS = 0x30
BPF_LD_H_IND = 0x48
BPF_LDX_B_MSH = 0xB1
BPF_JEQ_K = 0x15
BPF_JSET_K = 0x45
BPF_RET_K = 0x06


def mdns_filter(port: int = MDNS_PORT) -> tuple[BpfInsn, ...]:
    """A classic BPF program passing UDP to `port` over IPv4/IPv6, untagged or 802.1Q-tagged.

    IPv4 fragments are refused (the UDP header is only in the first one, and only the kernel
    reassembles), as are IPv6 packets with extension headers. Accepted frames are cut to SNAP_LEN.
    """
    # Written with symbolic jump targets, then resolved: jt/jf count instructions to skip.
    prog: list[tuple[int, str | int, str | int, int]] = []
    labels: dict[str, int] = {}

    def label(name: str) -> None:
        labels[name] = len(prog)

    def op(code: int, k: int, jt: str | int = 0, jf: str | int = 0) -> None:
        prog.append((code, jt, jf, k))

    op(BPF_LD_H_ABS, 12)
    op(BPF_JEQ_K, ETH_P_IP, "v4_0", 0)
    op(BPF_JEQ_K, ETH_P_IPV6, "v6_0", 0)
    op(BPF_JEQ_K, ETH_P_8021Q, "vlan", "drop")
    label("vlan")
    op(BPF_LD_H_ABS, 16)
    op(BPF_JEQ_K, ETH_P_IP, "v4_4", 0)
    op(BPF_JEQ_K, ETH_P_IPV6, "v6_4", "drop")
    for o in (0, 4):
        ip = ETH_HEADER + o
        label(f"v4_{o}")
        op(BPF_LD_B_ABS, ip + 9)  # protocol
        op(BPF_JEQ_K, IPPROTO_UDP, 0, "drop")
        op(BPF_LD_H_ABS, ip + 6)  # flags and fragment offset
        op(BPF_JSET_K, 0x3FFF, "drop", 0)
        op(BPF_LDX_B_MSH, ip)  # X = 4 * IHL
        op(BPF_LD_H_IND, ip + 2)  # UDP destination port at ip + IHL + 2
        op(BPF_JEQ_K, port, "accept", "drop")
        label(f"v6_{o}")
        op(BPF_LD_B_ABS, ip + 6)  # next header
        op(BPF_JEQ_K, IPPROTO_UDP, 0, "drop")
        op(BPF_LD_H_ABS, ip + IPV6_HEADER + 2)
        op(BPF_JEQ_K, port, "accept", "drop")
    label("accept")
    op(BPF_RET_K, SNAP_LEN)
    label("drop")
    op(BPF_RET_K, 0)

    out: list[BpfInsn] = []
    for i, (code, jt, jf, k) in enumerate(prog):

        def skip(target: str | int, at: int = i) -> int:
            if isinstance(target, int):
                return target
            dist = labels[target] - at - 1
            assert 0 <= dist < 256, target
            return dist

        out.append((code, skip(jt), skip(jf), k))
    return tuple(out)


def pack_filter(program: tuple[BpfInsn, ...]) -> bytes:
    """The program as an array of struct sock_filter, for struct sock_fprog."""
    return b"".join(struct.pack("=HBBI", code, jt, jf, k) for code, jt, jf, k in program)
