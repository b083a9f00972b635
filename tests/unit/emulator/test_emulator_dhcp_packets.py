"""The emulator's DHCP requests are what RFC 2131 says (checked by hand and by scapy), and its
decoder reads third-party and scapy-built messages correctly."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.dhcp import BOOTP, DHCP
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from device_emulator.dhcp_codec import (
    DeviceIdentity,
    DhcpDecodeError,
    backoff_delay,
    build_discover,
    build_inform,
    build_request,
    client_id_from_text,
    decode_message,
    ethernet_client_id,
    parse_provisioning,
    requested_options_from_text,
    unwrap_frame,
    wrap_frame,
)
from tests.helpers.fixtures import fixture_path

MAC = "02:00:5e:00:01:01"
MAC_BYTES = bytes.fromhex("02005e000101")
COOKIE = bytes([99, 130, 83, 99])
# A valid fixed header and cookie, so arbitrary bytes also reach the option walker.
COOKIE_PREFIX = bytes([2, 1, 6, 0]) + bytes(232) + COOKIE
PRL = (1, 3, 6, 15, 43, 66, 120, 150, 160, 224)


def fixture_packets(name: str) -> list[bytes]:
    """Hex payloads from a fixture file (one per non-comment line)."""
    lines = fixture_path(name).read_text().splitlines()
    return [bytes.fromhex(line) for line in lines if line and not line.startswith("#")]


def walk_options_by_hand(payload: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """Options in order, and what follows the end option. Written independently of the codec."""
    assert payload[236:240] == COOKIE
    i = 240
    out: list[tuple[int, bytes]] = []
    while payload[i] != 255:
        if payload[i] == 0:
            i += 1
            continue
        code, length = payload[i], payload[i + 1]
        out.append((code, payload[i + 2 : i + 2 + length]))
        i += 2 + length
    return out, payload[i + 1 :]


def scapy_options(raw: bytes) -> dict[str, Any]:
    """Options as scapy's dissector names them, in order."""
    return {o[0]: o[1] for o in BOOTP(raw)[DHCP].options if isinstance(o, tuple)}


def identity(**kw: object) -> DeviceIdentity:
    base: dict[str, object] = {
        "mac": MAC,
        "vendor_class": "MS-UC-Client",
        "request_options": PRL,
        "client_id": ethernet_client_id(MAC),
    }
    base.update(kw)
    return DeviceIdentity(**base)  # type: ignore[arg-type]


def test_inform_header_fields_by_hand() -> None:
    raw = build_inform(identity(), xid=0x12345678, ciaddr="198.18.77.11", secs=3)
    assert raw[0] == 1  # BOOTREQUEST
    assert raw[1] == 1 and raw[2] == 6 and raw[3] == 0  # Ethernet, hlen 6, hops 0
    assert raw[4:8] == bytes.fromhex("12345678")
    assert raw[8:10] == b"\x00\x03"  # secs
    assert raw[10:12] == b"\x00\x00"  # INFORM from a configured device: no broadcast flag
    assert raw[12:16] == bytes([198, 18, 77, 11])  # ciaddr
    assert raw[16:28] == bytes(12)  # yiaddr, siaddr, giaddr
    assert raw[28:34] == MAC_BYTES and raw[34:44] == bytes(10)
    assert raw[44:236] == bytes(192)  # sname and file empty
    assert len(raw) >= 300  # padded to the BOOTP minimum


def test_inform_options_order_and_values_by_hand() -> None:
    raw = build_inform(identity(), xid=1, ciaddr="198.18.77.11")
    options, tail = walk_options_by_hand(raw)
    assert options == [
        (53, b"\x08"),
        (61, b"\x01" + MAC_BYTES),
        (55, bytes(PRL)),
        (60, b"MS-UC-Client"),
    ]
    assert set(tail) <= {0}  # only pad after end


def test_inform_parses_with_scapy() -> None:
    raw = build_inform(identity(vendor_class="yealink"), xid=0xDEADBEEF, ciaddr="10.1.2.3")
    pkt = BOOTP(raw)
    assert pkt.op == 1 and pkt.xid == 0xDEADBEEF and pkt.ciaddr == "10.1.2.3"
    assert pkt.chaddr[:6] == MAC_BYTES
    opts = scapy_options(raw)
    assert next(iter(opts.items())) == ("message-type", 8)
    assert opts["vendor_class_id"] == b"yealink"
    assert opts["param_req_list"] == list(PRL)
    assert opts["client_id"] == b"\x01" + MAC_BYTES


