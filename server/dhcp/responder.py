"""Request + policy decision (+ pool result in full mode) -> Reply or Ignore. Pure.

The rules (RFC 2131 §4.1, §4.3; protocols.md): who gets an answer in each mode, which options
go in and in what order, and where the reply is sent.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from server.core.mac import mac_from_bytes
from server.core.policy import Decision
from server.dhcp.codec import (
    BOOTREPLY,
    BOOTREQUEST,
    BROADCAST_FLAG,
    OPT_CLIENT_ID,
    OPT_MESSAGE,
    OPT_MESSAGE_TYPE,
    OPT_PARAM_REQUEST_LIST,
    OPT_RELAY_AGENT,
    OPT_REQUESTED_IP,
    OPT_SERVER_ID,
    OPT_VENDOR_CLASS,
    ZERO_IP,
    DhcpMessage,
    MessageType,
    fit_options,
    ip_text,
    max_message_size,
)
from server.dhcp.pool import LeasePool, PoolOutcome, PoolReason, PoolResult, Subnet
from server.dhcp.profiles import ProfileTable

BROADCAST_ADDR = "255.255.255.255"
OPT_SUBNET_MASK = 1
OPT_ROUTER = 3
OPT_DNS = 6
OPT_LEASE_TIME = 51
OPT_RENEWAL_T1 = 58
OPT_REBINDING_T2 = 59
# Options that must go first when their partner is sent: 60 before 43 (protocols.md) and the
# subnet mask before the router (RFC 2132 §3.3).
_GOES_BEFORE = {43: 60, OPT_ROUTER: OPT_SUBNET_MASK}
# Never dropped to fit the size limit: without them the reply is wrong, not just smaller.
# Distinct (type, vendor class, request list, subnet) combinations remembered at once.
_REPLY_OPTIONS_MAX = 1024
_KEEP = frozenset({OPT_MESSAGE_TYPE, OPT_SERVER_ID, OPT_CLIENT_ID, OPT_RELAY_AGENT, OPT_LEASE_TIME})


class Mode(StrEnum):
    INFORM = "inform"
    PROXY = "proxy"
    FULL = "full"


class IgnoreReason(StrEnum):
    """Why a datagram gets no reply, besides DecodeReason and PoolReason codes. Stable codes."""

    NOT_A_REQUEST = "DHCP_NOT_REQUEST"  # op is BOOTREPLY: another server's answer
    TYPE_NOT_SERVED = "DHCP_TYPE_NOT_SERVED"  # this mode does not answer this message type
    REPLY_TOO_LARGE = "DHCP_REPLY_TOO_LARGE"  # required options alone exceed the size limit
    # Used by the service and transport around the responder:
    BAD_CHADDR = "DHCP_BAD_CHADDR"  # chaddr is all-zero or multicast: not one device's MAC
    LEASE_STORE_FAILED = "DHCP_LEASE_STORE_FAILED"  # lease not persisted, so no ACK is sent
    QUEUE_FULL = "DHCP_QUEUE_FULL"  # load shed before decoding
    OVERLOAD = "DHCP_OVERLOAD"  # shed undecoded: the receive queue was deep (overload.py)


# Silences the protocol asks for: counted as decisions, not as drops.
PROTOCOL_SILENCE = frozenset(
    {
        PoolReason.RELEASED,
        PoolReason.DECLINED,
        PoolReason.NOT_SELECTED,
        PoolReason.UNKNOWN_CLIENT,
        PoolReason.NOT_OUR_LEASE,
    }
)


@dataclass(frozen=True, slots=True)
class Ignore:
    """No reply; `reason` is a stable code (policy Reason, IgnoreReason or PoolReason)."""

    reason: str

    @property
    def handled(self) -> bool:
        """True when silence is the protocol's answer (RELEASE, DECLINE...), not a drop."""
        return self.reason in PROTOCOL_SILENCE


