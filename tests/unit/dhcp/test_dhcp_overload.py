"""The shedding policy (pure): by receive-queue fill and peeked message type."""

from __future__ import annotations

import pytest

from server.dhcp.codec import MessageType
from server.dhcp.overload import SHED_ALL_AT, SHED_NEW_AT, peek_type, should_shed
from tests.helpers.fixtures import scapy_dhcp

MAC = "02:00:5e:00:01:01"


@pytest.mark.parametrize(
    ("msg_type", "fill", "shed"),
    [
        (MessageType.DISCOVER, 0.0, False),
        (MessageType.DISCOVER, SHED_NEW_AT - 0.01, False),
        (MessageType.DISCOVER, SHED_NEW_AT, True),
        (MessageType.INFORM, SHED_NEW_AT, True),
        (None, SHED_NEW_AT, True),  # type not seen cheaply: shed like a new exchange
        (None, 0.0, False),
        (MessageType.REQUEST, SHED_NEW_AT, False),
        (MessageType.REQUEST, SHED_ALL_AT - 0.01, False),
        (MessageType.DECLINE, 0.5, False),
        (MessageType.RELEASE, 0.5, False),
        (MessageType.REQUEST, SHED_ALL_AT, True),
        (MessageType.RELEASE, 1.0, True),
    ],
)
def test_new_exchanges_go_first_requests_only_near_full(
    msg_type: int | None, fill: float, shed: bool
) -> None:
    assert should_shed(msg_type, fill) is shed


@pytest.mark.parametrize(
    ("kind", "want"),
    [
        ("discover", MessageType.DISCOVER),
        ("request", MessageType.REQUEST),
        ("inform", MessageType.INFORM),
        ("release", MessageType.RELEASE),
    ],
)
def test_peek_reads_option_53_without_decoding(kind: str, want: int) -> None:
    assert peek_type(scapy_dhcp(kind, mac=MAC, xid=1)) == want


def test_peek_skips_pads_and_earlier_options_and_gives_up_cheaply() -> None:
    head = scapy_dhcp("discover", mac=MAC, xid=1)[:240]
    assert peek_type(head + bytes([0, 0, 12, 2]) + b"pc" + bytes([53, 1, 3, 255])) == 3
    assert peek_type(head + bytes([255])) is None  # end before option 53
    assert peek_type(head + bytes([53, 2, 3, 3, 255])) is None  # wrong length
    assert peek_type(head + bytes([53, 1])) is None  # truncated
    assert peek_type(head[:200]) is None
    assert peek_type(head + bytes([12, 1, 65]) * 8 + bytes([53, 1, 1])) is None  # too far in
