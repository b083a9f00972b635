"""The emulated device's DHCPv4 packets: built with scapy, replies decoded by hand. Pure.

No sockets, no clock, no randomness: `xid` and `secs` are passed in. Nothing here is shared
with server/ (the emulator is an independent peer, so a bug shared by both sides cannot hide).
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from scapy.layers.dhcp import BOOTP, DHCP
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from device_emulator.provisioning import (
    ProvisioningInfo,
    fingerprint_from_url,
    looks_like_url,
    normalize_fingerprint,
    split_url,
)

MAGIC_COOKIE = b"\x63\x82\x53\x63"
BOOTREQUEST = 1
BOOTREPLY = 2
BROADCAST_FLAG = 0x8000
_HEADER = struct.Struct("!BBBBIHH4s4s4s4s16s64s128s")  # RFC 2131 §2, figure 1: 236 octets
# RFC 951 fixed the BOOTP message at 300 octets and RFC 1542 keeps that as the minimum;
# relays and old servers drop shorter requests, so clients pad up to it.
MIN_MESSAGE = 300

DISCOVER, OFFER, REQUEST, DECLINE, ACK, NAK, RELEASE, INFORM = 1, 2, 3, 4, 5, 6, 7, 8
MESSAGE_TYPES: Mapping[int, str] = {
    1: "DISCOVER",
    2: "OFFER",
    3: "REQUEST",
    4: "DECLINE",
    5: "ACK",
    6: "NAK",
    7: "RELEASE",
    8: "INFORM",
}

# What a provisioning-minded device asks for: subnet, router, DNS, domain, vendor (43), TFTP
# name (66), ONIE URL (114), SIP server (120), vendor-identifying (125), SZTP (143), Cisco TFTP
# list (150), Polycom URL (160), site-specific (224).
DEFAULT_REQUEST_OPTIONS: tuple[int, ...] = (1, 3, 6, 15, 43, 66, 114, 120, 125, 143, 150, 160, 224)

ONIE_ENTERPRISE = 42623  # ONIE's IANA enterprise number, used in option 125 (RFC 3925)


class DhcpDecodeError(ValueError):
    """A datagram is not a DHCP message the device can read; the message says why."""


@dataclass(frozen=True, slots=True)
class DeviceIdentity:
    """What a device puts in every DHCP request: its MAC and how it describes itself."""

    mac: str  # aa:bb:cc:dd:ee:ff
    vendor_class: str | None = None  # option 60, e.g. "MS-UC-Client", "yealink", "Polycom-VVX"
    request_options: tuple[int, ...] = DEFAULT_REQUEST_OPTIONS  # option 55
    client_id: bytes | None = None  # option 61 value, None: not sent
    hostname: str | None = None  # option 12
    max_message_size: int | None = None  # option 57; None: the 576-octet default applies

    @property
    def mac_bytes(self) -> bytes:
        """The MAC as six octets."""
        return mac_to_bytes(self.mac)


def mac_to_bytes(mac: str) -> bytes:
    """Parse `aa:bb:cc:dd:ee:ff` (or `-` separated, or 12 bare hex digits) into six octets."""
    digits = mac.strip().replace(":", "").replace("-", "").replace(".", "")
    if len(digits) != 12:
        raise ValueError(f"{mac!r} is not a MAC address (need 12 hex digits)")
    try:
        return bytes.fromhex(digits)
    except ValueError:
        raise ValueError(f"{mac!r} is not a MAC address (not hex)") from None


def mac_to_text(raw: bytes) -> str:
    """Six octets as `aa:bb:cc:dd:ee:ff`."""
    return ":".join(f"{b:02x}" for b in raw)


def ethernet_client_id(mac: str) -> bytes:
    """Option 61 value `01 <mac>` (RFC 2132 §9.14: type 1 = Ethernet hardware address)."""
    return b"\x01" + mac_to_bytes(mac)


# --- building requests -------------------------------------------------------------------


def _build(
    identity: DeviceIdentity,
    *,
    message_type: int,
    xid: int,
    secs: int,
    broadcast: bool,
    ciaddr: str = "0.0.0.0",
    requested_ip: str | None = None,
    server_id: str | None = None,
) -> bytes:
    if not 0 <= xid <= 0xFFFFFFFF:
        raise ValueError(f"xid {xid} does not fit in 32 bits")
    mac = identity.mac_bytes
    # Option order: 53 first (some servers stop looking for it after the first option), then
    # the identity (61), the REQUEST selectors (50, 54), then 12, 55, 57 and 60 last, as
    # dhcpcd and udhcpc do. Tests pin this order.
    options: list[Any] = [("message-type", message_type)]
    if identity.client_id is not None:
        options.append(("client_id", identity.client_id))
    if requested_ip is not None:
        options.append(("requested_addr", requested_ip))
    if server_id is not None:
        options.append(("server_id", server_id))
    if identity.hostname:
        options.append(("hostname", identity.hostname.encode("ascii")))
    if identity.request_options:
        options.append(("param_req_list", list(identity.request_options)))
    if identity.max_message_size is not None:
        options.append(("max_dhcp_size", identity.max_message_size))
    if identity.vendor_class is not None:
        options.append(("vendor_class_id", identity.vendor_class.encode("ascii")))
    options.append("end")
    packet = BOOTP(
        op=BOOTREQUEST,
        htype=1,
        hlen=6,
        xid=xid,
        secs=min(secs, 0xFFFF),
        flags=BROADCAST_FLAG if broadcast else 0,
        ciaddr=ciaddr,
        chaddr=mac + b"\x00" * 10,
    ) / DHCP(options=options)
    raw = bytes(packet)
    # Pad (option 0) after `end` up to the BOOTP minimum, as real clients do.
    return raw + b"\x00" * max(0, MIN_MESSAGE - len(raw))


def build_inform(
    identity: DeviceIdentity, *, xid: int, ciaddr: str, secs: int = 0, broadcast: bool = False
) -> bytes:
    """DHCPINFORM from a device that already has `ciaddr` (RFC 2131 §4.4.3)."""
    if ipaddress.IPv4Address(ciaddr) == ipaddress.IPv4Address(0):
        raise ValueError("DHCPINFORM needs the device's address in ciaddr (RFC 2131 §4.4.3)")
    return _build(
        identity, message_type=INFORM, xid=xid, secs=secs, broadcast=broadcast, ciaddr=ciaddr
    )


def build_discover(
    identity: DeviceIdentity, *, xid: int, secs: int = 0, broadcast: bool = True
) -> bytes:
    """DHCPDISCOVER from an unconfigured device (RFC 2131 §4.4.1)."""
    return _build(identity, message_type=DISCOVER, xid=xid, secs=secs, broadcast=broadcast)


def build_request(
    identity: DeviceIdentity,
    *,
    xid: int,
    server_id: str,
    requested_ip: str | None,
    secs: int = 0,
    broadcast: bool = True,
) -> bytes:
    """DHCPREQUEST in SELECTING state: ciaddr 0, option 54 set, option 50 when an address
    was offered (RFC 2131 §4.3.2); a proxy offer (yiaddr 0) has none, so 50 is left out."""
    return _build(
        identity,
        message_type=REQUEST,
        xid=xid,
        secs=secs,
        broadcast=broadcast,
        requested_ip=requested_ip,
        server_id=server_id,
    )


def wrap_frame(
    payload: bytes,
    *,
    src_mac: str,
    src_ip: str,
    dst_ip: str = "255.255.255.255",
    dst_mac: str = "ff:ff:ff:ff:ff:ff",
    sport: int = 68,
    dport: int = 67,
) -> bytes:
    """An Ethernet/IPv4/UDP frame around a DHCP payload, checksums filled in by scapy."""
    frame = (
        Ether(src=src_mac, dst=dst_mac)
        / IP(src=src_ip, dst=dst_ip, ttl=64)
        / UDP(sport=sport, dport=dport)
        / payload
    )
    return bytes(frame)


@dataclass(frozen=True, slots=True)
class UdpFrame:
    """The parts of a received Ethernet/IPv4/UDP frame the device looks at."""

    dst_mac: bytes
    src_ip: str
    dst_ip: str
    sport: int
    dport: int
    payload: bytes


def unwrap_frame(frame: bytes) -> UdpFrame | None:
    """Return the UDP datagram inside an Ethernet II/IPv4 frame, or None if it is not one."""
    if len(frame) < 14 + 20 + 8 or frame[12:14] != b"\x08\x00":
        return None
    ip = frame[14:]
    if ip[0] >> 4 != 4 or ip[9] != 17:
        return None
    ihl = (ip[0] & 0x0F) * 4
    total = int.from_bytes(ip[2:4], "big")
    flags_frag = int.from_bytes(ip[6:8], "big")
    if ihl < 20 or total > len(ip) or total < ihl + 8 or flags_frag & 0x3FFF:
        return None  # truncated, or a fragment: DHCP replies are never fragmented in practice
    udp = ip[ihl:total]
    length = int.from_bytes(udp[4:6], "big")
    if length < 8 or length > len(udp):
        return None
    return UdpFrame(
        dst_mac=frame[0:6],
        src_ip=str(ipaddress.IPv4Address(ip[12:16])),
        dst_ip=str(ipaddress.IPv4Address(ip[16:20])),
        sport=int.from_bytes(udp[0:2], "big"),
        dport=int.from_bytes(udp[2:4], "big"),
        payload=bytes(udp[8:length]),
    )


# --- decoding replies (by hand, not with scapy: the decoder is what the device trusts) ----


@dataclass(frozen=True, slots=True)
class DhcpMessage:
    """A decoded BOOTP/DHCP message as a device sees it."""

    op: int
    htype: int
    hlen: int
    hops: int
    xid: int
    secs: int
    flags: int
    ciaddr: str
    yiaddr: str
    siaddr: str
    giaddr: str
    chaddr: bytes  # the first hlen octets
    sname: bytes
    file: bytes
    # Option code -> value; several instances of one code are joined (RFC 3396 §5).
    options: Mapping[int, bytes]
    option_order: tuple[int, ...]  # codes in the order they first appeared
    problems: tuple[str, ...] = field(default=())

    @property
    def message_type(self) -> int | None:
        """Option 53, or None when absent or malformed."""
        value = self.options.get(53)
        return value[0] if value is not None and len(value) == 1 else None

    @property
    def message_type_name(self) -> str:
        """Option 53 as a name (`ACK`, `OFFER`, ...)."""
        kind = self.message_type
        return MESSAGE_TYPES.get(kind, f"TYPE-{kind}") if kind is not None else "BOOTP"

    @property
    def server_id(self) -> str | None:
        """Option 54 as dotted quad, or None."""
        value = self.options.get(54)
        return str(ipaddress.IPv4Address(value)) if value is not None and len(value) == 4 else None


def _walk_options(area: bytes, where: str, found: list[tuple[int, bytes]]) -> bool:
    """Append (code, value) from one option area; return True if an `end` option was seen."""
    i = 0
    while i < len(area):
        code = area[i]
        if code == 0:  # pad
            i += 1
            continue
        if code == 255:
            return True
        if i + 1 >= len(area):
            raise DhcpDecodeError(f"option {code} in {where} has no length octet")
        length = area[i + 1]
        end = i + 2 + length
        if end > len(area):
            raise DhcpDecodeError(
                f"option {code} in {where} claims {length} octets, only {len(area) - i - 2} left"
            )
        found.append((code, area[i + 2 : end]))
        i = end
    return False


def decode_message(data: bytes) -> DhcpMessage:
    """Decode a BOOTP/DHCP datagram, or raise DhcpDecodeError saying what is wrong with it."""
    if len(data) < _HEADER.size + 4:
        raise DhcpDecodeError(f"{len(data)} octets is shorter than a DHCP header and cookie")
    (op, htype, hlen, hops, xid, secs, flags, ci, yi, si, gi, chaddr, sname, file_) = (
        _HEADER.unpack_from(data)
    )
    if data[_HEADER.size : _HEADER.size + 4] != MAGIC_COOKIE:
        raise DhcpDecodeError("no DHCP magic cookie (RFC 2131 §3)")
    if hlen > 16:
        raise DhcpDecodeError(f"hlen {hlen} is longer than chaddr")
    problems: list[str] = []
    found: list[tuple[int, bytes]] = []
    if not _walk_options(data[_HEADER.size + 4 :], "options", found):
        problems.append("options field has no end option")
    # Option overload (RFC 2132 §9.3): file, then sname, carry more options after the field.
    overload = next((v for c, v in found if c == 52), None)
    if overload is not None:
        if len(overload) != 1 or overload[0] not in (1, 2, 3):
            raise DhcpDecodeError(f"option 52 (overload) has a bad value {overload.hex()}")
        if overload[0] & 1 and not _walk_options(file_, "file", found):
            problems.append("overloaded file field has no end option")
        if overload[0] & 2 and not _walk_options(sname, "sname", found):
            problems.append("overloaded sname field has no end option")
    options: dict[int, bytes] = {}
    order: list[int] = []
    for code, value in found:
        if code in options:
            options[code] += value  # RFC 3396 §5: concatenate in the order they appear
        else:
            options[code] = value
            order.append(code)
    return DhcpMessage(
        op=op,
        htype=htype,
        hlen=hlen,
        hops=hops,
        xid=xid,
        secs=secs,
        flags=flags,
        ciaddr=str(ipaddress.IPv4Address(ci)),
        yiaddr=str(ipaddress.IPv4Address(yi)),
        siaddr=str(ipaddress.IPv4Address(si)),
        giaddr=str(ipaddress.IPv4Address(gi)),
        chaddr=chaddr[:hlen],
        sname=b"" if overload and overload[0] & 2 else sname.rstrip(b"\x00"),
        file=b"" if overload and overload[0] & 1 else file_.rstrip(b"\x00"),
        options=options,
        option_order=tuple(order),
        problems=tuple(problems),
    )


# --- provisioning information --------------------------------------------------------------


def _text(code: int, value: bytes, problems: list[str]) -> str | None:
    """An NVT ASCII option value as text; a trailing NUL is tolerated but noted (RFC 2132 §2)."""
    if value.endswith(b"\x00"):
        problems.append(f"option {code} ends with NUL (RFC 2132 §2: it should not)")
        value = value.rstrip(b"\x00")
    try:
        text = value.decode("ascii")
    except UnicodeDecodeError:
        problems.append(f"option {code} is not ASCII text")
        return None
    if not text.isprintable():
        problems.append(f"option {code} holds control characters")
        return None
    return text


def _url_option(code: int, source: str, value: bytes, found: _Found) -> None:
    """An option whose text is a provisioning URL (Polycom 160, ONIE 114, site 224)."""
    text = _text(code, value, found.problems)
    if text and looks_like_url(text):
        found.add_url(source, text)
    elif text:
        found.problems.append(f"option {code} {text!r} is not a URL")


def _suboptions(value: bytes) -> list[tuple[int, bytes]] | None:
    """Split `code len data` sub-options; None if they do not tile `value` exactly."""
    out: list[tuple[int, bytes]] = []
    i = 0
    while i < len(value):
        code = value[i]
        if code in (0, 255):  # pad/end inside an encapsulated area (RFC 2132 §8.4)
            i += 1
            continue
        if i + 1 >= len(value) or i + 2 + value[i + 1] > len(value):
            return None
        out.append((code, value[i + 2 : i + 2 + value[i + 1]]))
        i += 2 + value[i + 1]
    return out


def _dns_names(value: bytes, code: int, problems: list[str]) -> list[str]:
    """Uncompressed RFC 1035 §3.1 names, one after another (as option 120 carries them)."""
    names: list[str] = []
    i = 0
    labels: list[str] = []
    while i < len(value):
        length = value[i]
        if length & 0xC0:
            # A compression pointer has no message to point into inside an option.
            problems.append(f"option {code} uses a compression pointer; refused")
            return names
        if length == 0:
            if labels:
                names.append(".".join(labels))
            else:
                problems.append(f"option {code} holds an empty name")
            labels = []
            i += 1
            continue
        if i + 1 + length > len(value):
            problems.append(f"option {code} has a label running past its end")
            return names
        try:
            labels.append(value[i + 1 : i + 1 + length].decode("ascii"))
        except UnicodeDecodeError:
            problems.append(f"option {code} has a non-ASCII label")
            return names
        i += 1 + length
    if labels:
        problems.append(f"option {code} ends inside a name (no root label)")
    return names


def _ipv4_list(value: bytes, code: int, problems: list[str]) -> list[str]:
    if not value or len(value) % 4:
        problems.append(f"option {code} length {len(value)} is not a positive multiple of 4")
        return []
    return [str(ipaddress.IPv4Address(value[i : i + 4])) for i in range(0, len(value), 4)]


def _sztp_uris(value: bytes, problems: list[str]) -> list[str]:
    """RFC 8572 §8.1: each URI is a 2-octet length then that many octets."""
    uris: list[str] = []
    if not value:
        problems.append("option 143 is empty")
        return uris
    i = 0
    while i < len(value):
        if i + 2 > len(value):
            break
        length = int.from_bytes(value[i : i + 2], "big")
        if length == 0 or i + 2 + length > len(value):
            break
        chunk = value[i + 2 : i + 2 + length]
        try:
            uri = chunk.decode("ascii")
        except UnicodeDecodeError:
            break
        if not looks_like_url(uri):
            break
        uris.append(uri)
        i += 2 + length
    else:
        for uri in uris:
            if not uri.lower().startswith("https://"):
                problems.append(f"option 143 URI {uri!r} is not https (RFC 8572 §8.1)")
        return uris
    if looks_like_url(value.decode("ascii", errors="replace")):
        problems.append(
            "option 143 is plain text, not RFC 8572 §8.1 length-prefixed URIs; "
            "an SZTP device would reject it"
        )
    else:
        problems.append("option 143 is not a valid RFC 8572 §8.1 URI list")
    return []


@dataclass
class _Found:
    urls: dict[str, list[str]] = field(default_factory=dict)  # source -> urls
    fingerprints: list[str] = field(default_factory=list)
    profiles: list[str] = field(default_factory=list)
    sip: list[str] = field(default_factory=list)
    tftp: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def add_url(self, source: str, url: str) -> None:
        self.urls.setdefault(source, []).append(url)
        if source not in self.profiles:
            self.profiles.append(source)


def _ms_uc(subs: list[tuple[int, bytes]], found: _Found) -> None:
    """Option 43 as Lync/Skype for Business phones read it (sub-options 1..5, ASCII)."""
    fields: dict[int, str] = {}
    for code, data in subs:
        text = _text(43, data, found.problems)
        if text is not None and code not in fields:
            fields[code] = text
    if fields.get(1) != "MS-UC-Client":
        found.problems.append(
            f"option 43 sub-option 1 is {fields.get(1)!r}, an MS-UC-Client phone wants "
            "'MS-UC-Client'"
        )
    if 6 in fields:
        fp = normalize_fingerprint(fields[6])
        if fp:
            found.fingerprints.append(fp)
        else:
            found.problems.append(f"option 43 sub-option 6 {fields[6]!r} is not a SHA-256 pin")
    host = fields.get(3)
    if not host:
        found.problems.append("option 43 has no host (sub-option 3)")
        if "ms-uc-client" not in found.profiles:
            found.profiles.append("ms-uc-client")
        return
    scheme = fields.get(2)
    if not scheme:
        found.problems.append("option 43 has no protocol (sub-option 2); assuming https")
        scheme = "https"
    port = fields.get(4)
    if port is not None and not (port.isdigit() and 0 < int(port) < 65536):
        found.problems.append(f"option 43 sub-option 4 port {port!r} is not a number 1..65535")
        port = None
    path = fields.get(5, "")
    if path and not path.startswith("/"):
        found.problems.append(f"option 43 sub-option 5 path {path!r} does not start with '/'")
        path = "/" + path
    found.add_url("ms-uc-client", f"{scheme}://{host}{':' + port if port else ''}{path}")


def _option_125(value: bytes, found: _Found) -> None:
    """RFC 3925 §4: enterprise number, data length, sub-options; ONIE's 42623 sub-option 1."""
    i = 0
    while i + 5 <= len(value):
        enterprise = int.from_bytes(value[i : i + 4], "big")
        length = value[i + 4]
        data = value[i + 5 : i + 5 + length]
        if len(data) != length:
            found.problems.append("option 125 has a vendor block running past its end")
            return
        if enterprise == ONIE_ENTERPRISE:
            subs = _suboptions(data)
            if subs is None:
                found.problems.append("option 125 ONIE block is not valid sub-options")
            else:
                for code, sub in subs:
                    text = _text(125, sub, found.problems) if code == 1 else None
                    if text and looks_like_url(text):
                        found.add_url("onie", text)
        i += 5 + length
    if i != len(value):
        found.problems.append("option 125 has trailing octets")