# Not frozen: one is built per reply, and a frozen dataclass's __init__ costs ~4x as much.
# Treat it as immutable all the same.
@dataclass(slots=True)
class Reply:
    """A reply to encode and send, and what went into it (for the log line)."""

    message: DhcpMessage
    dest: tuple[str, int]
    max_size: int
    reason: str
    profile: str = ""
    dropped_options: tuple[int, ...] = ()
    # RFC 2131 §4.1 wants a unicast to chaddr/yiaddr, which needs a raw L2 send (the client
    # has no address to ARP for yet); we broadcast instead, which every client accepts.
    broadcast_fallback: bool = False

    @property
    def msg_type(self) -> int:
        return self.message.options[OPT_MESSAGE_TYPE][0]

    @property
    def option_codes(self) -> tuple[int, ...]:
        return tuple(self.message.options)


@dataclass(frozen=True, slots=True)
class ResponderContext:
    """What the responder needs to know about this server."""

    mode: Mode
    server_id: bytes  # our IPv4 address on the site VLAN (option 54), 4 bytes
    profiles: ProfileTable
    client_port: int = 68  # lab knob: where client-bound replies go (68 on a real network)
    server_port: int = 67  # where replies to a relay go (RFC 2131 §4.1)
    max_size_cap: int = 1500  # upper bound on option 57 (one Ethernet MTU)


def order_options(
    reply_type: int, server_id: bytes, available: Mapping[int, bytes], prl: bytes
) -> dict[int, bytes]:
    """53, 54, then the client's option 55 order, then the rest; partners kept in order."""
    out: dict[int, bytes] = {OPT_MESSAGE_TYPE: bytes((reply_type,)), OPT_SERVER_ID: server_id}
    for code in (*prl, *available):
        if code in out or code not in available:
            continue
        first = _GOES_BEFORE.get(code)
        if first is not None and first in available and first not in out:
            out[first] = available[first]
        out[code] = available[code]
    return out


def _ip4(raw: bytes | None) -> int | None:
    return int.from_bytes(raw, "big") if raw is not None and len(raw) == 4 else None


def pool_step(
    pool: LeasePool, request: DhcpMessage, ctx: ResponderContext, now: float
) -> PoolResult | None:
    """Full mode: apply a registered client's request to the pool (RFC 2131 §4.3); None = no pool op."""
    opts = request.options
    mac = mac_from_bytes(request.chaddr)
    cid = opts.get(OPT_CLIENT_ID)
    requested = _ip4(opts.get(OPT_REQUESTED_IP))
    ciaddr = int.from_bytes(request.ciaddr, "big")
    giaddr = int.from_bytes(request.giaddr, "big")
    local = int.from_bytes(ctx.server_id, "big")
    mt = request.msg_type
    if mt == MessageType.INFORM:
        subnet = pool.subnet_containing(ciaddr) if ciaddr else pool.select_subnet(giaddr, local)
        return PoolResult(PoolOutcome.ACK, PoolReason.INFORMED, subnet=subnet)
    if mt == MessageType.RELEASE:
        return pool.release(mac, cid, ciaddr, now)
    if mt == MessageType.DECLINE:
        return pool.decline(mac, cid, requested, now)
    if mt == MessageType.DISCOVER:
        subnet = pool.select_subnet(giaddr, local)
        if subnet is None:
            return PoolResult(PoolOutcome.SILENT, PoolReason.NO_SUBNET)
        return pool.offer(subnet, mac, cid, requested, now)
    if mt != MessageType.REQUEST:
        return None
    server_id = opts.get(OPT_SERVER_ID)
    if server_id is not None and server_id != ctx.server_id:
        return pool.not_selected(mac, cid, now)
    if ciaddr and server_id is None:
        return pool.renew(mac, cid, ciaddr, now)
    subnet = pool.select_subnet(giaddr, local)
    if subnet is None:
        return PoolResult(PoolOutcome.SILENT, PoolReason.NO_SUBNET)
    if server_id is not None:
        return pool.select(subnet, mac, cid, requested, now)
    if requested is None:
        return PoolResult(PoolOutcome.SILENT, PoolReason.NO_REQUESTED_IP)
    return pool.init_reboot(subnet, mac, cid, requested, now)


