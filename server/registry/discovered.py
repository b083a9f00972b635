"""Devices seen on the LAN (DHCP, mDNS) but not registered, so an admin can register them.

Pure and bounded: `now` is passed in, and past `max_entries` a MAC is forgotten, so a flood of
random MACs costs a fixed amount of memory. Which one is a segmented LRU, as caches that must
survive a scan do: a MAC seen once waits in a probation segment, and its second sighting moves
it to a protected segment of at most 80 % of the list. Only probation's least recently seen
entry is ever forgotten (the protected segment's oldest is moved back to probation when it is
full), so spoofed MACs, each seen once, churn through probation while the devices that keep
asking (a real client retries DISCOVER) stay listed.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Iterator
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
    """Bounded map MAC -> SeenDevice (segmented LRU, see the module's note)."""

    PROTECTED_SHARE = 0.8

    def __init__(self, max_entries: int = 10_000) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, got {max_entries}")
        self.max_entries = max_entries
        self.max_protected = int(max_entries * self.PROTECTED_SHARE)
        self._once: OrderedDict[str, SeenDevice] = OrderedDict()  # probation, oldest first
        self._repeat: OrderedDict[str, SeenDevice] = OrderedDict()  # protected, oldest first
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
        old = self._repeat.pop(mac, None) or self._once.pop(mac, None)
        if old is None:
            entry = SeenDevice(mac, vc, interface, source, now, now, 1)
            self._once[mac] = entry
        else:
            entry = replace(
                old,
                vendor_class=vc or old.vendor_class,
                interface=interface or old.interface,
                source=source,
                last_seen=max(now, old.last_seen),
                count=old.count + 1,
            )
            self._repeat[mac] = entry
        self._fit()
        return entry

    def _fit(self) -> None:
        while len(self._repeat) > self.max_protected:
            mac, e = self._repeat.popitem(last=False)
            self._once[mac] = e
            self._once.move_to_end(mac, last=False)  # the oldest of probation: next to go
        while len(self._once) + len(self._repeat) > self.max_entries:
            self._once.popitem(last=False)
            self.evicted += 1

    def restore(self, entries: Iterable[SeenDevice]) -> None:
        """Load saved entries (oldest first keeps the LRU order), e.g. at start."""
        for e in sorted(entries, key=lambda e: e.last_seen):
            self._once.pop(e.mac, None)
            self._repeat.pop(e.mac, None)
            (self._repeat if e.count > 1 else self._once)[e.mac] = e
        self._fit()
        self.version += 1

    def remove(self, mac: str) -> bool:
        """Forget `mac` (it was registered); True if it was listed."""
        gone = (self._once.pop(mac, None) or self._repeat.pop(mac, None)) is not None
        if gone:
            self.version += 1
        return gone

    def remove_all(self, macs: Iterable[str]) -> None:
        """Forget every MAC in `macs` (they were registered)."""
        for mac in macs:
            self.remove(mac)

    def get(self, mac: str) -> SeenDevice | None:
        return self._repeat.get(mac) or self._once.get(mac)

    def macs(self) -> Iterator[str]:
        """Every MAC listed, in no order (cheaper than `recent` when only counting)."""
        yield from self._once
        yield from self._repeat

    def recent(self, limit: int | None = None) -> list[SeenDevice]:
        """Entries, most recently seen first."""
        items = sorted(
            (*self._once.values(), *self._repeat.values()),
            key=lambda e: e.last_seen,
            reverse=True,
        )
        return items if limit is None else items[:limit]

    def __len__(self) -> int:
        return len(self._once) + len(self._repeat)

    def __contains__(self, mac: object) -> bool:
        return mac in self._once or mac in self._repeat