# Which encodings a device of a given kind looks at first, as prefixes of its option 60.
_PREFERENCE: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("MS-UC-Client", ("ms-uc-client",)),
    ("polycom", ("polycom", "tftp-server-name")),
    ("yealink", ("tftp-server-name", "vendor-url")),
    ("cisco", ("tftp-server-name",)),
    ("onie_vendor:", ("onie",)),
)
_DEFAULT_ORDER = (
    "sztp",
    "ms-uc-client",
    "polycom",
    "onie",
    "tftp-server-name",
    "vendor-url",
    "site-224",
)


def _preference(vendor_class: str | None) -> tuple[str, ...]:
    first: tuple[str, ...] = ()
    if vendor_class:
        for prefix, order in _PREFERENCE:
            # MS-UC-Client is matched case-sensitively, as the phones send and expect it.
            if prefix == "MS-UC-Client":
                if vendor_class == prefix:
                    first = order
                    break
            elif vendor_class.lower().startswith(prefix.lower()):
                first = order
                break
    return first + tuple(s for s in _DEFAULT_ORDER if s not in first)


def parse_provisioning(
    options: Mapping[int, bytes], vendor_class: str | None = None
) -> ProvisioningInfo:
    """Read every provisioning encoding Imprint may send; the device kind orders the URLs.

    Tolerant: anything malformed is listed in `problems` instead of raising.
    """
    found = _Found()
    if 43 in options:
        value = options[43]
        plain = value.rstrip(b"\x00").decode("ascii", errors="replace")
        if looks_like_url(plain):  # Yealink-style: option 43 is the URL itself
            found.add_url("vendor-url", plain)
        else:
            subs = _suboptions(value)
            if subs is None:
                found.problems.append("option 43 is neither a URL nor valid sub-options")
            elif any(code in (1, 2, 3, 4, 5) for code, _ in subs):
                _ms_uc(subs, found)
            else:
                found.problems.append("option 43 sub-options are not in a known layout")
    if 120 in options:
        value = options[120]
        if not value:
            found.problems.append("option 120 is empty")
        elif value[0] == 0:  # RFC 3361 §3.1: enc 0, then domain names
            found.sip.extend(_dns_names(value[1:], 120, found.problems))
        elif value[0] == 1:  # RFC 3361 §3.2: enc 1, then IPv4 addresses
            found.sip.extend(_ipv4_list(value[1:], 120, found.problems))
        else:
            found.problems.append(f"option 120 has unknown encoding octet {value[0]}")
        if found.sip and "ms-uc-client" not in found.profiles:
            found.profiles.append("sip-server")
    if 143 in options:
        for uri in _sztp_uris(options[143], found.problems):
            found.add_url("sztp", uri)
    if 160 in options:
        _url_option(160, "polycom", options[160], found)
    if 66 in options:
        text = _text(66, options[66], found.problems)
        if text and looks_like_url(text):
            found.add_url("tftp-server-name", text)
        elif text:  # RFC 2132 §9.4: a TFTP server name, not a URL
            found.tftp.append(text)
            found.profiles.append("tftp-server-name")
    if 150 in options:
        found.tftp.extend(_ipv4_list(options[150], 150, found.problems))
        found.profiles.append("cisco")
    if 114 in options:
        _url_option(114, "onie", options[114], found)
    if 125 in options:
        _option_125(options[125], found)
    if 224 in options:
        _url_option(224, "site-224", options[224], found)

    urls: list[str] = []
    for source in _preference(vendor_class):
        for url in found.urls.get(source, []):
            if url not in urls:
                urls.append(url)
    for url in urls:
        fp = fingerprint_from_url(url)
        if fp:
            found.fingerprints.append(fp)
    fingerprints = list(dict.fromkeys(found.fingerprints))
    if len(fingerprints) > 1:
        found.problems.append(f"answer carries {len(fingerprints)} different fingerprints")
    scheme = host = path = None
    port = None
    if urls:
        scheme, host, port, path, url_problems = split_url(urls[0])
        found.problems.extend(url_problems)
    return ProvisioningInfo(
        source="dhcp",
        url=urls[0] if urls else None,
        scheme=scheme,
        host=host,
        port=port,
        path=path,
        fingerprint=fingerprints[0] if fingerprints else None,
        vendor_profiles=tuple(dict.fromkeys(found.profiles)),
        urls=tuple(urls),
        sip_servers=tuple(found.sip),
        tftp_servers=tuple(found.tftp),
        problems=tuple(found.problems),
    )


