"""Learning the querier's MAC from its source address, and which networks are on our link.

An mDNS query arrives as a UDP datagram: the socket gives us the source IP, not the MAC that
policy decides on. `NeighbourResolver.resolve` tries, in order:

1. the MAC from the query's own Ethernet frame, when the transport captures raw frames
   (AF_PACKET; `frame_mac` argument): the only source that is right for a host we never spoke to;
2. a static map `[mdns] static_neighbours = {"127.0.0.1" = "02:00:5e:00:01:01"}`;
3. the kernel neighbour table: /proc/net/arp for IPv4, rtnetlink (server.mdns.netlink) for IPv6;
4. a callback the composition root wires to the DHCP lease table (full mode) or to the MACs seen
   in DHCP requests.

Lab mode on loopback: there is no L2 on `lo`, so nothing can be learned. The lab config sets
`[mdns] interface = "lo"` (on-link networks become 127.0.0.0/8 and ::1/128) and lists each lab
"device" in `static_neighbours`, one loopback address per emulated device (127.0.0.2, 127.0.0.3, ...
all reach `lo` on Linux). A single `lab_loopback_mac` would make every local process the same
device; the map keeps distinct devices distinct and needs no special case in the code: it is the
same lookup a site could use for a host with a fixed address. A static entry outranks the kernel
table, so keep it empty outside the lab.

Reading /proc is I/O, kept out of the pure parsers (`parse_*`), which tests feed with text.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import socket
import struct
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Literal, Protocol

from server.core.mac import MacError, normalize_mac

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
LeaseLookup = Callable[[str], str | None]
Source = Literal["frame", "static", "neighbour", "lease", "unknown"]

_ATF_COM = 0x02  # completed entry (linux/if_arp.h)
_RTF_UP = 0x0001
_RTF_GATEWAY = 0x0002
_RTF_LOCAL = 0x80000000  # IPv6: a route to one of our own addresses
_SIOCGIFADDR = 0x8915  # linux/sockios.h
_IFA_F_DADFAILED = 0x08
_IFA_F_TENTATIVE = 0x40
LOOPBACK_NETWORKS: tuple[Network, ...] = (
    ipaddress.IPv4Network("127.0.0.0/8"),
    ipaddress.IPv6Network("::1/128"),
)


class NeighbourConfigError(ValueError):
    """A static neighbour entry in our own config is unusable; the message names it."""


def parse_proc_net_arp(text: str, interface: str | None = None) -> dict[str, str]:
    """Map IPv4 address -> normalised MAC from /proc/net/arp text (complete entries only)."""
    out: dict[str, str] = {}
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 6:
            continue
        ip, _hwtype, flags, mac, _mask, device = fields[:6]
        if interface is not None and device != interface:
            continue
        try:
            if not int(flags, 16) & _ATF_COM:
                continue
            out[str(ipaddress.IPv4Address(ip))] = normalize_mac(mac)
        except (ValueError, MacError):
            continue  # incomplete (00:00:...), odd hardware types: not a device we can name
    return out


def parse_proc_net_route(
    text: str, interface: str | None = None, byteorder: Literal["little", "big"] | None = None
) -> list[ipaddress.IPv4Network]:
    """IPv4 networks reached without a gateway (on-link), from /proc/net/route text."""
    order: Literal["little", "big"] = byteorder or sys.byteorder
    nets: list[ipaddress.IPv4Network] = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 8:
            continue
        device, dest, gateway, flags, mask = fields[0], fields[1], fields[2], fields[3], fields[7]
        if interface is not None and device != interface:
            continue
        try:
            f = int(flags, 16)
            # The kernel prints the network-order words as host-order integers.
            d = int(dest, 16).to_bytes(4, order)
            m = int(mask, 16).to_bytes(4, order)
            g = int(gateway, 16)
        except ValueError:
            continue
        if not f & _RTF_UP or f & _RTF_GATEWAY or g != 0 or m == b"\0\0\0\0":
            continue  # via a router, or a default route: not on-link
        try:
            nets.append(ipaddress.IPv4Network((d, ipaddress.IPv4Address(m).compressed)))
        except ValueError:
            continue
    return nets


def parse_proc_net_ipv6_route(
    text: str, interface: str | None = None
) -> list[ipaddress.IPv6Network]:
    """IPv6 on-link prefixes (no next hop, not our own addresses, not multicast)."""
    nets: list[ipaddress.IPv6Network] = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 10:
            continue
        dest, plen, nexthop, flags, device = fields[0], fields[1], fields[4], fields[8], fields[9]
        if interface is not None and device != interface:
            continue
        try:
            f = int(flags, 16)
            prefix = int(plen, 16)
            net = ipaddress.IPv6Network((bytes.fromhex(dest), prefix))
            hop = int(nexthop, 16)
        except ValueError:
            continue
        if not f & _RTF_UP or f & (_RTF_GATEWAY | _RTF_LOCAL) or hop != 0:
            continue
        if prefix == 0 or net.is_multicast:
            continue
        nets.append(net)
    return nets


def interface_networks(interface: str | None, proc: Path = Path("/proc")) -> list[Network]:
    """On-link networks of `interface` (all interfaces if None); loopback has its own."""
    if interface == "lo":
        return list(LOOPBACK_NETWORKS)
    nets: list[Network] = []
    with contextlib.suppress(OSError):
        nets.extend(parse_proc_net_route((proc / "net/route").read_text(), interface))
    with contextlib.suppress(OSError):  # no file when IPv6 is disabled
        nets.extend(parse_proc_net_ipv6_route((proc / "net/ipv6_route").read_text(), interface))
    return nets


def parse_if_inet6(text: str, interface: str) -> list[ipaddress.IPv6Address]:
    """Global and link-local IPv6 addresses of `interface` from /proc/net/if_inet6 text."""
    out: list[ipaddress.IPv6Address] = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 6 or fields[5] != interface:
            continue
        try:
            addr = ipaddress.IPv6Address(bytes.fromhex(fields[0]))
            flags = int(fields[4], 16)
        except ValueError:
            continue
        if flags & (_IFA_F_TENTATIVE | _IFA_F_DADFAILED) or addr.is_loopback:
            continue
        out.append(addr)
    return out


def interface_addresses(
    interface: str, proc: Path = Path("/proc"), *, link_local: bool = False
) -> list[str]:
    """Addresses to advertise in A/AAAA for `interface`: its primary IPv4, then IPv6.

    Link-local IPv6 addresses only with `link_local`: an AAAA record carries no scope, so it is
    right only in an answer sent on that one link (mDNS answers are: RFC 6762 §6.2, §15).
    Returns [] if the interface has no address.
    """
    out: list[str] = []
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("256s", interface.encode()[:15])
        res = fcntl.ioctl(s.fileno(), _SIOCGIFADDR, req)
        out.append(socket.inet_ntoa(res[20:24]))  # ifreq: name[16], sockaddr_in (port at 18)
    with contextlib.suppress(OSError):
        text = (proc / "net/if_inet6").read_text()
        out.extend(
            str(a) for a in parse_if_inet6(text, interface) if link_local or not a.is_link_local
        )
    return out


def parse_static_neighbours(entries: Mapping[str, str]) -> dict[str, str]:
    """Validate `{ip: mac}` from config -> `{normalised ip: normalised mac}`."""
    out: dict[str, str] = {}
    for ip, mac in entries.items():
        try:
            key = str(ipaddress.ip_address(ip))
        except ValueError as e:
            raise NeighbourConfigError(f"[mdns] static_neighbours: {ip!r} is not an IP") from e
        try:
            out[key] = normalize_mac(mac)
        except MacError as e:
            raise NeighbourConfigError(f"[mdns] static_neighbours[{ip!r}]: {e}") from e
    return out


class CachedNeighbours:
    """A kernel neighbour table read whole, re-read at most every `max_age` s and on a miss.

    A miss re-reads at once by default: a host that has just talked to us is in the kernel's
    table before its first query arrives, and a client that asks only once must be answered.
    The service's per-source token bucket runs before the lookup, so misses are already bounded.
    Subclasses say how the table is read (`read`: ip -> MAC).
    """

    def __init__(self, max_age: float = 2.0, miss_interval: float = 0.0) -> None:
        self._max_age = max_age
        self._miss_interval = miss_interval
        self._table: dict[str, str] = {}
        self._read_at = float("-inf")

    def read(self) -> dict[str, str]:
        raise NotImplementedError

    def _refresh(self, now: float) -> None:
        self._table = self.read()
        self._read_at = now

    def lookup(self, ip: str, now: float) -> str | None:
        """MAC for `ip` (an IPv6 scope suffix is ignored), or None; `now` is monotonic seconds."""
        ip = ip.split("%", 1)[0]
        if now - self._read_at >= self._max_age:
            self._refresh(now)
        mac = self._table.get(ip)
        if mac is None and now - self._read_at >= self._miss_interval:
            self._refresh(now)
            mac = self._table.get(ip)
        return mac


class KernelNeighbours(CachedNeighbours):
    """The kernel's IPv4 neighbour table (/proc/net/arp), for one interface or all."""

    def __init__(
        self,
        interface: str | None = None,
        path: Path = Path("/proc/net/arp"),
        max_age: float = 2.0,
        miss_interval: float = 0.0,
    ) -> None:
        super().__init__(max_age, miss_interval)
        self._interface = interface
        self._path = path

    def read(self) -> dict[str, str]:
        try:
            return parse_proc_net_arp(self._path.read_text(), self._interface)
        except OSError:
            return {}


