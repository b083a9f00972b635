"""Sightings: the latest sighting of each registered MAC, and the DHCP address -> MAC map."""

from __future__ import annotations

import pytest

from server.provisioning.sightings import LastSeen, Sightings

A, B = "02:00:5e:00:01:01", "02:00:5e:00:01:02"


def test_a_dhcp_sighting_keeps_when_where_what_and_how() -> None:
    s = Sightings()
    s.saw(A, "198.18.77.100", 10.0, vendor_class=b"MS-UC-Client", interface="eth0.100")
    assert s.last_seen(A) == LastSeen(
        A, 10.0, "198.18.77.100", "MS-UC-Client", "eth0.100", "dhcp", "chaddr"
    )
    assert s.ip_of(A) == "198.18.77.100" and s.mac_of("198.18.77.100") == A
    # A proxy-mode ACK says no address and a renewal may omit option 60: both are kept.
    s.saw(A, None, 20.0)
    seen = s.last_seen(A)
    assert seen is not None and (seen.at, seen.ip, seen.vendor_class) == (
        20.0,
        "198.18.77.100",
        "MS-UC-Client",
    )
    assert s.last_seen(B) is None and s.ip_of(B) is None


def test_a_new_address_moves_the_reverse_map() -> None:
    s = Sightings()
    s.saw(A, "198.18.77.100", 1.0)
    s.saw(A, "198.18.77.101", 2.0)
    assert s.mac_of("198.18.77.100") is None and s.mac_of("198.18.77.101") == A
    s.saw(B, "198.18.77.101", 3.0)  # the address went to B: A's entry must not take it back
    s.saw(A, "198.18.77.102", 4.0)
    assert s.mac_of("198.18.77.101") == B and s.mac_of("198.18.77.102") == A


def test_mdns_sightings_never_feed_the_lease_map() -> None:
    s = Sightings()
    s.saw(A, "198.18.77.100", 1.0, vendor_class=b"VC")
    s.heard(A, "fe80::1", 2.0, interface="eth0", mac_from="frame")
    seen = s.last_seen(A)
    assert seen == LastSeen(A, 2.0, "fe80::1", "VC", "eth0", "mdns", "frame")
    assert s.mac_of("fe80::1") is None and s.ip_of(A) == "198.18.77.100"
    s.heard(B, "198.18.77.9", 3.0, interface="eth0", mac_from="neighbour")
    assert s.mac_of("198.18.77.9") is None


def test_bounded_least_recently_seen_goes_first_with_its_address() -> None:
    s = Sightings(max_entries=2)
    s.saw(A, "10.0.0.1", 1.0)
    s.saw(B, "10.0.0.2", 2.0)
    s.saw(A, "10.0.0.1", 3.0)  # A is now the most recent
    c = "02:00:5e:00:01:03"
    s.saw(c, "10.0.0.3", 4.0)
    assert len(s) == 2 and s.last_seen(B) is None and s.mac_of("10.0.0.2") is None
    assert s.mac_of("10.0.0.1") == A and s.mac_of("10.0.0.3") == c


def test_peer_supplied_vendor_class_is_shown_as_safe_text() -> None:
    s = Sightings()
    s.saw(A, "10.0.0.1", 1.0, vendor_class=b"bad\x1b[31m\xffclass" + b"x" * 300)
    seen = s.last_seen(A)
    assert seen is not None and seen.vendor_class.startswith("bad?[31m?class")
    assert len(seen.vendor_class) <= 128


def test_max_entries_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Sightings(0)