def backoff_delay(attempt: int, initial: float, cap: float) -> float:
    """Delay before retransmission `attempt` (0-based): doubling from `initial`, capped
    (RFC 2131 §4.1: 4 s, 8 s, ... up to 64 s; the caller adds the ±1 s randomisation)."""
    return min(initial * float(1 << min(attempt, 30)), cap)


def options_as_hex(options: Mapping[int, bytes]) -> dict[str, str]:
    """Options as {"code": "hex"} for JSON output."""
    return {str(code): value.hex() for code, value in options.items()}


def requested_options_from_text(text: str) -> tuple[int, ...]:
    """Parse `1,3,6,43` into option codes 1..254, or raise ValueError naming the bad item."""
    codes: list[int] = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        if not item.isdigit() or not 1 <= int(item) <= 254:
            raise ValueError(f"{item!r} is not a DHCP option code (1..254)")
        codes.append(int(item))
    return tuple(codes)


def client_id_from_text(text: str, mac: str) -> bytes:
    """`auto` -> 01+MAC (RFC 2132 §9.14); otherwise hex octets (colons allowed)."""
    if text.strip().lower() == "auto":
        return ethernet_client_id(mac)
    digits = text.replace(":", "").replace("-", "").strip()
    try:
        raw = bytes.fromhex(digits)
    except ValueError:
        raise ValueError(f"client id {text!r} is not 'auto' or hex octets") from None
    if len(raw) < 2:
        raise ValueError("client id must be at least 2 octets (RFC 2132 §9.14)")
    return raw
