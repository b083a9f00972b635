"""The pure frame parser and the kernel filter, driven with frames scapy builds (no sockets).

The BPF program is run by a small classic-BPF interpreter written here from linux/filter.h, so
the filter is proved on bytes; tests/integration/mdns/test_mdns_packet_socket.py attaches it to
a real socket.
"""

from __future__ import annotations

import socket

import pytest
from scapy.layers.dns import DNS, DNSQR
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6, IPv6ExtHdrHopByHop
from scapy.layers.l2 import Dot1Q, Ether

from server.mdns.codec import decode_query
from server.mdns.frames import (
    SNAP_LEN,
    BpfInsn,
    FrameError,
    FrameReason,
    mdns_filter,
    pack_filter,
    parse_frame,
)

MAC = "02:00:5e:00:01:0b"
QUERY = DNS(id=0, qd=DNSQR(qname="_imprint._tcp.local.", qtype="PTR", unicastresponse=1))


def run_bpf(program: tuple[BpfInsn, ...], packet: bytes) -> int:
    """Execute a classic BPF program the way the kernel does; out-of-range loads drop."""
    a = x = 0
    pc = 0
    while True:
        code, jt, jf, k = program[pc]
        pc += 1
        cls = code & 0x07
        if cls == 0x06:  # RET
            return k
        if cls in (0x00, 0x01):  # LD / LDX
            mode, size = code & 0xE0, code & 0x18
            if cls == 0x01 and mode == 0xA0:  # LDX MSH
                if k >= len(packet):
                    return 0
                x = 4 * (packet[k] & 0x0F)
                continue
            at = k + (x if mode == 0x40 else 0)
            width = {0x00: 4, 0x08: 2, 0x10: 1}[size]
            if at + width > len(packet):
                return 0
            a = int.from_bytes(packet[at : at + width], "big")
            continue
        if cls == 0x05:  # JMP
            op = code & 0xF0
            taken = a == k if op == 0x10 else bool(a & k) if op == 0x40 else None
            assert taken is not None, f"unsupported jump {code:#x}"
            pc += jt if taken else jf
            continue
        raise AssertionError(f"unsupported instruction {code:#x}")


def v4(dport: int = 5353, sport: int = 5353, **ip: object) -> bytes:
    return bytes(
        Ether(src=MAC, dst="01:00:5e:00:00:fb")
        / IP(src="198.18.77.11", dst="224.0.0.251", ttl=255, **ip)
        / UDP(sport=sport, dport=dport)
        / QUERY
    )


def v6(dport: int = 5353, sport: int = 5353) -> bytes:
    return bytes(
        Ether(src=MAC, dst="33:33:00:00:00:fb")
        / IPv6(src="fe80::ff:fe00:10b", dst="ff02::fb", hlim=255)
        / UDP(sport=sport, dport=dport)
        / QUERY
    )


def test_ipv4_frame_gives_mac_addresses_ports_and_a_decodable_query() -> None:
    d = parse_frame(v4(sport=40000))
    assert (d.src_mac, d.vlan, d.version) == (MAC, None, 4)
    assert (d.src_ip, d.dst_ip, d.src_port, d.dst_port, d.hop_limit) == (
        "198.18.77.11",
        "224.0.0.251",
        40000,
        5353,
        255,
    )
    q = decode_query(d.payload)
    assert q.questions[0].name == "_imprint._tcp.local." and q.questions[0].qu


def test_ipv6_frame_gives_link_local_source() -> None:
    d = parse_frame(v6())
    assert (d.src_mac, d.version, d.src_ip, d.dst_ip) == (MAC, 6, "fe80::ff:fe00:10b", "ff02::fb")
    assert d.payload == bytes(QUERY)


def test_vlan_tagged_frame_gives_the_vlan_id() -> None:
    frame = bytes(
        Ether(src=MAC, dst="01:00:5e:00:00:fb")
        / Dot1Q(vlan=200)
        / IP(src="10.2.0.5", dst="224.0.0.251")
        / UDP(sport=5353, dport=5353)
        / QUERY
    )
    d = parse_frame(frame)
    assert (d.vlan, d.src_ip, d.payload) == (200, "10.2.0.5", bytes(QUERY))


def test_ipv4_options_move_the_udp_header() -> None:
    frame = v4(options=b"\x94\x04\x00\x00")  # router alert: IHL 6
    assert parse_frame(frame).payload == bytes(QUERY)


