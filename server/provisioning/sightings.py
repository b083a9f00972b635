"""Which address each registered MAC was last seen at over DHCP, and the reverse.

Provisioning compares a redemption's source address with it (a warning, or a refusal when the
config asks), and the mDNS responder uses it to learn a querier's MAC from its address. Pure and
bounded: `now` is passed in, the least recently seen entry goes first.
"""

from __future__ import annotations

from collections import OrderedDict


class Sightings:
    def __init__(self, max_entries: int = 100_000) -> None:
        self.max_entries = max_entries
        self._by_mac: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._by_ip: dict[str, str] = {}

    def saw(self, mac: str, ip: str, now: float) -> None:
        """`mac` was answered at address `ip`."""
        old = self._by_mac.pop(mac, None)
        if old is not None and self._by_ip.get(old[0]) == mac:
            del self._by_ip[old[0]]
        self._by_mac[mac] = (ip, now)
        self._by_ip[ip] = mac
        if len(self._by_mac) > self.max_entries:
            gone, (gone_ip, _) = self._by_mac.popitem(last=False)
            if self._by_ip.get(gone_ip) == gone:
                del self._by_ip[gone_ip]

    def ip_of(self, mac: str) -> str | None:
        entry = self._by_mac.get(mac)
        return entry[0] if entry else None

    def mac_of(self, ip: str) -> str | None:
        return self._by_ip.get(ip)

    def __len__(self) -> int:
        return len(self._by_mac)
