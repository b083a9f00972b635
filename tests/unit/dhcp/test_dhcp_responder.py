"""Responder: who is answered in each mode, where replies go (RFC 2131 §4.1), what goes in them."""

from __future__ import annotations

from typing import Any

import pytest
from scapy.layers.dhcp import BOOTP, DHCP

from server.core.policy import Reason, decide
from server.dhcp.codec import (
    BROADCAST_FLAG,
    ZERO_IP,
    DhcpMessage,
    MessageType,
    decode,
    encode,
    ip_bytes,
)
from server.dhcp.pool import LeasePool, PoolReason, subnet_from_mapping
from server.dhcp.profiles import ProfileTable, profile_from_mapping
from server.dhcp.responder import (
    Ignore,
    IgnoreReason,
    Mode,
    Reply,
    ResponderContext,
    order_options,
    pool_step,
    respond,
)
from server.registry.model import DeviceState, DeviceView, ProvisioningEndpoint
from tests.helpers.fixtures import load_hex_fixture, scapy_dhcp, split_src

MAC = "02:00:5e:00:01:01"
SERVER = "198.18.77.1"
EP = ProvisioningEndpoint("https", "imprint.example.net", 443, "/provision", "ab" * 32)
INDEX = {MAC: DeviceView(MAC, "acme", "Acme", DeviceState.AWAITING_ACTIVATION, "desk 4")}
REGISTERED = decide(INDEX, MAC)
UNREGISTERED = decide(INDEX, "02:00:5e:00:09:09")
SRC = ("198.18.77.11", 68)
T0 = 1_700_000_000.0


def ctx(mode: Mode = Mode.INFORM, *site: dict[str, Any], client_port: int = 68) -> ResponderContext:
    profiles = ProfileTable([profile_from_mapping(d) for d in site], EP, SERVER)
    return ResponderContext(
        mode=mode, server_id=ip_bytes(SERVER), profiles=profiles, client_port=client_port
    )


def req(msg_type: str, **kw: Any) -> DhcpMessage:
    return decode(scapy_dhcp(msg_type, mac=kw.pop("mac", MAC), **kw))


def reply_of(result: Reply | Ignore) -> Reply:
    assert isinstance(result, Reply), result
    return result


def wire(reply: Reply) -> DhcpMessage:
    """The reply as it goes on the wire, read back by our decoder."""
    return decode(encode(reply.message, reply.max_size))


# -- inform mode ------------------------------------------------------------------------------


def test_inform_fixture_gets_ack_with_ms_uc_options_and_no_lease_time() -> None:
    (src, data), *_ = load_hex_fixture("dhcp/dhcpcd-inform-ms-uc-client.hex")
    request = decode(data)
    r = reply_of(respond(request, REGISTERED, ctx(), src=split_src(src)))
    assert r.msg_type == MessageType.ACK
    assert r.dest == ("198.18.77.11", 68)
    assert r.profile == "ms-uc-client"
    m = r.message
    assert m.op == 2 and m.xid == request.xid and m.chaddr == request.chaddr
    assert m.yiaddr == ZERO_IP and m.ciaddr == request.ciaddr
    assert m.options[54] == ip_bytes(SERVER)
    assert not {51, 58, 59} & set(m.options)
    assert list(m.options) == [53, 54, 43, 120, 61]  # 43 is in its option 55, 120 is not
    assert m.options[61] == request.options[61]


def test_inform_reply_is_what_scapy_reads_off_the_wire() -> None:
    request = req(
        "inform",
        ciaddr="198.18.77.11",
        options=[("vendor_class_id", b"MS-UC-Client"), ("param_req_list", [43, 120])],
    )
    r = reply_of(respond(request, REGISTERED, ctx(), src=SRC))
    ref = BOOTP(encode(r.message, r.max_size))
    opts = [o for o in ref[DHCP].options if isinstance(o, tuple)]
    assert opts[0] == ("message-type", 5)
    assert opts[1] == ("server_id", SERVER)
    assert opts[2][0] == "vendor_specific" and opts[2][1].startswith(
        b"\x01\x0cMS-UC-Client\x02\x05https"
    )
    assert opts[3] == (120, b"\x00\x07imprint\x07example\x03net\x00")
    assert ref.yiaddr == "0.0.0.0" and ref.ciaddr == "198.18.77.11"


