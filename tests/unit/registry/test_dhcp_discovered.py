"""The bounded "seen but not registered" list shared by DHCP and mDNS."""

from __future__ import annotations

import pytest

from server.registry.discovered import DiscoveredDevices, printable

A, B, C, D = (f"02:00:5e:00:01:0{i}" for i in range(1, 5))


def test_first_sighting_then_updates_keep_first_seen_and_count() -> None:
    d = DiscoveredDevices()
    d.record(A, source="dhcp", interface="eth0", now=10.0, vendor_class=b"yealink")
    entry = d.record(A, source="mdns", interface="eth0", now=25.0)
    assert (entry.first_seen, entry.last_seen, entry.count) == (10.0, 25.0, 2)
    assert entry.vendor_class == "yealink"  # an mDNS sighting has none: keep the DHCP one
    assert entry.source == "mdns"
    entry = d.record(A, source="dhcp", interface="eth1", now=30.0, vendor_class="Polycom-VVX")
    assert (entry.vendor_class, entry.interface, entry.count) == ("Polycom-VVX", "eth1", 3)


def test_recent_lists_most_recently_seen_first_even_if_recorded_out_of_order() -> None:
    d = DiscoveredDevices()
    d.record(A, source="dhcp", interface="eth0", now=5.0)
    d.record(B, source="dhcp", interface="eth0", now=50.0)
    d.record(C, source="mdns", interface="eth0", now=20.0)
    assert [e.mac for e in d.recent()] == [B, C, A]
    assert [e.mac for e in d.recent(limit=2)] == [B, C]
    d.record(
        A, source="dhcp", interface="eth0", now=3.0
    )  # a clock step back never lowers last_seen
    assert d.get(A).last_seen == 5.0  # type: ignore[union-attr]


def test_least_recently_seen_is_evicted_at_the_bound() -> None:
    d = DiscoveredDevices(max_entries=3)
    for i, mac in enumerate((A, B, C)):
        d.record(mac, source="dhcp", interface="eth0", now=float(i))
    d.record(A, source="dhcp", interface="eth0", now=10.0)  # A is fresh again; B is now oldest
    d.record(D, source="dhcp", interface="eth0", now=11.0)
    assert len(d) == 3 and B not in d and {A, C, D} <= {e.mac for e in d.recent()}
    assert d.evicted == 1


def test_flood_of_random_macs_stays_bounded() -> None:
    d = DiscoveredDevices(max_entries=100)
    for i in range(5000):
        d.record(
            f"02:00:00:00:{i >> 8:02x}:{i & 0xFF:02x}",
            source="dhcp",
            interface="eth0",
            now=float(i),
        )
    assert len(d) == 100
    assert d.recent()[0].mac == "02:00:00:00:13:87"  # the 5000th (index 4999)


def test_remove_when_registered() -> None:
    d = DiscoveredDevices()
    d.record(A, source="dhcp", interface="eth0", now=1.0)
    assert d.remove(A) is True
    assert d.remove(A) is False
    assert A not in d and d.recent() == []


def test_vendor_class_from_the_wire_is_made_printable_and_capped() -> None:
    assert printable(b"evil\nline\x1b[31m") == "evil?line?[31m"
    assert printable(b"\xff\xfeabc") == "??abc"
    assert len(printable(b"x" * 1000)) == 128


def test_max_entries_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_entries"):
        DiscoveredDevices(max_entries=0)


def _mac(i: int, prefix: int = 0x10) -> str:
    return f"02:{prefix:02x}:{(i >> 16) & 0xFF:02x}:{(i >> 8) & 0xFF:02x}:{i & 0xFF:02x}:01"


def test_a_flood_of_one_shot_spoofed_macs_does_not_push_out_devices_that_retry() -> None:
    """Issue 17: spoofed MACs pushed real entries out of the 10,000-entry list."""
    d = DiscoveredDevices(max_entries=1000)
    real = [_mac(i, 0xAA) for i in range(300)]
    for t in (1.0, 5.0):  # a real client retries DISCOVER
        for mac in real:
            d.record(mac, source="dhcp", interface="eth0", now=t)
    for i in range(100_000):
        d.record(_mac(i), source="dhcp", interface="eth0", now=10.0 + i / 1000)
    assert all(mac in d for mac in real)
    assert len(d) == 1000 and d.evicted == 100_000 + 300 - 1000
    # Newcomers still get in: the probation segment keeps room for them.
    d.record(_mac(1, 0xBB), source="dhcp", interface="eth0", now=500.0)
    assert _mac(1, 0xBB) in d


def test_the_protected_segment_is_bounded_so_a_list_of_regulars_still_takes_newcomers() -> None:
    d = DiscoveredDevices(max_entries=10)
    for t in (1.0, 2.0):
        for i in range(20):
            d.record(_mac(i), source="dhcp", interface="eth0", now=t + i / 100)
    assert len(d) == 10
    newcomer = _mac(99, 0xCC)
    d.record(newcomer, source="mdns", interface="eth0", now=3.0)
    assert newcomer in d and len(d) == 10
    # The most recently seen regulars are the ones kept.
    assert all(_mac(i) in d for i in range(12, 20))
