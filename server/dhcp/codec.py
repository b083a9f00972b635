"""DHCPv4 wire format (RFC 2131 §2, RFC 2132, RFC 3396) as a sans-I/O codec built on `struct`.

Representation: IPv4 addresses are 4-byte `bytes` in network order (b"\\0\\0\\0\\0" is 0.0.0.0);
`chaddr` is the `hlen` bytes of hardware address (6 for Ethernet, padded to 16 on the wire);
`options` is an insertion-ordered dict code -> value with repeated instances already concatenated
(RFC 3396 §5) and pad/end removed. The decoder raises only `DecodeError`, whose `reason` is a
stable code used in logs and metrics.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from enum import IntEnum, StrEnum

BOOTREQUEST = 1
BOOTREPLY = 2
HTYPE_ETHERNET = 1
MAGIC_COOKIE = b"\x63\x82\x53\x63"
ZERO_IP = b"\x00\x00\x00\x00"
BROADCAST_FLAG = 0x8000

# op..file: 236 octets (RFC 2131 §2, figure 1); the magic cookie follows at offset 236.
_HEADER = struct.Struct("!BBBBIHH4s4s4s4s16s64s128s")
_FIXED = _HEADER.size + len(MAGIC_COOKIE)
_SNAME = (44, 108)
_FILE = (108, 236)
# The RFC 951 BOOTP message is 300 octets; RFC 1542 §2.1 lets relays drop shorter ones, so
# replies are padded up to it.
BOOTP_MIN_LEN = 300
# Option 57 and the 576 default count the whole IP datagram (RFC 2131 §2: a 576-octet message
# is 236 + 312 options + IP and UDP headers), so the DHCP payload budget is 28 octets less.
IP_UDP_OVERHEAD = 28
DEFAULT_MAX_SIZE = 576

OPT_PAD = 0
OPT_END = 255
OPT_REQUESTED_IP = 50
OPT_OVERLOAD = 52
OPT_MESSAGE_TYPE = 53
OPT_SERVER_ID = 54
OPT_PARAM_REQUEST_LIST = 55
OPT_MESSAGE = 56
OPT_MAX_MESSAGE_SIZE = 57
OPT_VENDOR_CLASS = 60
OPT_CLIENT_ID = 61
OPT_RELAY_AGENT = 82


class MessageType(IntEnum):
    DISCOVER = 1
    OFFER = 2
    REQUEST = 3
    DECLINE = 4
    ACK = 5
    NAK = 6
    RELEASE = 7
    INFORM = 8


# Bounded label values for metrics: anything else is "unknown".
TYPE_NAMES: dict[int, str] = {t.value: t.name.lower() for t in MessageType}


class DecodeReason(StrEnum):
    """Why a datagram is not a usable DHCP message. Stable: logs and metrics use these."""

    TRUNCATED = "DHCP_TRUNCATED"  # shorter than the fixed header plus magic cookie
    TOO_LARGE = "DHCP_TOO_LARGE"  # longer than MAX_DATAGRAM: dropped before any parsing
    BAD_OP = "DHCP_BAD_OP"  # op is neither BOOTREQUEST nor BOOTREPLY
    BAD_HTYPE = "DHCP_BAD_HTYPE"  # not Ethernet: the registry is keyed by 48-bit MACs
    BAD_HLEN = "DHCP_BAD_HLEN"  # Ethernet with hlen != 6
    NO_COOKIE = "DHCP_NO_COOKIE"  # plain BOOTP or garbage: no DHCP magic cookie
    OPTION_OVERRUN = "DHCP_OPTION_OVERRUN"  # an option's length runs past its field
    BAD_OVERLOAD = "DHCP_BAD_OVERLOAD"  # option 52 not 1 octet of value 1, 2 or 3
    NO_MSG_TYPE = "DHCP_NO_MSG_TYPE"  # no option 53: BOOTP, not DHCP
    BAD_MSG_TYPE = "DHCP_BAD_MSG_TYPE"  # option 53 not exactly 1 octet, or 0


class DecodeError(Exception):
    """A peer sent bytes that are not a DHCP message we can use; `reason` is a DecodeReason."""

    def __init__(self, reason: DecodeReason, detail: str = "") -> None:
        super().__init__(f"{reason.value}: {detail}" if detail else reason.value)
        self.reason = reason
        self.detail = detail


class EncodeError(ValueError):
    """We were asked to encode something that cannot go on the wire (our fault, not a peer's)."""


@dataclass(slots=True)
class DhcpMessage:
    """One BOOTP/DHCP message; see the module docstring for the representation."""

    op: int
    xid: int
    chaddr: bytes
    options: dict[int, bytes]
    htype: int = HTYPE_ETHERNET
    hlen: int = 6
    hops: int = 0
    secs: int = 0
    flags: int = 0
    ciaddr: bytes = ZERO_IP
    yiaddr: bytes = ZERO_IP
    siaddr: bytes = ZERO_IP
    giaddr: bytes = ZERO_IP
    # Raw fixed fields; when option 52 overloads them they hold options, not names.
    sname: bytes = b""
    file: bytes = b""

    @property
    def msg_type(self) -> int:
        """The option 53 value (decode guarantees it exists for decoded messages)."""
        return self.options[OPT_MESSAGE_TYPE][0]

    @property
    def broadcast(self) -> bool:
        return bool(self.flags & BROADCAST_FLAG)


# The largest datagram decoded. RFC 2131 §2 sizes a message for a 576-octet datagram unless
# the peer raises it (option 57); a client's own message never needs more than one Ethernet
# frame (1500 octets of IP packet, so 1472 of UDP payload; 1500 leaves room for tunnels). A
# 65 KB datagram of option pieces was 11 ms of decoding before this cap: now it is a length
# check (issue 17).
MAX_DATAGRAM = 1500


def _parse_area(
    data: bytes,
    i: int,
    end: int,
    options: dict[int, bytes],
    top: bool,
    pieces: dict[int, list[bytes]],
) -> None:
    """Parse TLV options in data[i:end] into `options`; a repeated option's instances go to
    `pieces` and are joined once at the end (RFC 3396 §5), never concatenated pairwise."""
    while i < end:
        code = data[i]
        if code == OPT_PAD:
            # A pad storm is skipped at C speed rather than one octet per loop turn.
            i = end - len(data[i:end].lstrip(b"\x00"))
            continue
        if code == OPT_END:
            return
        if i + 1 >= end:
            raise DecodeError(DecodeReason.OPTION_OVERRUN, f"option {code} has no length octet")
        j = i + 2 + data[i + 1]
        if j > end:
            raise DecodeError(
                DecodeReason.OPTION_OVERRUN,
                f"option {code} length {data[i + 1]} runs {j - end} octets past its field",
            )
        # Option 52 only counts in the options field (RFC 2131 §4.1); inside sname/file it
        # would let a packet re-overload itself, so it is dropped there.
        if top or code != OPT_OVERLOAD:
            if code in options:
                more = pieces.get(code)
                if more is None:
                    pieces[code] = [options[code], data[i + 2 : j]]
                else:
                    more.append(data[i + 2 : j])
            else:
                options[code] = data[i + 2 : j]
        i = j
    # A missing end option is tolerated: the field simply ends (several embedded stacks omit it).


def decode(data: bytes) -> DhcpMessage:
    """Decode one UDP payload into a DhcpMessage or raise DecodeError; never anything else."""
    if len(data) < _FIXED:
        raise DecodeError(DecodeReason.TRUNCATED, f"{len(data)} octets, need at least {_FIXED}")
    if len(data) > MAX_DATAGRAM:
        raise DecodeError(DecodeReason.TOO_LARGE, f"{len(data)} octets, at most {MAX_DATAGRAM}")
    (
        op,
        htype,
        hlen,
        hops,
        xid,
        secs,
        flags,
        ciaddr,
        yiaddr,
        siaddr,
        giaddr,
        chaddr,
        sname,
        file,
    ) = _HEADER.unpack_from(data)
    if op != BOOTREQUEST and op != BOOTREPLY:
        raise DecodeError(DecodeReason.BAD_OP, f"op {op}")
    if htype != HTYPE_ETHERNET:
        raise DecodeError(DecodeReason.BAD_HTYPE, f"htype {htype}")
    if hlen != 6:
        raise DecodeError(DecodeReason.BAD_HLEN, f"hlen {hlen}")
    if data[236:240] != MAGIC_COOKIE:
        raise DecodeError(DecodeReason.NO_COOKIE)
    options: dict[int, bytes] = {}
    pieces: dict[int, list[bytes]] = {}
    _parse_area(data, _FIXED, len(data), options, True, pieces)
    overload = options.get(OPT_OVERLOAD)
    if OPT_OVERLOAD in pieces:
        overload = b"".join(pieces[OPT_OVERLOAD])
    if overload is not None:
        if len(overload) != 1 or overload[0] not in (1, 2, 3):
            raise DecodeError(DecodeReason.BAD_OVERLOAD, f"option 52 = {overload.hex()}")
        # RFC 3396 §5 aggregate order: options field, then file, then sname.
        if overload[0] & 1:
            _parse_area(data, _FILE[0], _FILE[1], options, False, pieces)
        if overload[0] & 2:
            _parse_area(data, _SNAME[0], _SNAME[1], options, False, pieces)
    for code, parts in pieces.items():
        options[code] = b"".join(parts)
    mtype = options.get(OPT_MESSAGE_TYPE)
    if mtype is None:
        raise DecodeError(DecodeReason.NO_MSG_TYPE)
    if len(mtype) != 1 or mtype[0] == 0:
        raise DecodeError(DecodeReason.BAD_MSG_TYPE, f"option 53 = {mtype.hex()}")
    # Positional, in field order: half the cost of keywords on a once-per-datagram call.
    return DhcpMessage(
        op,
        xid,
        chaddr[:6],
        options,
        htype,
        hlen,
        hops,
        secs,
        flags,
        ciaddr,
        yiaddr,
        siaddr,
        giaddr,
        sname,
        file,
    )


def option_wire_size(value: bytes) -> int:
    """Octets an option value takes on the wire, split into <=255-octet instances (RFC 3396)."""
    n = len(value)
    return n + 2 * max(1, -(-n // 255))


def message_size(options: Mapping[int, bytes]) -> int:
    """Octets `encode` produces for these options, before padding to BOOTP_MIN_LEN."""
    return _FIXED + 1 + sum(option_wire_size(v) for v in options.values())


def payload_budget(max_size: int) -> int:
    """DHCP payload octets allowed for an IP datagram limit of `max_size` (see IP_UDP_OVERHEAD)."""
    return max_size - IP_UDP_OVERHEAD


def fit_options(
    options: dict[int, bytes], max_size: int, keep: Collection[int]
) -> tuple[dict[int, bytes], tuple[int, ...]] | None:
    """Drop options from the end (never those in `keep`) until the message fits `max_size`.

    Returns (options that fit, codes dropped), or None when even the `keep` options are too
    big. `options` is returned as is when everything fits (the hot path copies nothing).
    """
    budget = payload_budget(max_size) - _FIXED - 1  # -1 for the end option
    total = 0
    for v in options.values():
        n = len(v)
        total += n + 2 if n <= 255 else option_wire_size(v)
    if total <= budget:
        return options, ()
    kept = dict(options)
    dropped: list[int] = []
    for code in reversed(list(options)):
        if total <= budget:
            break
        if code in keep:
            continue
        total -= option_wire_size(kept.pop(code))
        dropped.append(code)
    if total > budget:
        return None
    return kept, tuple(dropped)


def encode(msg: DhcpMessage, max_size: int = DEFAULT_MAX_SIZE) -> bytes:
    """Encode `msg`, options in mapping order, long ones split (RFC 3396 §6); raise if too big.

    `max_size` is the IP datagram limit (576 unless the client's option 57 allows more). Option
    overload is never used on send: many embedded clients do not look for options in sname/file.
    """
    out = bytearray(
        _HEADER.pack(
            msg.op,
            msg.htype,
            msg.hlen,
            msg.hops,
            msg.xid,
            msg.secs,
            msg.flags,
            msg.ciaddr,
            msg.yiaddr,
            msg.siaddr,
            msg.giaddr,
            msg.chaddr,
            msg.sname,
            msg.file,
        )
    )
    out += MAGIC_COOKIE
    for code, value in msg.options.items():
        if not 0 < code < 255:
            raise EncodeError(f"option code {code} cannot be sent as an option")
        n = len(value)
        if n <= 255:
            out.append(code)
            out.append(n)
            out += value
            continue
        for k in range(0, n, 255):
            chunk = value[k : k + 255]
            out.append(code)
            out.append(len(chunk))
            out += chunk
    out.append(OPT_END)
    budget = payload_budget(max_size)
    if len(out) > budget:
        raise EncodeError(
            f"message is {len(out)} octets, the limit is {budget} (max_size {max_size})"
        )
    if len(out) < BOOTP_MIN_LEN:
        out += bytes(BOOTP_MIN_LEN - len(out))
    return bytes(out)


def max_message_size(request: DhcpMessage, cap: int = 1500) -> int:
    """The IP datagram size a reply to `request` may use: option 57 if valid, at most `cap`.

    Values below 576 are illegal (RFC 2132 §9.10) and ignored; the cap keeps replies within an
    Ethernet MTU because a relay or client may not reassemble fragments.
    """
    raw = request.options.get(OPT_MAX_MESSAGE_SIZE)
    if raw is None or len(raw) != 2:
        return DEFAULT_MAX_SIZE
    value = (raw[0] << 8) | raw[1]
    if value < DEFAULT_MAX_SIZE:
        return DEFAULT_MAX_SIZE
    return min(value, max(cap, DEFAULT_MAX_SIZE))


def ip_bytes(text: str) -> bytes:
    """Dotted-quad text to 4 bytes; raises ValueError on anything else (config-time helper)."""
    return ipaddress.IPv4Address(text).packed


def ip_text(raw: bytes) -> str:
    """4 bytes to dotted-quad text."""
    return f"{raw[0]}.{raw[1]}.{raw[2]}.{raw[3]}"