def test_ethernet_padding_after_the_ip_packet_is_not_payload() -> None:
    frame = bytes(
        Ether(src=MAC)
        / IP(src="198.18.77.11", dst="198.18.77.1")
        / UDP(sport=1234, dport=5353)
        / b"x"
    )
    assert parse_frame(frame + b"\0" * 20).payload == b"x"


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (b"\x02" * 10, FrameReason.SHORT),
        (v4()[:30], FrameReason.SHORT),
        (v6()[:50], FrameReason.SHORT),
        (bytes(Ether(src=MAC, type=0x0806) / (b"\0" * 28)), FrameReason.NOT_IP),
        (bytes(Ether(src="01:00:5e:00:00:01") / IP() / UDP(dport=5353)), FrameReason.BAD_MAC),
        (bytes(Ether(src="00:00:00:00:00:00") / IP() / UDP(dport=5353)), FrameReason.BAD_MAC),
        (v4(flags="MF"), FrameReason.FRAGMENT),
        (v4(frag=100), FrameReason.FRAGMENT),
        (bytes(Ether(src=MAC) / IP() / TCP(dport=5353)), FrameReason.NOT_UDP),
        (
            bytes(Ether(src=MAC) / IPv6() / IPv6ExtHdrHopByHop() / UDP(dport=5353)),
            FrameReason.NOT_UDP,
        ),
        (v4(dport=53), FrameReason.NOT_MDNS),
        (v6(dport=53), FrameReason.NOT_MDNS),
    ],
)
def test_unusable_frames_raise_frame_error_with_reason(frame: bytes, reason: FrameReason) -> None:
    with pytest.raises(FrameError) as err:
        parse_frame(frame)
    assert err.value.reason is reason


def test_ip_length_past_the_frame_and_udp_length_past_ip_are_refused() -> None:
    frame = bytearray(v4())
    frame[16:18] = (len(frame) - 14 + 1).to_bytes(2, "big")  # IP total length one too many
    with pytest.raises(FrameError) as err:
        parse_frame(bytes(frame))
    assert err.value.reason is FrameReason.BAD_IP
    frame = bytearray(v4())
    frame[38:40] = (len(frame) - 34 + 1).to_bytes(2, "big")  # UDP length one too many
    with pytest.raises(FrameError) as err:
        parse_frame(bytes(frame))
    assert err.value.reason is FrameReason.BAD_UDP
    frame = bytearray(v4())
    frame[14] = 0x65  # version 6 in an IPv4 EtherType
    with pytest.raises(FrameError) as err:
        parse_frame(bytes(frame))
    assert err.value.reason is FrameReason.BAD_IP


def test_every_truncation_of_a_frame_raises_frame_error_only() -> None:
    for frame in (v4(), v6()):
        for cut in range(len(frame)):
            with pytest.raises(FrameError):
                parse_frame(frame[:cut])


@pytest.mark.parametrize("tagged", [False, True])
def test_filter_passes_udp_5353_over_ipv4_and_ipv6(tagged: bool) -> None:
    prog = mdns_filter()
    for frame in (v4(), v6(), v4(sport=40000), v4(options=b"\x94\x04\x00\x00")):
        if tagged:
            frame = frame[:12] + b"\x81\x00\x00\x64" + frame[12:]
        assert run_bpf(prog, frame) == SNAP_LEN
        parse_frame(frame)  # and the parser takes what the filter passes


@pytest.mark.parametrize(
    "frame",
    [
        v4(dport=53),
        v4(dport=5354, sport=5353),  # our own answers to legacy queriers
        v6(dport=53),
        v4(flags="MF"),
        v4(frag=10),
        bytes(Ether(src=MAC) / IP() / TCP(dport=5353)),
        bytes(Ether(src=MAC, type=0x0806) / (b"\0" * 28)),
        bytes(Ether(src=MAC) / IPv6() / IPv6ExtHdrHopByHop() / UDP(dport=5353)),
        bytes(Ether(src=MAC) / Dot1Q(vlan=5) / IP() / UDP(dport=53)),
        b"\x00" * 13,
    ],
)
def test_filter_drops_everything_else(frame: bytes) -> None:
    assert run_bpf(mdns_filter(), frame) == 0


def test_filter_packs_as_sock_filter_array() -> None:
    prog = mdns_filter()
    packed = pack_filter(prog)
    assert len(packed) == 8 * len(prog)
    assert packed[:8] == bytes.fromhex("28000000") + (12).to_bytes(4, "little")


@pytest.mark.parametrize(
    "src",
    [
        "fe80::1",
        "fe80::200:5eff:fe00:101",
        "2001:db8::1:0:0:1",
        "fd00:0:0:1::",
        "::ffff:198.18.77.11",
    ],
)
def test_ipv6_source_text_is_what_a_udp_socket_gives(src: str) -> None:
    """recvfrom on an AF_INET6 socket writes addresses with inet_ntop; a frame's must match,
    so the MAC gate, the logs and the reply address see one spelling of each host."""
    frame = bytes(Ether(src="02:00:5e:00:01:01") / IPv6(src=src, dst="ff02::fb") / UDP(dport=5353))
    expected = socket.inet_ntop(socket.AF_INET6, socket.inet_pton(socket.AF_INET6, src))
    assert parse_frame(frame).src_ip == expected
    assert parse_frame(frame).dst_ip == "ff02::fb"
