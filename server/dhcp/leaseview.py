"""Full-mode leases as the API, the CLI and the admin UI list them. Pure: rows and `now` in.

A list shows what the store holds (`dhcp_leases`, written before each ACK leaves), so the
running server, `imprint leases` and a backup all show the same thing. Offers are not there:
an offer is no promise and is never stored (pool.py). A bound or declined lease whose end has
passed shows as expired even before the server's periodic expiry pass has stored that.
Rows come in address order (numeric, 198.18.77.9 before 198.18.77.10); a page's next_cursor
seeks from its last address, so a walk returns each lease once however many come and go.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from server.dhcp.pool import Lease, LeaseState

STATES = tuple(s.value for s in LeaseState)
MAX_LIMIT = 1000


class CursorError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class LeaseRow:
    """A stored lease and the registered device that holds it (None: not registered now)."""

    lease: Lease
    tenant_id: str | None
    location: str | None


@dataclass(frozen=True, slots=True)
class ShownLease:
    row: LeaseRow
    state: LeaseState  # as of `now`: see the module's note


@dataclass(frozen=True, slots=True)
class LeasePage:
    count: int  # every lease that matches
    results: list[ShownLease]
    next_cursor: str | None


def shown_state(lease: Lease, now: float) -> LeaseState:
    """The state to show at `now`: a lapsed binding, offer or quarantine is expired."""
    if lease.expires_at <= now and lease.state in (
        LeaseState.BOUND,
        LeaseState.DECLINED,
        LeaseState.OFFERED,
    ):
        return LeaseState.EXPIRED
    return lease.state


def _ip_key(ip: str) -> int:
    try:
        return int(ipaddress.IPv4Address(ip))
    except ValueError:
        return -1  # not an address: first, rather than a failure of the whole list


def encode_cursor(ip: str) -> str:
    return base64.urlsafe_b64encode(f"ip:{ip}".encode()).rstrip(b"=").decode()


def decode_cursor(cursor: str) -> int:
    """The address (as an int) a cursor this server gave seeks from; CursorError otherwise."""
    bad = CursorError(
        f"cursor {cursor[:40]!r} is not one this server gave: use the next_cursor of a lease "
        "list, or start again without one"
    )
    if not 1 <= len(cursor) <= 40 or not cursor.isascii():
        raise bad
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
        kind, _, ip = raw.partition(":")
        if kind != "ip":
            raise bad
        return int(ipaddress.IPv4Address(ip))
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise bad from None


def check_filters(state: str | None, limit: int) -> None:
    """ValueError naming what to fix for a state or limit a list cannot take."""
    if state is not None and state not in STATES:
        raise ValueError(f"state {state!r} is not one of: {', '.join(STATES)}")
    if not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit must be between 1 and {MAX_LIMIT}, got {limit}")


def page_of(
    rows: Iterable[LeaseRow],
    *,
    now: float,
    state: str | None = None,
    limit: int = 100,
    cursor: str | None = None,
) -> LeasePage:
    """The page of `rows` (already narrowed to the tenant and MAC asked for) in address order;
    ValueError (CursorError) for a filter, limit or cursor it cannot take."""
    check_filters(state, limit)
    after = decode_cursor(cursor) if cursor else None
    shown = [ShownLease(r, shown_state(r.lease, now)) for r in rows]
    if state is not None:
        shown = [s for s in shown if s.state.value == state]
    keyed = sorted(((_ip_key(s.row.lease.ip), s) for s in shown), key=lambda t: t[0])
    start = [s for k, s in keyed if after is None or k > after]
    results = start[:limit]
    more = len(start) > limit
    return LeasePage(len(keyed), results, encode_cursor(results[-1].row.lease.ip) if more else None)


class _DhcpLinks(Protocol):
    @property
    def enabled(self) -> bool: ...

    def served_links(self) -> Sequence[object]: ...


def full_mode_off(dhcp: _DhcpLinks) -> str | None:
    """Why there are no leases to list ([dhcp] is off, or no link is in full mode), or None."""
    if not dhcp.enabled:
        return (
            "DHCP is off ([dhcp] enabled = false), so this server keeps no leases; set "
            '[dhcp] enabled = true and mode = "full" with [[dhcp.subnets]] to lease addresses'
        )
    modes = [str(getattr(link, "mode", "")) for link in dhcp.served_links()]
    if "full" not in modes:
        return (
            f"DHCP runs in {' and '.join(sorted(set(modes)))} mode here, which leases no "
            'addresses; leases exist only in full mode ([dhcp] mode = "full" with '
            "[[dhcp.subnets]])"
        )
    return None