def test_inform_without_ciaddr_through_a_relay_goes_to_relay_port_67_with_broadcast_bit() -> None:
    r = reply_of(respond(req("inform", giaddr="10.0.0.1"), REGISTERED, ctx(), src=("10.0.0.1", 67)))
    assert r.dest == ("10.0.0.1", 67)
    assert r.message.flags & BROADCAST_FLAG


def test_inform_without_ciaddr_or_giaddr_goes_back_to_the_packet_source() -> None:
    r = reply_of(respond(req("inform"), REGISTERED, ctx(), src=("198.18.77.40", 6800)))
    assert r.dest == ("198.18.77.40", 6800)
    r = reply_of(respond(req("inform"), REGISTERED, ctx(), src=("0.0.0.0", 68)))
    assert r.dest == ("255.255.255.255", 68)


def test_client_port_knob_moves_client_bound_replies() -> None:
    r = reply_of(
        respond(
            req("inform", ciaddr="127.0.0.1"),
            REGISTERED,
            ctx(client_port=40068),
            src=("127.0.0.1", 40068),
        )
    )
    assert r.dest == ("127.0.0.1", 40068)


@pytest.mark.parametrize("msg_type", ["discover", "request", "release", "decline"])
def test_inform_mode_answers_nothing_but_inform(msg_type: str) -> None:
    result = respond(req(msg_type), REGISTERED, ctx(), src=SRC)
    assert result == Ignore(IgnoreReason.TYPE_NOT_SERVED)
    assert not result.handled


@pytest.mark.parametrize("mode", list(Mode))
@pytest.mark.parametrize("msg_type", ["inform", "discover", "request"])
def test_unregistered_mac_is_ignored_in_every_mode(mode: Mode, msg_type: str) -> None:
    request = req(msg_type, mac="02:00:5e:00:09:09", options=[("server_id", SERVER)])
    result = respond(request, UNREGISTERED, ctx(mode), src=SRC)
    assert result == Ignore(Reason.UNREGISTERED)
    assert result.reason == "IMP_UNREGISTERED"


def test_a_bootreply_is_never_answered() -> None:
    assert respond(req("offer", op=2), REGISTERED, ctx(), src=SRC) == Ignore(
        IgnoreReason.NOT_A_REQUEST
    )


# -- proxy mode -------------------------------------------------------------------------------


def test_proxy_discover_gets_options_only_offer() -> None:
    r = reply_of(
        respond(
            req("discover", flags=BROADCAST_FLAG), REGISTERED, ctx(Mode.PROXY), src=("0.0.0.0", 68)
        )
    )
    assert r.msg_type == MessageType.OFFER
    assert r.message.yiaddr == ZERO_IP
    assert r.dest == ("255.255.255.255", 68) and not r.broadcast_fallback
    assert list(r.message.options) == [53, 54, 224, 225]


def test_proxy_request_selecting_us_gets_ack_and_others_are_left_alone() -> None:
    mine = req("request", options=[("server_id", SERVER), ("requested_addr", "198.18.77.60")])
    r = reply_of(respond(mine, REGISTERED, ctx(Mode.PROXY), src=("0.0.0.0", 68)))
    assert r.msg_type == MessageType.ACK and r.message.yiaddr == ZERO_IP
    other = req(
        "request", options=[("server_id", "198.18.77.254"), ("requested_addr", "198.18.77.60")]
    )
    assert respond(other, REGISTERED, ctx(Mode.PROXY), src=SRC) == Ignore(PoolReason.NOT_SELECTED)
    reboot = req("request", options=[("requested_addr", "198.18.77.60")])
    assert respond(reboot, REGISTERED, ctx(Mode.PROXY), src=SRC) == Ignore(PoolReason.NOT_SELECTED)


# -- destination rules (RFC 2131 §4.1) --------------------------------------------------------