def test_inform_without_client_id_leaves_61_out() -> None:
    raw = build_inform(identity(client_id=None), xid=1, ciaddr="10.0.0.2")
    codes = [c for c, _ in walk_options_by_hand(raw)[0]]
    assert codes == [53, 55, 60]


def test_inform_refuses_zero_ciaddr() -> None:
    with pytest.raises(ValueError, match="ciaddr"):
        build_inform(identity(), xid=1, ciaddr="0.0.0.0")


def test_discover_sets_broadcast_flag_and_no_ciaddr() -> None:
    raw = build_discover(identity(hostname="phone1", max_message_size=1500), xid=7)
    assert raw[10:12] == b"\x80\x00"
    assert raw[12:16] == bytes(4)
    options, _ = walk_options_by_hand(raw)
    assert options == [
        (53, b"\x01"),
        (61, b"\x01" + MAC_BYTES),
        (12, b"phone1"),
        (55, bytes(PRL)),
        (57, b"\x05\xdc"),
        (60, b"MS-UC-Client"),
    ]
    pkt = BOOTP(raw)
    assert pkt.flags == 0x8000
    assert pkt[DHCP].options[0] == ("message-type", 1)


def test_request_selecting_carries_50_and_54() -> None:
    raw = build_request(
        identity(), xid=0xABCDEF01, server_id="198.18.77.1", requested_ip="198.18.77.50"
    )
    assert raw[4:8] == bytes.fromhex("abcdef01")
    assert raw[12:16] == bytes(4)  # RFC 2131 §4.3.2: ciaddr 0 in SELECTING
    options, _ = walk_options_by_hand(raw)
    assert options[:4] == [
        (53, b"\x03"),
        (61, b"\x01" + MAC_BYTES),
        (50, bytes([198, 18, 77, 50])),
        (54, bytes([198, 18, 77, 1])),
    ]
    scapy_opts = scapy_options(raw)
    assert scapy_opts["requested_addr"] == "198.18.77.50"
    assert scapy_opts["server_id"] == "198.18.77.1"


def test_request_after_proxy_offer_has_no_option_50() -> None:
    raw = build_request(identity(), xid=5, server_id="198.18.77.1", requested_ip=None)
    codes = [c for c, _ in walk_options_by_hand(raw)[0]]
    assert 50 not in codes and 54 in codes


def test_our_inform_has_the_shape_dhcpcd_sends() -> None:
    """Same fixed header and cookie position as a real dhcpcd INFORM from the fixtures."""
    real = fixture_packets("dhcp/dhcpcd-inform-ms-uc-client.hex")[0]
    ours = build_inform(identity(), xid=1, ciaddr="198.18.77.11")
    for raw in (real, ours):
        msg = decode_message(raw)
        assert (msg.op, msg.htype, msg.hlen) == (1, 1, 6)
        assert msg.message_type == 8 and msg.ciaddr == "198.18.77.11"
        assert msg.options[60] == b"MS-UC-Client"
        assert msg.chaddr == MAC_BYTES


def test_decoder_reads_dhcpcd_inform_fixture() -> None:
    msg = decode_message(fixture_packets("dhcp/dhcpcd-inform-ms-uc-client.hex")[0])
    assert msg.xid == 0x5CA4B328
    assert msg.option_order == (53, 55, 57, 61, 60, 145)
    assert 43 in msg.options[55]
    assert msg.options[57] == b"\x05\xc0"
    assert msg.problems == ()


def test_decoder_reads_relayed_perfdhcp_fixture() -> None:
    msg = decode_message(fixture_packets("dhcp/perfdhcp-relayed-discover.hex")[0])
    assert msg.giaddr == "198.18.77.12" and msg.hops == 1
    assert msg.message_type == 1
    assert msg.chaddr == bytes.fromhex("02005e000201")


def test_decoder_reads_scapy_built_ack() -> None:
    reply = BOOTP(
        op=2, xid=99, yiaddr="0.0.0.0", ciaddr="10.0.0.5", chaddr=MAC_BYTES + bytes(10)
    ) / DHCP(options=[("message-type", "ack"), ("server_id", "10.0.0.1"), (224, b"x"), "end"])
    msg = decode_message(bytes(reply))
    assert (msg.op, msg.xid, msg.message_type_name, msg.server_id) == (2, 99, "ACK", "10.0.0.1")
    assert msg.options[224] == b"x"
    assert msg.ciaddr == "10.0.0.5"


