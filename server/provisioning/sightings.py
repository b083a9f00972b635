"""When and where each registered MAC was last seen, and which MAC holds each DHCP address.

Provisioning compares a redemption's source address with the DHCP address (a warning, or a
refusal when the config asks), the mDNS responder uses the reverse map to learn a querier's MAC
from its address, and the device page and API show the latest sighting: when, the address, the
vendor class (DHCP option 60), the interface, and how the MAC was known (a DHCP request's
chaddr, or for mDNS the frame, the static map, the neighbour table or a DHCP lease).

Pure and bounded: `now` is passed in, the least recently seen entry goes first. Cheap on the
DHCP hot path (one call per ACK): a MAC seen before has its entry updated in place, so a
sighting allocates nothing; option 60 is kept as the bytes the decoder made and turned into
text only when someone reads it. Only DHCP sightings feed the address -> MAC map: an mDNS
sighting never makes a later mDNS query's MAC look learned from a lease.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Literal

from server.registry.discovered import printable

Source = Literal["dhcp", "mdns"]
# How the MAC was known: a DHCP request's chaddr; for mDNS, server/mdns/neighbours.py's answer.
MacFrom = Literal["chaddr", "frame", "static", "neighbour", "lease", "unknown"]


@dataclass(frozen=True, slots=True)
class LastSeen:
    """A copy of one MAC's latest sighting, for readers (never changes under them)."""

    mac: str
    at: float  # epoch seconds
    ip: str  # the address it was seen at ("" if none was known)
    vendor_class: str  # DHCP option 60 as printable text ("" if it never sent one)
    interface: str
    source: Source
    mac_from: MacFrom


class _Entry:
    """One MAC's latest sighting, updated in place (see the module's note)."""

    __slots__ = ("at", "ip", "dhcp_ip", "vendor_class", "interface", "source", "mac_from")

    def __init__(self) -> None:
        self.at = 0.0
        self.ip = ""
        self.dhcp_ip = ""  # the key this MAC holds in Sightings._by_ip ("" if none)
        self.vendor_class = b""
        self.interface = ""
        self.source: Source = "dhcp"
        self.mac_from: MacFrom = "chaddr"


class Sightings:
    def __init__(self, max_entries: int = 100_000) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, got {max_entries}")
        self.max_entries = max_entries
        self._by_mac: OrderedDict[str, _Entry] = OrderedDict()
        self._by_ip: dict[str, str] = {}

    def _entry(self, mac: str) -> _Entry:
        entry = self._by_mac.get(mac)
        if entry is not None:
            self._by_mac.move_to_end(mac)
            return entry
        return self._new(mac)

    def _new(self, mac: str) -> _Entry:
        entry = self._by_mac[mac] = _Entry()
        if len(self._by_mac) > self.max_entries:
            gone, old = self._by_mac.popitem(last=False)
            if old.dhcp_ip and self._by_ip.get(old.dhcp_ip) == gone:
                del self._by_ip[old.dhcp_ip]
        return entry

    def saw(
        self,
        mac: str,
        ip: str | None,
        now: float,
        vendor_class: bytes | None = None,
        interface: str = "",
    ) -> None:
        """`mac` was answered over DHCP, using address `ip` (None: not known from this reply,
        e.g. a proxy-mode ACK; the previous address stays). A request without option 60 keeps
        the vendor class seen before."""
        # Called once per ACK: the lookups are inlined (measured: a third of its time).
        by_mac = self._by_mac
        entry = by_mac.get(mac)
        if entry is None:
            entry = self._new(mac)
        else:
            by_mac.move_to_end(mac)
        if ip is not None:
            old = entry.dhcp_ip
            if ip != old:
                by_ip = self._by_ip
                if old and by_ip.get(old) == mac:
                    del by_ip[old]
                by_ip[ip] = mac
                entry.dhcp_ip = ip
            entry.ip = ip
        entry.at = now
        if vendor_class:
            entry.vendor_class = vendor_class
        if interface:
            entry.interface = interface
        entry.source = "dhcp"
        entry.mac_from = "chaddr"

    def heard(self, mac: str, ip: str, now: float, *, interface: str, mac_from: MacFrom) -> None:
        """`mac`, a registered device, asked for our service over mDNS from `ip`; `mac_from`
        says how its MAC was learned (server/mdns/neighbours.py)."""
        entry = self._entry(mac)
        entry.at = now
        entry.ip = ip
        if interface:
            entry.interface = interface
        entry.source = "mdns"
        entry.mac_from = mac_from

    def last_seen(self, mac: str) -> LastSeen | None:
        e = self._by_mac.get(mac)
        if e is None:
            return None
        vc = printable(e.vendor_class) if e.vendor_class else ""
        return LastSeen(mac, e.at, e.ip, vc, e.interface, e.source, e.mac_from)

    def ip_of(self, mac: str) -> str | None:
        """The address `mac` was last given or seen using over DHCP."""
        entry = self._by_mac.get(mac)
        return entry.dhcp_ip or None if entry is not None else None

    def mac_of(self, ip: str) -> str | None:
        return self._by_ip.get(ip)

    def __len__(self) -> int:
        return len(self._by_mac)