@pytest.mark.parametrize(
    ("kw", "dest", "fallback"),
    [
        (
            {"giaddr": "10.0.0.1", "ciaddr": "198.18.77.9", "flags": BROADCAST_FLAG},
            ("10.0.0.1", 67),
            False,
        ),
        ({"ciaddr": "198.18.77.9", "flags": BROADCAST_FLAG}, ("198.18.77.9", 68), False),
        ({"flags": BROADCAST_FLAG}, ("255.255.255.255", 68), False),
        ({}, ("255.255.255.255", 68), True),
    ],
)
def test_reply_destination_follows_rfc2131_4_1(
    kw: dict[str, Any], dest: tuple[str, int], fallback: bool
) -> None:
    r = reply_of(respond(req("discover", **kw), REGISTERED, ctx(Mode.PROXY), src=("0.0.0.0", 68)))
    assert r.dest == dest
    assert r.broadcast_fallback is fallback
    assert r.message.flags == kw.get("flags", 0)


# -- options ------------------------------------------------------------------------------------


def test_relay_agent_option_is_echoed_last_through_a_relay_and_dropped_otherwise() -> None:
    opts = [
        ("client_id", b"\x01" + bytes.fromhex("02005e000101")),
        ("relay_agent_information", b"\x01\x06port-7"),
    ]
    relayed = reply_of(
        respond(
            req("discover", giaddr="10.0.0.1", options=opts),
            REGISTERED,
            ctx(Mode.PROXY),
            src=("10.0.0.1", 67),
        )
    )
    assert list(relayed.message.options)[-2:] == [61, 82]
    assert relayed.message.options[82] == b"\x01\x06port-7"
    assert relayed.message.options[61] == b"\x01\x02\x00\x5e\x00\x01\x01"
    direct = reply_of(
        respond(req("discover", options=opts), REGISTERED, ctx(Mode.PROXY), src=("0.0.0.0", 68))
    )
    assert 82 not in direct.message.options and direct.message.options[61] == opts[0][1]


def test_order_is_53_54_then_request_list_with_partners_first() -> None:
    available = {
        43: b"v",
        60: b"vc",
        3: b"\x01\x02\x03\x04",
        1: b"\xff\xff\xff\x00",
        6: b"dns!",
        224: b"u",
    }
    order = list(order_options(5, ip_bytes(SERVER), available, bytes([6, 43, 3])))
    assert order == [53, 54, 6, 60, 43, 1, 3, 224]


def test_option_60_goes_before_43_in_a_real_reply() -> None:
    site = {
        "name": "pxe-like",
        "match": "Acme",
        "options": [
            {"code": 43, "encoding": "hex", "value": "0601 08ff"},
            {"code": 60, "encoding": "text", "value": "Acme"},
        ],
    }
    request = req(
        "inform",
        ciaddr="198.18.77.11",
        options=[("vendor_class_id", b"Acme"), ("param_req_list", [43])],
    )
    r = reply_of(respond(request, REGISTERED, ctx(Mode.INFORM, site), src=SRC))
    assert list(wire(r).options) == [53, 54, 60, 43]


def _big_profile(size: int) -> dict[str, Any]:
    return {
        "name": "big",
        "match": "Big",
        "options": [
            {"code": 66, "encoding": "text", "value": "{url}"},
            {"code": 224, "encoding": "hex", "value": "ab" * size},
        ],
    }


def test_without_option_57_the_reply_stays_within_576_by_dropping_late_options() -> None:
    request = req(
        "inform",
        ciaddr="198.18.77.11",
        options=[("vendor_class_id", b"Big"), ("param_req_list", [66])],
    )
    r = reply_of(respond(request, REGISTERED, ctx(Mode.INFORM, _big_profile(400)), src=SRC))
    assert r.dropped_options == (224,)
    assert r.option_codes == (53, 54, 66)
    assert len(encode(r.message, r.max_size)) <= 576 - 28


