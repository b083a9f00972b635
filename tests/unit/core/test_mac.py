"""MAC input: every accepted spelling normalises; every bad value is rejected with a message naming it."""

from __future__ import annotations

import pytest

from server.core.mac import MacError, mac_from_bytes, normalize_mac


@pytest.mark.parametrize(
    "raw",
    [
        "AA:BB:CC:DD:EE:F0",
        "aa-bb-cc-dd-ee-f0",
        "aabb.ccdd.eef0",
        "aabbccddeef0",
        "  AaBbCcDdEeF0 \t",
        "AABB.CCDD.EEF0",
    ],
)
def test_accepted_spellings_normalise(raw: str) -> None:
    assert normalize_mac(raw) == "aa:bb:cc:dd:ee:f0"


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ("", "empty"),
        ("aa:bb:cc:dd:ee", "not a MAC address"),
        ("aa:bb:cc:dd:ee:ff:00", "not a MAC address"),
        ("aabbccddeeg0", "'g' is not a hex digit"),
        ("aa:bb:cc:dd:ee-f0", "not a MAC address"),
        ("ff:ff:ff:ff:ff:ff", "broadcast"),
        ("00:00:00:00:00:00", "all-zero"),
        ("01:00:5e:00:00:01", "multicast"),
        ("33:33:00:00:00:01", "multicast"),
    ],
)
def test_rejected_values_name_the_value_and_the_fault(raw: str, fragment: str) -> None:
    with pytest.raises(MacError) as exc:
        normalize_mac(raw)
    assert fragment in str(exc.value)
    if raw:
        assert raw.strip() in str(exc.value)


def test_locally_administered_unicast_is_a_valid_device_mac() -> None:
    assert normalize_mac("02:00:5E:00:01:01") == "02:00:5e:00:01:01"


def test_mac_from_wire_bytes() -> None:
    assert mac_from_bytes(bytes.fromhex("02005e000101") + b"\0" * 10) == "02:00:5e:00:01:01"
