"""Domain values shared by every part of Imprint: MACs, tenants, devices, states.

Pure: no I/O, no clock, no randomness. Frozen dataclasses inside; pydantic only at the edges.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

_HEX = frozenset("0123456789abcdef")
_SLUG = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")


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


class TenantError(ValueError):
    """A tenant id or name is not usable; the message says why."""


def validate_tenant_id(value: str) -> str:
    """Return a valid tenant slug (lowercase letters, digits, dashes; 1-63 chars) or raise."""
    if not isinstance(value, str) or not _SLUG.match(value):
        raise TenantError(
            f"tenant id {value!r} must be 1-63 characters of a-z, 0-9 and '-', "
            "not starting or ending with '-'"
        )
    return value


class DeviceState(StrEnum):
    AWAITING_ACTIVATION = "awaiting_activation"
    AWAITING_SIGN_IN = "awaiting_sign_in"
    SIGNED_IN = "signed_in"


@dataclass(frozen=True, slots=True)
class Tenant:
    id: str
    name: str
    created_at: str


@dataclass(frozen=True, slots=True)
class Device:
    mac: str
    tenant_id: str
    location: str
    state: DeviceState
    created_at: str
    updated_at: str
    device_id: str
    code_expires_at: str | None = None
    signed_in_user: str | None = None


@dataclass(frozen=True, slots=True)
class DeviceView:
    """What the DHCP/mDNS hot path knows about a registered MAC (held in memory)."""

    mac: str
    tenant_id: str
    tenant_name: str
    state: DeviceState
    location: str


@dataclass(frozen=True, slots=True)
class ProvisioningEndpoint:
    """Where devices provision: advertised in DHCP options and mDNS records. Public data only."""

    scheme: str  # "https" (or "http" when the config explicitly allows plain HTTP)
    host: str  # host name or address devices connect to
    port: int
    path: str  # provisioning path, e.g. "/provision"
    fingerprint_sha256: str  # hex SHA-256 of the server's TLS certificate (DER), "" if none

    @property
    def url(self) -> str:
        default = (self.scheme == "https" and self.port == 443) or (
            self.scheme == "http" and self.port == 80
        )
        hostpart = f"[{self.host}]" if ":" in self.host else self.host
        netloc = hostpart if default else f"{hostpart}:{self.port}"
        return f"{self.scheme}://{netloc}{self.path}"
