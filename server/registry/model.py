"""The registry's domain values: tenants, devices, device states, the provisioning endpoint.

Pure: no I/O, no clock, no randomness. Frozen dataclasses inside; pydantic only at the edges.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

_SLUG = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")


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
