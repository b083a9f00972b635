"""The kernel neighbour table over rtnetlink (RTM_GETNEIGH), for IPv6 where /proc has none.

`neigh_dump_request` and `parse_neigh_dump` are pure (bytes in, values out; tests feed them
bytes); `NetlinkNeighbours` does the one socket exchange. Layouts from linux/netlink.h,
linux/rtnetlink.h and linux/neighbour.h.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import struct
from dataclasses import dataclass

from server.mdns.neighbours import CachedNeighbours

NLMSG_ERROR = 2
NLMSG_DONE = 3
RTM_NEWNEIGH = 28
RTM_GETNEIGH = 30
NLM_F_REQUEST = 0x01
NLM_F_DUMP = 0x300
NDA_DST = 1
NDA_LLADDR = 2
NUD_INCOMPLETE = 0x01
NUD_REACHABLE = 0x02
NUD_STALE = 0x04
NUD_FAILED = 0x20
NUD_NOARP = 0x40

_NLMSG = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_NDMSG = struct.Struct("=BBHiHBB")  # family, pad, pad, ifindex, state, flags, type
_RTA = struct.Struct("=HH")  # len, type


class NetlinkError(Exception):
    """The kernel answered the dump with an error, or the reply does not parse."""


@dataclass(frozen=True, slots=True)
class Neighbour:
    ifindex: int
    ip: str
    mac: str
    state: int


def _align(n: int) -> int:
    return (n + 3) & ~3


def neigh_dump_request(seq: int, family: int = socket.AF_INET6) -> bytes:
    """An RTM_GETNEIGH dump request for every neighbour of `family`."""
    body = _NDMSG.pack(family, 0, 0, 0, 0, 0, 0)
    return (
        _NLMSG.pack(_NLMSG.size + len(body), RTM_GETNEIGH, NLM_F_REQUEST | NLM_F_DUMP, seq, 0)
        + body
    )


def parse_neigh_dump(data: bytes, seq: int) -> tuple[list[Neighbour], bool]:
    """Neighbours with a usable link-layer address in one reply datagram, and whether it ended.

    Entries still being resolved (INCOMPLETE), failed ones and NOARP ones (multicast, loopback)
    are left out, as are messages for another sequence number.
    """
    out: list[Neighbour] = []
    pos = 0
    n = len(data)
    while pos + _NLMSG.size <= n:
        length, mtype, _flags, mseq, _pid = _NLMSG.unpack_from(data, pos)
        if length < _NLMSG.size or pos + length > n:
            raise NetlinkError(f"netlink message length {length} at {pos} does not fit")
        body = pos + _NLMSG.size
        end = pos + length
        pos += _align(length)
        if mseq != seq:
            continue
        if mtype == NLMSG_DONE:
            return out, True
        if mtype == NLMSG_ERROR:
            code = struct.unpack_from("=i", data, body)[0] if body + 4 <= end else 0
            if code:
                raise NetlinkError(f"RTM_GETNEIGH failed: errno {-code}")
            continue
        if mtype != RTM_NEWNEIGH or body + _NDMSG.size > end:
            continue
        family, _p1, _p2, ifindex, state, _f, _t = _NDMSG.unpack_from(data, body)
        dst: bytes | None = None
        lladdr: bytes | None = None
        at = body + _NDMSG.size
        while at + _RTA.size <= end:
            alen, atype = _RTA.unpack_from(data, at)
            if alen < _RTA.size or at + alen > end:
                break
            value = data[at + _RTA.size : at + alen]
            if atype == NDA_DST:
                dst = value
            elif atype == NDA_LLADDR:
                lladdr = value
            at += _align(alen)
        if dst is None or lladdr is None or len(lladdr) != 6:
            continue
        if state & (NUD_INCOMPLETE | NUD_FAILED | NUD_NOARP) or lladdr == b"\0" * 6:
            continue
        try:
            ip = str(ipaddress.ip_address(dst))
        except ValueError:
            continue
        out.append(Neighbour(ifindex, ip, lladdr.hex(":"), state))
    return out, False


def dump_neighbours(family: int = socket.AF_INET6, timeout: float = 1.0) -> list[Neighbour]:
    """Ask the kernel for its neighbour table of `family` (blocking, bounded by `timeout`)."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as sock:
        sock.settimeout(timeout)
        sock.bind((0, 0))
        seq = 1
        sock.send(neigh_dump_request(seq, family))
        found: list[Neighbour] = []
        while True:
            part, done = parse_neigh_dump(sock.recv(65536), seq)
            found.extend(part)
            if done:
                return found


class NetlinkNeighbours(CachedNeighbours):
    """The kernel's IPv6 neighbour table for one interface, read over rtnetlink (not /proc),
    re-read when stale or on a miss (see neighbours.CachedNeighbours)."""

    def __init__(
        self,
        interface: str | None,
        family: int = socket.AF_INET6,
        max_age: float = 2.0,
        miss_interval: float = 0.0,
    ) -> None:
        super().__init__(max_age, miss_interval)
        self._interface = interface
        self._family = family

    def read(self) -> dict[str, str]:
        ifindex = 0
        if self._interface:
            with contextlib.suppress(OSError):
                ifindex = socket.if_nametoindex(self._interface)
        try:
            entries = dump_neighbours(self._family)
        except (OSError, NetlinkError):
            entries = []
        return {e.ip: e.mac for e in entries if not ifindex or e.ifindex == ifindex}