def test_option_57_allows_a_larger_reply_with_long_options_split() -> None:
    request = req(
        "inform",
        ciaddr="198.18.77.11",
        options=[("vendor_class_id", b"Big"), ("param_req_list", [66]), ("max_dhcp_size", 1400)],
    )
    r = reply_of(respond(request, REGISTERED, ctx(Mode.INFORM, _big_profile(400)), src=SRC))
    assert r.dropped_options == () and r.max_size == 1400
    data = encode(r.message, r.max_size)
    assert len(data) > 576
    assert data.count(bytes([224, 255]) + b"\xab" * 10) == 1  # first instance full ...
    assert bytes([224, 145]) + b"\xab" * 145 in data  # ... and the 145-octet rest (RFC 3396)
    assert decode(data).options[224] == b"\xab" * 400


def test_reply_option_codes_are_exactly_what_goes_on_the_wire() -> None:
    (src, data), *_ = load_hex_fixture("dhcp/dhcpcd-inform-ms-uc-client.hex")
    r = reply_of(respond(decode(data), REGISTERED, ctx(), src=split_src(src)))
    assert tuple(wire(r).options) == r.option_codes


# -- full mode -----------------------------------------------------------------------------------


def full_pool() -> LeasePool:
    subnets = [
        subnet_from_mapping(
            {
                "subnet": "198.18.77.0/24",
                "pool": "198.18.77.100-198.18.77.110",
                "router": "198.18.77.1",
                "dns": ["198.18.77.1"],
                "lease_time": 7200,
            }
        ),
        subnet_from_mapping({"subnet": "10.20.0.0/16", "pool": "10.20.5.1-10.20.5.9"}),
    ]
    return LeasePool(subnets)


def full(
    request: DhcpMessage, pool: LeasePool, now: float = T0, src: tuple[str, int] = ("0.0.0.0", 68)
) -> Reply | Ignore:
    c = ctx(Mode.FULL)
    return respond(request, REGISTERED, c, src=src, pool_result=pool_step(pool, request, c, now))


def test_full_discover_request_ack_cycle() -> None:
    pool = full_pool()
    offer = reply_of(full(req("discover", options=[("param_req_list", [1, 3, 6, 51])]), pool))
    assert offer.msg_type == MessageType.OFFER
    assert offer.message.yiaddr == ip_bytes("198.18.77.100")
    o = offer.message.options
    assert list(o)[:6] == [53, 54, 1, 3, 6, 51]
    assert o[1] == ip_bytes("255.255.255.0") and o[3] == ip_bytes("198.18.77.1")
    assert o[51] == (7200).to_bytes(4, "big")
    assert o[58] == (3600).to_bytes(4, "big") and o[59] == (6300).to_bytes(4, "big")
    assert offer.message.ciaddr == ZERO_IP
    request = req("request", options=[("server_id", SERVER), ("requested_addr", "198.18.77.100")])
    ack = reply_of(full(request, pool, T0 + 1))
    assert ack.msg_type == MessageType.ACK and ack.reason == PoolReason.BOUND
    assert ack.message.yiaddr == ip_bytes("198.18.77.100")


def test_full_request_for_a_wrong_address_gets_a_broadcast_nak_with_only_allowed_options() -> None:
    pool = full_pool()
    request = req(
        "request",
        options=[
            ("server_id", SERVER),
            ("requested_addr", "198.18.77.7"),
            ("client_id", b"\x01abc"),
        ],
    )
    nak = reply_of(full(request, pool))
    assert nak.msg_type == MessageType.NAK
    assert nak.dest == ("255.255.255.255", 68)
    assert list(nak.message.options) == [53, 54, 56, 61]
    assert nak.message.options[56] == b"DHCP_WRONG_ADDRESS"
    assert nak.message.yiaddr == ZERO_IP and nak.message.ciaddr == ZERO_IP


def test_full_nak_through_a_relay_sets_the_broadcast_bit() -> None:
    pool = full_pool()
    request = req(
        "request",
        giaddr="10.20.0.1",
        options=[("requested_addr", "192.168.9.9"), ("relay_agent_information", b"\x01\x01x")],
    )
    nak = reply_of(full(request, pool, src=("10.20.0.1", 67)))
    assert nak.msg_type == MessageType.NAK and nak.reason == PoolReason.WRONG_NETWORK
    assert nak.dest == ("10.20.0.1", 67)
    assert nak.message.flags & BROADCAST_FLAG
    assert list(nak.message.options)[-1] == 82