def test_decoder_joins_split_options_rfc3396() -> None:
    long_url = b"https://imprint.example.com/" + b"p" * 300
    split = [(160, long_url[:255]), (160, long_url[255:])]
    reply = BOOTP(op=2, xid=1, chaddr=MAC_BYTES) / DHCP(
        options=[("message-type", "ack"), *split, "end"]
    )
    msg = decode_message(bytes(reply))
    assert msg.options[160] == long_url


def test_decoder_reads_overloaded_file_field() -> None:
    file_field = bytes([224, 3]) + b"abc" + b"\xff"
    raw = bytearray(
        bytes(
            BOOTP(op=2, xid=1, chaddr=MAC_BYTES, file=file_field)
            / DHCP(options=[("message-type", "ack"), (52, b"\x01"), "end"])
        )
    )
    msg = decode_message(bytes(raw))
    assert msg.options[224] == b"abc"
    assert msg.file == b""


@pytest.mark.parametrize(
    ("mangle", "reason"),
    [
        (lambda b: b[:200], "shorter"),
        (lambda b: b[:236] + b"\x00\x00\x00\x00" + b[240:], "cookie"),
        (lambda b: b[:240] + b"\x35\x09\x05", "claims"),
        (lambda b: b[:240] + b"\x35", "no length"),
        (lambda b: b[:240] + b"\x34\x01\x07\xff", "overload"),
    ],
)
def test_decoder_refuses_malformed(mangle: object, reason: str) -> None:
    good = bytes(BOOTP(op=2, xid=1) / DHCP(options=[("message-type", "ack"), "end"]))
    with pytest.raises(DhcpDecodeError, match=reason):
        decode_message(mangle(good))  # type: ignore[operator]


def test_frame_round_trip_with_scapy_oracle() -> None:
    payload = build_discover(identity(), xid=0x42)
    frame = wrap_frame(payload, src_mac=MAC, src_ip="0.0.0.0")
    pkt = Ether(frame)
    assert pkt.dst == "ff:ff:ff:ff:ff:ff" and pkt.src == MAC
    assert pkt[IP].dst == "255.255.255.255" and pkt[UDP].dport == 67 and pkt[UDP].sport == 68
    udp = unwrap_frame(frame)
    assert udp is not None
    assert udp.payload == payload and udp.dport == 67 and udp.dst_mac == b"\xff" * 6


def test_unwrap_frame_skips_non_udp_and_fragments() -> None:
    tcp_like = bytearray(wrap_frame(b"x" * 10, src_mac=MAC, src_ip="1.2.3.4"))
    tcp_like[14 + 9] = 6
    assert unwrap_frame(bytes(tcp_like)) is None
    frag = bytearray(wrap_frame(b"x" * 10, src_mac=MAC, src_ip="1.2.3.4"))
    frag[14 + 6] = 0x20  # more-fragments
    assert unwrap_frame(bytes(frag)) is None
    assert unwrap_frame(b"\x00" * 20) is None


def test_backoff_doubles_and_caps() -> None:
    assert [backoff_delay(i, 4.0, 64.0) for i in range(7)] == [4, 8, 16, 32, 64, 64, 64]


def test_command_line_helpers() -> None:
    assert requested_options_from_text("1, 3,43") == (1, 3, 43)
    with pytest.raises(ValueError, match="255"):
        requested_options_from_text("1,255")
    assert client_id_from_text("auto", MAC) == b"\x01" + MAC_BYTES
    assert client_id_from_text("ff:00:01", MAC) == b"\xff\x00\x01"
    with pytest.raises(ValueError):
        client_id_from_text("zz", MAC)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_decoder_raises_only_decode_error_on_arbitrary_bytes(data: bytes) -> None:
    with contextlib.suppress(DhcpDecodeError):
        decode_message(COOKIE_PREFIX + data if len(data) % 2 else data)


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from([43, 66, 114, 120, 125, 143, 150, 160, 224]), st.binary(max_size=300)
    ),
    st.sampled_from([None, "MS-UC-Client", "yealink", "Polycom-VVX", "onie_vendor:x86"]),
)
def test_parse_provisioning_never_raises(options: dict[int, bytes], vendor: str | None) -> None:
    info = parse_provisioning(options, vendor)
    assert info.url is None or info.url in info.urls
