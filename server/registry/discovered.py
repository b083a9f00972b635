"""Devices seen on the LAN (DHCP, mDNS) but not registered, so an admin can register them.

Pure and bounded: `now` is passed in, and past `max_entries` the least recently seen MAC is
forgotten, so a flood of random MACs costs a fixed amount of memory.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Literal

Source = Literal["dhcp", "mdns"]
_MAX_VENDOR_CLASS = 128


@dataclass(frozen=True, slots=True)
class SeenDevice:
    mac: str
    vendor_class: str  # option 60 as printable text ("" when none was sent)
    interface: str
    source: Source  # protocol of the latest sighting
    first_seen: float
    last_seen: float
    count: int


def printable(raw: bytes | str, limit: int = _MAX_VENDOR_CLASS) -> str:
    """Peer-supplied bytes as safe one-line text: non-printables become '?', length capped."""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    return "".join(c if c.isprintable() and c != "\ufffd" else "?" for c in text[:limit])


class DiscoveredDevices:
    """LRU-bounded map MAC -> SeenDevice."""

    def __init__(self, max_entries: int = 10_000) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, got {max_entries}")
        self.max_entries = max_entries
        self._seen: OrderedDict[str, SeenDevice] = OrderedDict()
        self.evicted = 0
        self.version = 0  # bumped on every change, so a saver knows when to save

    def record(
        self,
        mac: str,
        *,
        source: Source,
        interface: str,
        now: float,
        vendor_class: bytes | str | None = None,
    ) -> SeenDevice:
        """Note a sighting of the normalised `mac`; a later non-empty vendor class replaces one."""
        self.version += 1
        vc = printable(vendor_class) if vendor_class else ""
        old = self._seen.get(mac)
        if old is None:
            entry = SeenDevice(mac, vc, interface, source, now, now, 1)
            self._seen[mac] = entry
            if len(self._seen) > self.max_entries:
                self._seen.popitem(last=False)
                self.evicted += 1
            return entry
        entry = replace(
            old,
            vendor_class=vc or old.vendor_class,
            interface=interface or old.interface,
            source=source,
            last_seen=max(now, old.last_seen),
            count=old.count + 1,
        )
        self._seen[mac] = entry
        self._seen.move_to_end(mac)
        return entry

    def restore(self, entries: Iterable[SeenDevice]) -> None:
        """Load saved entries (oldest first keeps the LRU order), e.g. at start."""
        for e in sorted(entries, key=lambda e: e.last_seen):
            self._seen[e.mac] = e
            self._seen.move_to_end(e.mac)
        while len(self._seen) > self.max_entries:
            self._seen.popitem(last=False)
        self.version += 1

    def remove(self, mac: str) -> bool:
        """Forget `mac` (it was registered); True if it was listed."""
        gone = self._seen.pop(mac, None) is not None
        if gone:
            self.version += 1
        return gone

    def remove_all(self, macs: Iterable[str]) -> None:
        """Forget every MAC in `macs` (they were registered)."""
        for mac in macs:
            self.remove(mac)

    def get(self, mac: str) -> SeenDevice | None:
        return self._seen.get(mac)

    def recent(self, limit: int | None = None) -> list[SeenDevice]:
        """Entries, most recently seen first."""
        items = sorted(self._seen.values(), key=lambda e: e.last_seen, reverse=True)
        return items if limit is None else items[:limit]

    def __len__(self) -> int:
        return len(self._seen)

    def __contains__(self, mac: object) -> bool:
        return mac in self._seen
