"""MAC addresses: the one identity every part of Imprint keys on. Pure: no I/O."""

from __future__ import annotations

_HEX = frozenset("0123456789abcdef")


class MacError(ValueError):
    """A MAC address given by a person or a file is not usable; the message says why."""


def normalize_mac(value: str) -> str:
    """Return `value` as `aa:bb:cc:dd:ee:ff`, or raise MacError naming the value and the fault.

    Accepted: `AA:BB:CC:DD:EE:FF`, `aa-bb-cc-dd-ee-ff`, `aabb.ccdd.eeff`, `aabbccddeeff`, any
    case, surrounding spaces. Rejected: wrong length or characters, broadcast, all-zero and
    multicast (I/G bit set) addresses: none of them can be one device's hardware address.
    """
    if not isinstance(value, str):
        raise MacError(f"MAC address must be text, got {type(value).__name__}")
    raw = value.strip().lower()
    if not raw:
        raise MacError("MAC address is empty")
    digits: str
    if len(raw) == 17 and (raw[2::3] == ":" * 5 or raw[2::3] == "-" * 5):
        digits = "".join(raw[i : i + 2] for i in range(0, 17, 3))
    elif len(raw) == 14 and raw[4] == "." and raw[9] == ".":
        digits = raw[0:4] + raw[5:9] + raw[10:14]
    elif len(raw) == 12:
        digits = raw
    else:
        raise MacError(
            f"{value.strip()!r} is not a MAC address: use 12 hex digits such as "
            "AA:BB:CC:DD:EE:FF, aa-bb-cc-dd-ee-ff, aabb.ccdd.eeff or aabbccddeeff"
        )
    if not _HEX.issuperset(digits):
        bad = sorted({c for c in digits if c not in _HEX})
        raise MacError(
            f"{value.strip()!r} is not a MAC address: {''.join(bad)!r} is not a hex digit"
        )
    if digits == "ffffffffffff":
        raise MacError(f"{value.strip()!r} is the broadcast address, not a device's MAC")
    if digits == "000000000000":
        raise MacError(f"{value.strip()!r} is the all-zero address, not a device's MAC")
    if int(digits[1], 16) & 1:
        raise MacError(
            f"{value.strip()!r} is a multicast address (I/G bit set in the first octet), "
            "not a device's MAC"
        )
    return ":".join(digits[i : i + 2] for i in range(0, 12, 2))


def mac_from_bytes(raw: bytes) -> str:
    """Format 6 bytes of hardware address as `aa:bb:cc:dd:ee:ff` (no validation: hot path)."""
    return raw[:6].hex(":")
