"""The rtnetlink neighbour dump, request and reply, as bytes (layouts from linux/neighbour.h)."""

from __future__ import annotations

import socket
import struct

import pytest

from server.mdns.netlink import (
    NLMSG_DONE,
    NLMSG_ERROR,
    NUD_FAILED,
    NUD_INCOMPLETE,
    NUD_NOARP,
    NUD_REACHABLE,
    NUD_STALE,
    RTM_NEWNEIGH,
    Neighbour,
    NetlinkError,
    neigh_dump_request,
    parse_neigh_dump,
)

LL = socket.inet_pton(socket.AF_INET6, "fe80::ff:fe00:10b")
MAC = bytes.fromhex("02005e00010b")


def attr(kind: int, value: bytes) -> bytes:
    raw = struct.pack("=HH", 4 + len(value), kind) + value
    return raw + b"\0" * (-len(raw) % 4)


def neigh(
    seq: int, state: int, dst: bytes = LL, mac: bytes | None = MAC, ifindex: int = 7
) -> bytes:
    body = struct.pack("=BBHiHBB", socket.AF_INET6, 0, 0, ifindex, state, 0, 0)
    body += attr(1, dst) + (attr(2, mac) if mac is not None else b"") + attr(4, b"\0" * 16)
    return struct.pack("=IHHII", 16 + len(body), RTM_NEWNEIGH, 2, seq, 0) + body


def done(seq: int) -> bytes:
    return struct.pack("=IHHII", 20, NLMSG_DONE, 2, seq, 0) + b"\0\0\0\0"


def test_dump_request_is_rtm_getneigh_with_dump_flags() -> None:
    req = neigh_dump_request(9)
    length, mtype, flags, seq, pid = struct.unpack_from("=IHHII", req)
    assert (length, mtype, flags, seq, pid) == (len(req), 30, 0x301, 9, 0)
    assert req[16] == socket.AF_INET6 and len(req) == 28


def test_reply_gives_usable_entries_and_the_end_of_the_dump() -> None:
    data = neigh(5, NUD_REACHABLE) + neigh(5, NUD_STALE, ifindex=3) + done(5)
    found, finished = parse_neigh_dump(data, 5)
    assert finished
    assert found == [
        Neighbour(7, "fe80::ff:fe00:10b", "02:00:5e:00:01:0b", NUD_REACHABLE),
        Neighbour(3, "fe80::ff:fe00:10b", "02:00:5e:00:01:0b", NUD_STALE),
    ]


@pytest.mark.parametrize(
    "message",
    [
        neigh(5, NUD_INCOMPLETE),
        neigh(5, NUD_FAILED),
        neigh(5, NUD_NOARP),
        neigh(5, NUD_REACHABLE, mac=None),
        neigh(5, NUD_REACHABLE, mac=b"\0" * 6),
        neigh(5, NUD_REACHABLE, mac=b"\1" * 8),
        neigh(6, NUD_REACHABLE),  # another request's answer
    ],
)
def test_entries_without_a_usable_mac_are_left_out(message: bytes) -> None:
    assert parse_neigh_dump(message, 5) == ([], False)


def test_kernel_error_and_broken_lengths_raise_netlink_error() -> None:
    error = struct.pack("=IHHII", 36, NLMSG_ERROR, 0, 5, 0) + struct.pack("=i", -1) + b"\0" * 16
    with pytest.raises(NetlinkError, match="errno 1"):
        parse_neigh_dump(error, 5)
    broken = bytearray(neigh(5, NUD_REACHABLE))
    broken[0:4] = struct.pack("=I", len(broken) + 40)
    with pytest.raises(NetlinkError):
        parse_neigh_dump(bytes(broken), 5)