def test_full_request_for_another_server_is_silence_by_protocol() -> None:
    pool = full_pool()
    full(req("discover"), pool)
    result = full(
        req(
            "request", options=[("server_id", "198.18.77.254"), ("requested_addr", "198.18.77.100")]
        ),
        pool,
    )
    assert result == Ignore(PoolReason.NOT_SELECTED) and result.handled


def test_full_release_and_decline_are_handled_silently() -> None:
    pool = full_pool()
    full(req("discover"), pool)
    reply_of(
        full(
            req("request", options=[("server_id", SERVER), ("requested_addr", "198.18.77.100")]),
            pool,
        )
    )
    release = full(
        req("release", ciaddr="198.18.77.100", options=[("server_id", SERVER)]), pool, T0 + 5
    )
    assert release == Ignore(PoolReason.RELEASED) and release.handled
    full(req("discover"), pool, T0 + 6)
    reply_of(
        full(
            req("request", options=[("server_id", SERVER), ("requested_addr", "198.18.77.100")]),
            pool,
            T0 + 6,
        )
    )
    decline = full(
        req("decline", options=[("server_id", SERVER), ("requested_addr", "198.18.77.100")]),
        pool,
        T0 + 7,
    )
    assert decline == Ignore(PoolReason.DECLINED) and decline.handled


def test_full_inform_gets_subnet_options_but_no_lease_time() -> None:
    pool = full_pool()
    r = reply_of(
        full(req("inform", ciaddr="198.18.77.50", options=[("param_req_list", [3, 1, 6])]), pool)
    )
    assert r.message.yiaddr == ZERO_IP
    assert not {51, 58, 59} & set(r.message.options)
    assert list(r.message.options)[:5] == [53, 54, 1, 3, 6]  # mask kept before router
    assert r.dest == ("198.18.77.50", 68)


def test_full_relayed_discover_fixture_is_offered_from_the_relay_subnet() -> None:
    (src, data), *_ = load_hex_fixture("dhcp/perfdhcp-relayed-discover.hex")
    request = decode(data)
    pool = full_pool()
    c = ctx(Mode.FULL)
    index = {
        "02:00:5e:00:02:01": DeviceView(
            "02:00:5e:00:02:01", "acme", "Acme", DeviceState.SIGNED_IN, "rack"
        )
    }
    result = respond(
        request,
        decide(index, "02:00:5e:00:02:01"),
        c,
        src=split_src(src),
        pool_result=pool_step(pool, request, c, T0),
    )
    r = reply_of(result)
    assert r.dest == ("198.18.77.12", 67)
    assert r.message.giaddr == ip_bytes("198.18.77.12")
    assert r.message.yiaddr == ip_bytes("198.18.77.100")  # giaddr 198.18.77.12 is in the lab subnet


def test_full_pool_exhaustion_is_a_drop_not_a_nak() -> None:
    pool = LeasePool(
        [subnet_from_mapping({"subnet": "198.18.77.0/24", "pool": "198.18.77.100-198.18.77.100"})]
    )
    reply_of(full(req("discover", mac=MAC), pool))
    other = "02:00:5e:00:01:05"
    c = ctx(Mode.FULL)
    request = req("discover", mac=other)
    index = {other: DeviceView(other, "acme", "Acme", DeviceState.SIGNED_IN, "x")}
    result = respond(
        request, decide(index, other), c, src=SRC, pool_result=pool_step(pool, request, c, T0)
    )
    assert result == Ignore(PoolReason.POOL_EXHAUSTED) and not result.handled


def test_reply_whose_required_options_cannot_fit_is_not_sent() -> None:
    huge = [("client_id", b"c" * 250), ("relay_agent_information", b"r" * 250)]
    request = req("discover", giaddr="10.0.0.1", options=huge)
    result = respond(request, REGISTERED, ctx(Mode.PROXY), src=("10.0.0.1", 67))
    assert result == Ignore(IgnoreReason.REPLY_TOO_LARGE) and not result.handled