def _destination(
    request: DhcpMessage, reply_type: int, ctx: ResponderContext, src: tuple[str, int]
) -> tuple[tuple[str, int], int, bool]:
    """(address, flags, broadcast_fallback) for a reply, per RFC 2131 §4.1 and §4.3.5."""
    flags = request.flags
    gi, ci = request.giaddr, request.ciaddr
    if request.msg_type == MessageType.INFORM:
        # §4.3.5 and Kea: ciaddr, else the relay (broadcast bit set so it broadcasts to a
        # client that may have no address configured yet), else the packet's source.
        if ci != ZERO_IP:
            return (ip_text(ci), ctx.client_port), flags, False
        if gi != ZERO_IP:
            return (ip_text(gi), ctx.server_port), flags | BROADCAST_FLAG, False
        if src[0] != "0.0.0.0":
            return src, flags, False
        return (BROADCAST_ADDR, ctx.client_port), flags, False
    if gi != ZERO_IP:
        if reply_type == MessageType.NAK:
            flags |= BROADCAST_FLAG  # §4.3.2: the relay broadcasts the NAK to the client
        return (ip_text(gi), ctx.server_port), flags, False
    if reply_type == MessageType.NAK:
        return (BROADCAST_ADDR, ctx.client_port), flags, False  # §4.1: NAKs are broadcast
    if ci != ZERO_IP:
        return (ip_text(ci), ctx.client_port), flags, False
    if flags & BROADCAST_FLAG:
        return (BROADCAST_ADDR, ctx.client_port), flags, False
    return (BROADCAST_ADDR, ctx.client_port), flags, True


def _echoed(request: DhcpMessage, options: dict[int, bytes]) -> dict[int, bytes]:
    """Append 61 (RFC 6842 §3) and, when replying through a relay, 82 last (RFC 3046 §2.2)."""
    cid = request.options.get(OPT_CLIENT_ID)
    if cid is not None:
        options[OPT_CLIENT_ID] = cid
    relay = request.options.get(OPT_RELAY_AGENT)
    if relay is not None and request.giaddr != ZERO_IP:
        options[OPT_RELAY_AGENT] = relay
    return options


def _build(
    request: DhcpMessage,
    reply_type: int,
    options: dict[int, bytes],
    yiaddr: bytes,
    ctx: ResponderContext,
    src: tuple[str, int],
    reason: str,
    profile: str,
) -> Reply | Ignore:
    max_size = max_message_size(request, ctx.max_size_cap)
    fit = fit_options(options, max_size, _KEEP)
    if fit is None:
        return Ignore(IgnoreReason.REPLY_TOO_LARGE)
    fitted, dropped = fit
    dest, flags, fallback = _destination(request, reply_type, ctx, src)
    message = DhcpMessage(
        op=BOOTREPLY,
        xid=request.xid,
        chaddr=request.chaddr,
        options=fitted,
        htype=request.htype,
        hlen=request.hlen,
        flags=flags,
        # RFC 2131 table 3: an ACK echoes ciaddr, OFFER and NAK carry 0.
        ciaddr=request.ciaddr if reply_type == MessageType.ACK else ZERO_IP,
        yiaddr=yiaddr,
        giaddr=request.giaddr,
    )
    return Reply(message, dest, max_size, reason, profile, dropped, fallback)


