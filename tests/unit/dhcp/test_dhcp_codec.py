"""DHCPv4 codec: real captured packets, scapy as the independent oracle, every malformed-input code."""

from __future__ import annotations

import pytest
from scapy.layers.dhcp import BOOTP, DHCP, DHCPRevOptions

from server.dhcp.codec import (
    BOOTP_MIN_LEN,
    BOOTREPLY,
    BOOTREQUEST,
    MAX_DATAGRAM,
    DecodeError,
    DecodeReason,
    DhcpMessage,
    EncodeError,
    MessageType,
    decode,
    encode,
    fit_options,
    ip_bytes,
    max_message_size,
    message_size,
)
from tests.helpers.fixtures import load_hex_fixture

MAGIC = b"\x63\x82\x53\x63"
MAC1 = bytes.fromhex("02005e000101")


def scapy_options(data: bytes) -> dict[int, bytes]:
    """Options of `data` as scapy dissects them, turned back into raw values per code."""
    out: dict[int, bytes] = {}
    for opt in BOOTP(data)[DHCP].options:
        if not isinstance(opt, tuple):
            continue
        name, *vals = opt
        if isinstance(name, int):
            raw = b"".join(bytes(v) for v in vals)
            code = name
        else:
            code, field = DHCPRevOptions[name]
            if field is None:
                raw = b"".join(bytes(v) for v in vals)
            else:
                raw = b"".join(field.addfield(None, b"", field.any2i(None, v)) for v in vals)
        out[code] = out.get(code, b"") + raw
    return out


def scapy_option_order(data: bytes) -> list[int]:
    order: list[int] = []
    for opt in BOOTP(data)[DHCP].options:
        if isinstance(opt, tuple):
            code = opt[0] if isinstance(opt[0], int) else DHCPRevOptions[opt[0]][0]
            order.append(code)
    return order


def raw_packet(options_area: bytes, *, sname: bytes = b"", file: bytes = b"", op: int = 1) -> bytes:
    """A BOOTP header built by scapy, then our hand-written options area (no codec involved)."""
    header = bytes(BOOTP(op=op, xid=0x01020304, chaddr=MAC1, sname=sname, file=file))
    assert len(header) == 236
    return header + MAGIC + options_area


FIXTURES = {
    "dhcp/dhcpcd-inform-ms-uc-client.hex": (MessageType.INFORM, "02005e000101"),
    "dhcp/dhcpcd-discover.hex": (MessageType.DISCOVER, "02005e000102"),
    "dhcp/udhcpc-discover-yealink.hex": (MessageType.DISCOVER, "02005e000102"),
    "dhcp/perfdhcp-relayed-discover.hex": (MessageType.DISCOVER, "02005e000201"),
}


@pytest.mark.parametrize("relpath", sorted(FIXTURES))
def test_captured_packets_decode_like_scapy_dissects_them(relpath: str) -> None:
    (_src, data), *_ = load_hex_fixture(relpath)
    msg = decode(data)
    want_type, want_mac = FIXTURES[relpath]
    assert msg.op == BOOTREQUEST
    assert msg.msg_type == want_type
    assert msg.chaddr.hex() == want_mac
    ref = BOOTP(data)
    assert msg.xid == ref.xid
    assert msg.flags == int(ref.flags)
    assert msg.ciaddr == ip_bytes(ref.ciaddr)
    assert msg.giaddr == ip_bytes(ref.giaddr)
    assert msg.hops == ref.hops
    assert msg.options == scapy_options(data)
    assert list(msg.options) == scapy_option_order(data)


def test_inform_fixture_has_the_fields_the_readme_describes() -> None:
    (src, data), *_ = load_hex_fixture("dhcp/dhcpcd-inform-ms-uc-client.hex")
    msg = decode(data)
    assert src == "198.18.77.11:68"
    assert msg.ciaddr == ip_bytes("198.18.77.11")
    assert msg.options[60] == b"MS-UC-Client"
    assert 43 in msg.options[55]


def test_relayed_fixture_keeps_giaddr_and_hops() -> None:
    (src, data), *_ = load_hex_fixture("dhcp/perfdhcp-relayed-discover.hex")
    msg = decode(data)
    assert src.endswith(":67")
    assert msg.giaddr == ip_bytes("198.18.77.12")
    assert msg.hops == 1


