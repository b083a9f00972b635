"""How leases are listed: the state as of now, address order, cursor pages, full mode only."""

from __future__ import annotations

import pytest

from server.config import DhcpSettings
from server.dhcp.leaseview import (
    CursorError,
    LeaseRow,
    decode_cursor,
    full_mode_off,
    page_of,
    shown_state,
)
from server.dhcp.pool import Lease, LeaseState

NOW = 1_700_000_000.0


def row(ip: str, state: LeaseState = LeaseState.BOUND, expires: float = NOW + 60) -> LeaseRow:
    mac = "02:00:5e:00:00:" + ip.rsplit(".", 1)[1].zfill(2)[-2:]
    return LeaseRow(Lease(ip, mac, None, state, expires, "198.18.77.0/24", NOW), "acme", "desk")


def test_a_lapsed_binding_or_quarantine_shows_as_expired() -> None:
    assert shown_state(row("10.0.0.1").lease, NOW) is LeaseState.BOUND
    assert shown_state(row("10.0.0.1", expires=NOW).lease, NOW) is LeaseState.EXPIRED
    declined = row("10.0.0.1", LeaseState.DECLINED, NOW - 1).lease
    assert shown_state(declined, NOW) is LeaseState.EXPIRED
    released = row("10.0.0.1", LeaseState.RELEASED, NOW - 1).lease
    assert shown_state(released, NOW) is LeaseState.RELEASED


def test_pages_walk_addresses_in_numeric_order_exactly_once() -> None:
    rows = [row(f"198.18.77.{i}") for i in (10, 9, 100, 2, 11)]
    first = page_of(rows, now=NOW, limit=2)
    assert first.count == 5
    assert [x.row.lease.ip for x in first.results] == ["198.18.77.2", "198.18.77.9"]
    assert first.next_cursor is not None
    rows.append(row("198.18.77.1"))  # added meanwhile, before the cursor: not seen again
    second = page_of(rows, now=NOW, limit=2, cursor=first.next_cursor)
    assert [x.row.lease.ip for x in second.results] == ["198.18.77.10", "198.18.77.11"]
    assert second.next_cursor is not None
    last = page_of(rows, now=NOW, limit=2, cursor=second.next_cursor)
    assert [x.row.lease.ip for x in last.results] == ["198.18.77.100"]
    assert last.next_cursor is None


def test_state_filter_uses_the_shown_state() -> None:
    rows = [row("10.0.0.1"), row("10.0.0.2", expires=NOW - 5)]
    page = page_of(rows, now=NOW, state="expired")
    assert [x.row.lease.ip for x in page.results] == ["10.0.0.2"] and page.count == 1


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"state": "gone"}, "state 'gone' is not one of: offered, bound"),
        ({"limit": 0}, "limit must be between 1 and 1000"),
        ({"limit": 1001}, "limit must be between 1 and 1000"),
        ({"cursor": "nope!"}, "is not one this server gave"),
    ],
)
def test_bad_filters_say_what_to_fix(kw: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        page_of([row("10.0.0.1")], now=NOW, **kw)  # type: ignore[arg-type]


def test_cursors_are_only_the_servers() -> None:
    for bad in ("", "x" * 41, "aXA6bm90LWFuLWlw", "bWFjOjEuMi4zLjQ"):  # ip:not-an-ip, mac:1.2.3.4
        with pytest.raises(CursorError):
            decode_cursor(bad)


def test_leases_exist_only_in_full_mode() -> None:
    off = full_mode_off(DhcpSettings())
    assert off is not None and "[dhcp] enabled = false" in off
    off = full_mode_off(DhcpSettings(enabled=True, mode="proxy"))
    assert off is not None and "proxy mode" in off and 'mode = "full"' in off
    full = DhcpSettings.model_validate(
        {
            "enabled": True,
            "mode": "full",
            "server_ip": "198.18.77.1",
            "subnets": [{"subnet": "198.18.77.0/24", "pool": "198.18.77.100-198.18.77.199"}],
        }
    )
    assert full_mode_off(full) is None