class NeighbourTable(Protocol):
    def lookup(self, ip: str, now: float) -> str | None: ...


class NeighbourResolver:
    """Source IP -> MAC, trying the frame, the static map, the kernel table, then the leases."""

    def __init__(
        self,
        *,
        static: Mapping[str, str] | None = None,
        kernel: NeighbourTable | None = None,
        kernel6: NeighbourTable | None = None,
        leases: LeaseLookup | None = None,
    ) -> None:
        self._static = parse_static_neighbours(static or {})
        self._kernel = kernel
        self._kernel6 = kernel6
        self._leases = leases

    def resolve(
        self, ip: str, now: float, frame_mac: str | None = None
    ) -> tuple[str | None, Source]:
        """Return (normalised MAC or None, where it came from)."""
        if frame_mac is not None:
            return frame_mac, "frame"
        ip = ip.split("%", 1)[0]
        mac = self._static.get(ip)
        if mac is not None:
            return mac, "static"
        table = self._kernel6 if ":" in ip else self._kernel
        if table is not None:
            mac = table.lookup(ip, now)
            if mac is not None:
                return mac, "neighbour"
        if self._leases is not None:
            found = self._leases(ip)
            if found is not None:
                try:
                    return normalize_mac(found), "lease"
                except MacError:
                    pass
        return None, "unknown"