def _reply_options(
    ctx: ResponderContext,
    reply_type: int,
    vendor_class: bytes | None,
    prl: bytes,
    subnet: Subnet | None,
    leased: bool,
) -> tuple[dict[int, bytes], str]:
    """The reply's options in wire order before the echoed 61/82, and the profile's name."""
    match = ctx.profiles.select(vendor_class, prl)
    available: dict[int, bytes] = dict(match.options) if match is not None else {}
    if subnet is not None:
        # The subnet's own settings win over a profile's for the same code.
        available.update(subnet.reply_options)  # mask, router, DNS servers
        if leased:
            t = subnet.lease_time
            # RFC 2131 §4.4.5 defaults: T1 = 0.5 and T2 = 0.875 of the lease.
            available[OPT_LEASE_TIME] = t.to_bytes(4, "big")
            available[OPT_RENEWAL_T1] = (t // 2).to_bytes(4, "big")
            available[OPT_REBINDING_T2] = (t * 7 // 8).to_bytes(4, "big")
    ordered = order_options(reply_type, ctx.server_id, available, prl)
    return ordered, match.profile.name if match is not None else ""


def respond(
    request: DhcpMessage,
    decision: Decision,
    ctx: ResponderContext,
    *,
    src: tuple[str, int],
    pool_result: PoolResult | None = None,
) -> Reply | Ignore:
    """The reply to `request` for this mode, or why there is none. Pure."""
    if request.op != BOOTREQUEST:
        return Ignore(IgnoreReason.NOT_A_REQUEST)
    if not decision.answer:
        # Unregistered: silence, never a NAK (protocols.md), so the MAC learns nothing.
        return Ignore(decision.reason)
    mt = request.msg_type
    mode = ctx.mode
    yiaddr = ZERO_IP
    reason: str = decision.reason
    leased = False  # a lease is in the reply: lease time, T1 and T2 go in too
    subnet = None
    if mt == MessageType.INFORM:
        # §4.3.5: ACK with configuration only; no yiaddr, lease time or T1/T2.
        reply_type = MessageType.ACK
        if pool_result is not None:
            subnet = pool_result.subnet
    elif mode is Mode.INFORM:
        return Ignore(IgnoreReason.TYPE_NOT_SERVED)
    elif mode is Mode.PROXY:
        if mt == MessageType.DISCOVER:
            reply_type = MessageType.OFFER
        elif mt == MessageType.REQUEST:
            # Only a REQUEST that selects us: an options-only ACK (yiaddr 0) to a client that is
            # committing to the real server, or rebooting, would undo its address.
            if request.options.get(OPT_SERVER_ID) != ctx.server_id:
                return Ignore(PoolReason.NOT_SELECTED)
            reply_type = MessageType.ACK
        else:
            return Ignore(IgnoreReason.TYPE_NOT_SERVED)
    else:
        if pool_result is None:
            return Ignore(IgnoreReason.TYPE_NOT_SERVED)
        reason = pool_result.reason
        if pool_result.outcome is PoolOutcome.SILENT:
            return Ignore(pool_result.reason)
        if pool_result.outcome is PoolOutcome.NAK:
            # §4.3.2 / table 3: a NAK carries only 53, 54, 56 and the echoed 61/82.
            nak = {
                OPT_MESSAGE_TYPE: bytes((MessageType.NAK,)),
                OPT_SERVER_ID: ctx.server_id,
                OPT_MESSAGE: pool_result.reason.encode(),
            }
            return _build(
                request, MessageType.NAK, _echoed(request, nak), ZERO_IP, ctx, src, reason, ""
            )
        lease, subnet = pool_result.lease, pool_result.subnet
        if lease is None or subnet is None:
            return Ignore(IgnoreReason.TYPE_NOT_SERVED)
        reply_type = (
            MessageType.OFFER if pool_result.outcome is PoolOutcome.OFFER else MessageType.ACK
        )
        yiaddr = bytes(map(int, lease.ip.split(".")))  # the pool's own dotted quad
        leased = True
    opts = request.options
    prl = opts.get(OPT_PARAM_REQUEST_LIST, b"")
    vendor_class = opts.get(OPT_VENDOR_CLASS)
    # Everything below depends only on this key and the profile table, so the ordered options
    # are memoised in the table (a deterministic function of the key: respond() stays pure).
    key = (reply_type, leased, vendor_class, prl, subnet.key if subnet is not None else "")
    memo = ctx.profiles.reply_options
    cached = memo.get(key)
    if cached is None:
        cached = _reply_options(ctx, reply_type, vendor_class, prl, subnet, leased)
        if len(memo) >= _REPLY_OPTIONS_MAX:
            memo.clear()  # bounded: option 55 and 60 are the client's to choose
        memo[key] = cached
    ordered, profile = cached
    options = _echoed(request, dict(ordered))
    return _build(request, reply_type, options, yiaddr, ctx, src, reason, profile)
