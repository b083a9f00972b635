"""Load shedding before decode (pure): which datagrams to drop when the receive queue is deep.

Under a flood the socket's receive queue fills and the kernel drops datagrams at random,
REQUESTs as often as DISCOVERs, so fewer exchanges complete the deeper the flood. Shedding
ourselves, by message type and before any decode or reply is built, spends the CPU there is on
finishing exchanges already begun: a REQUEST completes a lease a client was offered, a new
DISCOVER only starts another exchange (its client retries in a few seconds, RFC 2131 §4.1).

`fill` is the share of the socket's receive buffer in use (0.0 empty .. 1.0 full, where the
kernel starts dropping); the transport reads it every few datagrams. Linux frees a UDP
socket's receive memory in steps of a quarter of the buffer, so the reading runs up to 0.25
above the queue's real depth while it drains: the thresholds allow for that.
"""

from __future__ import annotations

from server.dhcp.codec import MessageType

# Receive-buffer share in use past which each message type is shed. DISCOVER and INFORM start
# nothing the server owes anyone; REQUEST, DECLINE and RELEASE finish or undo a lease, so they
# are shed only when the kernel is about to drop at random anyway.
SHED_NEW_AT = 0.50
SHED_ALL_AT = 0.90
_NEW = frozenset({MessageType.DISCOVER, MessageType.INFORM})

_COOKIE_END = 240  # fixed BOOTP header (236 octets) + magic cookie
_OPT_PAD, _OPT_END, _OPT_MSG_TYPE = 0, 255, 53
# Options scanned for option 53 before giving up (it is almost always the first).
_PEEK_OPTIONS = 8


def should_shed(msg_type: int | None, fill: float) -> bool:
    """Drop this datagram undecoded? `msg_type` None: its type could not be seen cheaply."""
    if fill >= SHED_ALL_AT:
        return True
    if fill < SHED_NEW_AT:
        return False
    # Unknown type under pressure: shed like a new exchange; decoding it is what costs.
    return msg_type is None or msg_type in _NEW


def peek_type(data: bytes) -> int | None:
    """Option 53 (message type) from the first few options of `data`, without decoding it;
    None when it is not among them or the datagram is too short to tell."""
    i, end = _COOKIE_END, len(data)
    for _ in range(_PEEK_OPTIONS):
        if i >= end:
            return None
        code = data[i]
        if code == _OPT_PAD:
            i += 1
            continue
        if code == _OPT_END or i + 1 >= end:
            return None
        if code == _OPT_MSG_TYPE:
            return data[i + 2] if data[i + 1] == 1 and i + 2 < end else None
        i += 2 + data[i + 1]
    return None