def test_scapy_built_packet_decodes_field_for_field() -> None:
    pkt = BOOTP(
        op=1,
        xid=0xDEADBEEF,
        flags=0x8000,
        ciaddr="198.18.77.50",
        giaddr="10.0.0.1",
        hops=2,
        chaddr=MAC1,
    ) / DHCP(
        options=[
            ("message-type", "request"),
            ("requested_addr", "198.18.77.100"),
            ("server_id", "198.18.77.1"),
            ("param_req_list", [1, 3, 6, 43, 120]),
            ("vendor_class_id", b"Polycom-VVX"),
            ("client_id", b"\x01" + MAC1),
            ("relay_agent_information", b"\x01\x04eth0"),
            "end",
        ]
    )
    msg = decode(bytes(pkt))
    assert (msg.xid, msg.flags, msg.hops) == (0xDEADBEEF, 0x8000, 2)
    assert msg.broadcast
    assert msg.ciaddr == ip_bytes("198.18.77.50")
    assert msg.giaddr == ip_bytes("10.0.0.1")
    assert msg.msg_type == MessageType.REQUEST
    assert msg.options[50] == ip_bytes("198.18.77.100")
    assert msg.options[54] == ip_bytes("198.18.77.1")
    assert msg.options[55] == bytes([1, 3, 6, 43, 120])
    assert msg.options[60] == b"Polycom-VVX"
    assert msg.options[61] == b"\x01" + MAC1
    assert msg.options[82] == b"\x01\x04eth0"


def _reply(options: dict[int, bytes], **kw: object) -> DhcpMessage:
    fields: dict[str, object] = {
        "op": BOOTREPLY,
        "xid": 0xCAFEF00D,
        "chaddr": MAC1,
        "options": options,
        "flags": 0x8000,
        "ciaddr": ip_bytes("198.18.77.11"),
        "yiaddr": ip_bytes("198.18.77.100"),
        "giaddr": ip_bytes("198.18.77.12"),
    }
    fields.update(kw)
    return DhcpMessage(**fields)  # type: ignore[arg-type]


def test_encoded_reply_is_dissected_by_scapy_with_same_fields_and_order() -> None:
    options = {
        53: bytes([MessageType.ACK]),
        54: ip_bytes("198.18.77.1"),
        1: ip_bytes("255.255.255.0"),
        3: ip_bytes("198.18.77.1"),
        51: (3600).to_bytes(4, "big"),
        43: b"\x01\x0cMS-UC-Client",
        150: ip_bytes("198.18.77.1") + ip_bytes("198.18.77.2"),
        61: b"\x01" + MAC1,
        82: b"\x01\x04eth0",
    }
    data = encode(_reply(options))
    ref = BOOTP(data)
    assert ref.op == BOOTREPLY and ref.xid == 0xCAFEF00D and int(ref.flags) == 0x8000
    assert ref.ciaddr == "198.18.77.11" and ref.yiaddr == "198.18.77.100"
    assert ref.giaddr == "198.18.77.12" and ref.siaddr == "0.0.0.0"
    assert ref.chaddr[:6] == MAC1 and ref.chaddr[6:] == bytes(10)
    assert scapy_options(data) == options
    assert scapy_option_order(data) == list(options)


def test_replies_are_padded_to_the_bootp_minimum() -> None:
    data = encode(_reply({53: b"\x05", 54: ip_bytes("198.18.77.1")}))
    assert len(data) == BOOTP_MIN_LEN
    assert data[240:250] == bytes([53, 1, 5, 54, 4, 198, 18, 77, 1, 255])


def test_long_option_is_split_in_255_octet_instances_and_rejoined() -> None:
    value = bytes(range(256)) * 2 + b"tail"  # 516 octets
    data = encode(_reply({53: b"\x05", 224: value}), max_size=1500)
    body = data[240:]
    assert body[3:5] == bytes([224, 255])
    assert body[5 + 255 : 5 + 257] == bytes([224, 255])
    assert body[5 + 255 + 257 : 5 + 255 + 259] == bytes([224, 6])
    assert decode(data).options[224] == value
    assert scapy_options(data)[224] == value  # scapy concatenates too (or our helper does)


def test_repeated_instances_on_the_wire_are_concatenated_in_order() -> None:
    area = (
        bytes([53, 1, 1, 224, 3])
        + b"abc"
        + bytes([12, 2])
        + b"hh"
        + bytes([224, 2])
        + b"de"
        + b"\xff"
    )
    msg = decode(raw_packet(area))
    assert msg.options[224] == b"abcde"
    assert list(msg.options) == [53, 224, 12]


