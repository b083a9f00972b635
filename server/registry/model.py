"""The registry's domain values: tenants, devices, device states and their transition table,
the provisioning endpoint.

Pure: no I/O, no clock, no randomness. Frozen dataclasses inside; pydantic only at the edges.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
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


class DeviceEvent(StrEnum):
    PROVISION = "provision"  # the technician's code entry succeeded: the device has a credential
    SIGN_IN = "sign_in"  # a user approved the device's sign-in (replacing any earlier user)
    SIGN_OUT = "sign_out"  # signed out: by the admin, a refresh-token replay, a disabled user
    RESET = "reset"  # the admin's reset: credential and code revoked, back to the start


# Rule 1 (as in h11's _state.py): every device state change is an entry here. The store's one
# guarded write (server/registry/store.py set_state) reads it; nothing else sets `state`.
TRANSITIONS: Mapping[DeviceState, Mapping[DeviceEvent, DeviceState]] = {
    DeviceState.AWAITING_ACTIVATION: {
        DeviceEvent.PROVISION: DeviceState.AWAITING_SIGN_IN,
        DeviceEvent.RESET: DeviceState.AWAITING_ACTIVATION,
    },
    DeviceState.AWAITING_SIGN_IN: {
        DeviceEvent.SIGN_IN: DeviceState.SIGNED_IN,
        DeviceEvent.RESET: DeviceState.AWAITING_ACTIVATION,
    },
    DeviceState.SIGNED_IN: {
        DeviceEvent.SIGN_IN: DeviceState.SIGNED_IN,
        DeviceEvent.SIGN_OUT: DeviceState.AWAITING_SIGN_IN,
        DeviceEvent.RESET: DeviceState.AWAITING_ACTIVATION,
    },
}


class TransitionError(ValueError):
    """An event that the transition table does not allow from the current state."""


def next_state(state: DeviceState, event: DeviceEvent) -> DeviceState:
    """The state `event` moves `state` to, or TransitionError if the table has no such move."""
    try:
        return TRANSITIONS[state][event]
    except KeyError:
        raise TransitionError(f"a device {state.value} cannot {event.value}") from None


def sources(event: DeviceEvent) -> frozenset[DeviceState]:
    """The states from which `event` is allowed."""
    return frozenset(s for s, moves in TRANSITIONS.items() if event in moves)


def target(event: DeviceEvent) -> DeviceState:
    """Where `event` leads: one state per event, whatever the state it starts from."""
    (to,) = {moves[event] for moves in TRANSITIONS.values() if event in moves}
    return to


# Every event leads to one state, so one guarded UPDATE (WHERE state IN sources) applies it.
for _event in DeviceEvent:
    target(_event)


def iso(dt: datetime) -> str:
    """The stored text form of a time: ISO 8601 UTC to the second; such strings sort in time."""
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(s: str) -> datetime:
    return datetime.strptime(s, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def token_digest(token: str) -> bytes:
    """Stored form of a high-entropy secret (API tokens, device client secrets)."""
    # Tokens carry 256 bits of randomness, so a plain SHA-256 is a safe stored form.
    return hashlib.sha256(token.encode()).digest()


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

    def as_json(self) -> dict[str, object]:
        """The device as the REST API and `imprint ... --json` show it."""
        return {
            "mac": self.mac,
            "device_id": self.device_id,
            "tenant": self.tenant_id,
            "location": self.location,
            "state": self.state.value,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "code_expires_at": self.code_expires_at,
            "signed_in_user": self.signed_in_user,
        }


@dataclass(frozen=True, slots=True)
class DevicePage:
    """One page of a device list in MAC order, with cursors to its neighbours (None at an end).

    `count` is every match, or None when the caller asked for a page after the first: counting a
    million devices costs more than the page itself."""

    count: int | None
    devices: list[Device]
    next_cursor: str | None
    prev_cursor: str | None


class CursorError(ValueError):
    pass


_CURSOR_AFTER = "a"
_CURSOR_BEFORE = "b"


def encode_cursor(mac: str, *, before: bool = False) -> str:
    """An opaque page cursor: the page after (or before) `mac`, in MAC order. Stable while
    devices are added or removed: a page is a seek from a key, never a count of rows."""
    raw = f"{_CURSOR_BEFORE if before else _CURSOR_AFTER}:{mac}".encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_cursor(cursor: str) -> tuple[bool, str]:
    """(before, mac) from a cursor this server gave; CursorError for anything else."""
    bad = CursorError(
        f"cursor {cursor[:40]!r} is not one this server gave: "
        "use the next_cursor or prev_cursor of a list response, or start again without one"
    )
    if not 1 <= len(cursor) <= 64 or not cursor.isascii():
        raise bad
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise bad from None
    kind, _, mac = raw.partition(":")
    if kind not in (_CURSOR_AFTER, _CURSOR_BEFORE) or not _CURSOR_MAC.match(mac):
        raise bad
    return kind == _CURSOR_BEFORE, mac


_CURSOR_MAC = re.compile(r"^[0-9a-f]{2}(?::[0-9a-f]{2}){5}$")


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
