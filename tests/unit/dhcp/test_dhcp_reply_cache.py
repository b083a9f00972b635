"""The responder's memo of reply options: same answers as without it, keyed on everything that
shapes them (reply type, lease or not, option 60, option 55, subnet), and bounded in size."""

from __future__ import annotations

from typing import Any

from server.core.policy import decide
from server.dhcp import responder
from server.dhcp.codec import DhcpMessage, decode, encode, ip_bytes
from server.dhcp.pool import LeasePool, subnet_from_mapping
from server.dhcp.profiles import ProfileTable, profile_from_mapping
from server.dhcp.responder import Mode, Reply, ResponderContext, pool_step, respond
from server.registry.model import DeviceState, DeviceView, ProvisioningEndpoint
from tests.helpers.fixtures import scapy_dhcp

MAC = "02:00:5e:00:01:01"
SERVER = "198.18.77.1"
EP = ProvisioningEndpoint("https", "imprint.example.net", 443, "/provision", "ab" * 32)
INDEX = {MAC: DeviceView(MAC, "acme", "Acme", DeviceState.AWAITING_ACTIVATION, "desk 4")}
SRC = ("198.18.77.11", 68)
T0 = 1_700_000_000.0
SUBNET = subnet_from_mapping(
    {"subnet": "198.18.77.0/24", "pool": "198.18.77.100-198.18.77.199", "router": SERVER}
)


def ctx(mode: Mode) -> ResponderContext:
    site = profile_from_mapping(
        {
            "name": "uc",
            "match": "MS-UC-Client",
            "match_kind": "exact",
            "options": [{"code": 43, "encoding": "hex", "value": "010c4d532d55432d436c69656e74"}],
        }
    )
    return ResponderContext(
        mode=mode, server_id=ip_bytes(SERVER), profiles=ProfileTable([site], EP, SERVER)
    )


def req(msg_type: str, **kw: Any) -> DhcpMessage:
    return decode(scapy_dhcp(msg_type, mac=MAC, **kw))


def wire(result: object) -> tuple[bytes, tuple[int, ...]]:
    assert isinstance(result, Reply), result
    return encode(result.message, result.max_size), result.option_codes


def fresh(c: ResponderContext) -> ResponderContext:
    """The same context with an empty memo (a new table of the same profiles): what respond()
    computes from scratch."""
    table = ProfileTable(c.profiles.site_profiles, EP, SERVER, builtins=c.profiles.builtins)
    assert not table.reply_options
    return ResponderContext(
        mode=c.mode, server_id=c.server_id, profiles=table, client_port=c.client_port
    )


def test_a_remembered_answer_is_the_answer_computed_from_scratch() -> None:
    c = ctx(Mode.PROXY)
    decision = decide(INDEX, MAC)
    for vc, prl in ((b"MS-UC-Client", [1, 3, 43]), (b"other", [43, 6, 1]), (None, [3, 1])):
        extra: list[tuple[Any, ...]] = [("param_req_list", prl)]
        if vc is not None:
            extra.append(("vendor_class_id", vc))
        r = req("discover", options=extra)
        first = wire(respond(r, decision, c, src=SRC))
        again = wire(respond(r, decision, c, src=SRC))  # from the memo
        assert first == again == wire(respond(r, decision, fresh(c), src=SRC))
    assert len(c.profiles.reply_options) == 3
    # The client's own order of option 55 decides the reply's order, memo or not.
    a = wire(
        respond(req("discover", options=[("param_req_list", [225, 224])]), decision, c, src=SRC)
    )
    b = wire(
        respond(req("discover", options=[("param_req_list", [224, 225])]), decision, c, src=SRC)
    )
    assert a[1] != b[1]


def test_an_inform_ack_never_gets_a_lease_acks_lease_time() -> None:
    c = ctx(Mode.FULL)
    pool = LeasePool([SUBNET])
    decision = decide(INDEX, MAC)
    prl = [("param_req_list", [1, 3, 51, 58, 59])]
    request = req(
        "request", options=[*prl, ("server_id", SERVER), ("requested_addr", "198.18.77.100")]
    )
    ack = wire(respond(request, decision, c, src=SRC, pool_result=pool_step(pool, request, c, T0)))
    assert 51 in ack[1] and 58 in ack[1]
    inform = req("inform", ciaddr="198.18.77.100", options=prl)
    informed = respond(inform, decision, c, src=SRC, pool_result=pool_step(pool, inform, c, T0))
    assert 51 not in wire(informed)[1] and 58 not in wire(informed)[1]  # RFC 2131 §4.3.5


def test_the_memo_is_bounded() -> None:
    c = ctx(Mode.PROXY)
    decision = decide(INDEX, MAC)
    for n in range(responder._REPLY_OPTIONS_MAX + 10):
        # A new option 55 each time, as a client varying it on purpose would send.
        prl = [1 + n % 200, 1 + n // 200]
        respond(req("discover", options=[("param_req_list", prl)]), decision, c, src=SRC)
    assert 0 < len(c.profiles.reply_options) <= responder._REPLY_OPTIONS_MAX