def test_overload_reads_file_then_sname_after_the_options_field() -> None:
    file = bytes([224, 2]) + b"FI" + bytes([66, 3]) + b"tft" + b"\xff"
    sname = bytes([224, 2]) + b"SN" + b"\xff"
    area = bytes([53, 1, 8, 52, 1, 3, 224, 2]) + b"OP" + b"\xff"
    msg = decode(raw_packet(area, sname=sname, file=file))
    assert msg.options[224] == b"OPFISN"  # RFC 3396 §5 order: options, file, sname
    assert msg.options[66] == b"tft"


def test_overload_of_file_only_leaves_sname_alone() -> None:
    area = bytes([53, 1, 8, 52, 1, 1]) + b"\xff"
    msg = decode(raw_packet(area, sname=bytes([66, 1]) + b"x", file=bytes([67, 1]) + b"y"))
    assert msg.options[67] == b"y"
    assert 66 not in msg.options


def test_overload_option_inside_file_is_ignored() -> None:
    area = bytes([53, 1, 8, 52, 1, 1]) + b"\xff"
    msg = decode(
        raw_packet(
            area,
            file=bytes([52, 1, 2, 224, 1]) + b"z" + b"\xff",
            sname=b"\x00" * 10 + bytes([224, 40]),
        )
    )
    assert msg.options[52] == b"\x01"
    assert msg.options[224] == b"z"


def test_missing_end_option_is_tolerated() -> None:
    msg = decode(raw_packet(bytes([53, 1, 8, 60, 3]) + b"abc"))
    assert msg.options[60] == b"abc"


def test_pad_storm_then_message_type_decodes() -> None:
    msg = decode(raw_packet(b"\x00" * 1200 + bytes([53, 1, 8]) + b"\xff"))
    assert msg.msg_type == MessageType.INFORM


def test_a_datagram_longer_than_one_frame_is_refused_before_parsing() -> None:
    """The 65 KB datagram of 21,700 option pieces the issue measured at 11 ms of decoding."""
    flood = raw_packet(bytes([53, 1, 8]) + bytes([224, 1, 0x41]) * 21_700 + b"\xff")
    with pytest.raises(DecodeError) as exc:
        decode(flood)
    assert exc.value.reason is DecodeReason.TOO_LARGE and str(len(flood)) in str(exc.value)
    at_cap = raw_packet(bytes([53, 1, 8]) + b"\xff")
    at_cap += bytes(MAX_DATAGRAM - len(at_cap))
    assert decode(at_cap).msg_type == MessageType.INFORM
    with pytest.raises(DecodeError, match="DHCP_TOO_LARGE"):
        decode(at_cap + b"\x00")


def test_hundreds_of_pieces_of_one_option_join_in_wire_order() -> None:
    """Repeats are gathered and joined once (not concatenated pair by pair), in RFC 3396 §5
    order across the options field, file and sname."""
    area = bytes([53, 1, 8, 52, 1, 3])
    for i in range(400):
        area += bytes([224, 1, i % 256])
    file = bytes([224, 2]) + b"FI" + b"\xff"
    sname = bytes([224, 2]) + b"SN" + b"\xff"
    msg = decode(raw_packet(area + b"\xff", sname=sname, file=file))
    assert msg.options[224] == bytes(i % 256 for i in range(400)) + b"FISN"
    assert list(msg.options) == [53, 52, 224]


def test_anything_after_end_is_ignored() -> None:
    msg = decode(raw_packet(bytes([53, 1, 8, 255, 224, 200]) + b"\xff" * 50))
    assert list(msg.options) == [53]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", DecodeReason.TRUNCATED),
        (raw_packet(b"")[:239], DecodeReason.TRUNCATED),
        (raw_packet(bytes([53, 1, 1]), op=3), DecodeReason.BAD_OP),
        (raw_packet(bytes([53, 1, 1]), op=0), DecodeReason.BAD_OP),
        (
            raw_packet(bytes([53, 1, 1]))[:1] + b"\x06" + raw_packet(bytes([53, 1, 1]))[2:],
            DecodeReason.BAD_HTYPE,
        ),
        (
            raw_packet(bytes([53, 1, 1]))[:2] + b"\x10" + raw_packet(bytes([53, 1, 1]))[3:],
            DecodeReason.BAD_HLEN,
        ),
        (
            raw_packet(bytes([53, 1, 1]))[:236] + b"\x00\x00\x00\x00" + bytes([53, 1, 1]),
            DecodeReason.NO_COOKIE,
        ),
        (raw_packet(bytes([53, 1, 1, 60, 20]) + b"short"), DecodeReason.OPTION_OVERRUN),
        (raw_packet(bytes([53, 1, 1, 60])), DecodeReason.OPTION_OVERRUN),
        (raw_packet(bytes([60, 3]) + b"abc" + b"\xff"), DecodeReason.NO_MSG_TYPE),
        (raw_packet(b"\x00" * 300), DecodeReason.NO_MSG_TYPE),
        (raw_packet(b"\xff" * 300 + bytes([53, 1, 1])), DecodeReason.NO_MSG_TYPE),
        (raw_packet(bytes([53, 2, 1, 1]) + b"\xff"), DecodeReason.BAD_MSG_TYPE),
        (raw_packet(bytes([53, 1, 0]) + b"\xff"), DecodeReason.BAD_MSG_TYPE),
        (raw_packet(bytes([53, 1, 1, 52, 1, 4]) + b"\xff"), DecodeReason.BAD_OVERLOAD),
        (raw_packet(bytes([53, 1, 1, 52, 2, 1, 1]) + b"\xff"), DecodeReason.BAD_OVERLOAD),
        # overload pointing at garbage: file holds an option running past its 128 octets
        (
            raw_packet(bytes([53, 1, 1, 52, 1, 1]) + b"\xff", file=b"\x00" * 126 + bytes([224, 9])),
            DecodeReason.OPTION_OVERRUN,
        ),
        (
            raw_packet(bytes([53, 1, 1, 52, 1, 2]) + b"\xff", sname=b"\x07" * 64),
            DecodeReason.OPTION_OVERRUN,
        ),
    ],
)
def test_malformed_input_raises_decode_error_with_its_reason(
    data: bytes, reason: DecodeReason
) -> None:
    with pytest.raises(DecodeError) as exc:
        decode(data)
    assert exc.value.reason is reason


def test_overload_into_a_zeroed_field_is_just_pads() -> None:
    msg = decode(raw_packet(bytes([53, 1, 1, 52, 1, 3]) + b"\xff"))
    assert list(msg.options) == [53, 52]


def test_encode_refuses_more_than_576_unless_allowed() -> None:
    big = {53: b"\x05", 54: ip_bytes("198.18.77.1"), 224: b"x" * 300}
    assert message_size(big) == 240 + 3 + 6 + 2 * 2 + 300 + 1
    with pytest.raises(EncodeError):
        encode(_reply(big))  # 554 octets of payload > 548 (576 - IP/UDP headers)
    assert len(encode(_reply(big), max_size=1500)) == message_size(big)


def test_576_limit_is_exact() -> None:
    # 240 fixed + 3 (53) + 257 (224) + 2+n (225) + 1 (end) = 548, the budget at 576
    fill = {53: b"\x05", 224: b"y" * 255, 225: b"z" * (548 - 240 - 3 - 257 - 2 - 1)}
    assert len(encode(_reply(fill))) == 548
    fill[225] += b"z"
    with pytest.raises(EncodeError):
        encode(_reply(fill))


@pytest.mark.parametrize(
    ("opt57", "expected"),
    [(None, 576), (b"\x05\xc0", 1472), (b"\x01\xf4", 576), (b"\x23\x28", 1500), (b"\x05", 576)],
)
def test_max_message_size_follows_option_57_within_bounds(
    opt57: bytes | None, expected: int
) -> None:
    options = {53: b"\x03"}
    if opt57 is not None:
        options[57] = opt57
    req = DhcpMessage(op=1, xid=1, chaddr=MAC1, options=options)
    assert max_message_size(req) == expected


def test_fit_options_drops_from_the_end_but_never_kept_codes() -> None:
    options = {
        53: b"\x05",
        54: b"\x01\x02\x03\x04",
        43: b"a" * 200,
        224: b"b" * 200,
        61: b"\x01" + MAC1,
    }
    fit = fit_options(options, 576, keep={53, 54, 61})
    assert fit is not None
    kept, dropped = fit
    assert dropped == (224,)
    assert list(kept) == [53, 54, 43, 61]
    assert message_size(kept) <= 576 - 28
    assert fit_options(options, 1500, keep={53, 54, 61}) == (options, ())


def test_fit_options_reports_when_kept_options_alone_are_too_big() -> None:
    options = {53: b"\x05", 82: b"r" * 250, 61: b"c" * 250, 224: b"x"}
    assert fit_options(options, 576, keep={53, 61, 82}) is None
    long_kept = {53: b"\x05", 82: b"r" * 600}  # 600 octets: 3 instances, 606 on the wire
    assert fit_options(long_kept, 576, keep={53, 82}) is None
    assert fit_options(long_kept, 1500, keep={53, 82}) == (long_kept, ())


def test_encode_rejects_pad_and_end_codes() -> None:
    with pytest.raises(EncodeError):
        encode(_reply({53: b"\x05", 255: b""}))
