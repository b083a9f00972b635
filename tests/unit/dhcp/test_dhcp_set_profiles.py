"""DhcpService.set_profiles: a new profile table answers from the next datagram on, and brings its
own (empty) reply-options memo, so nothing the old profiles rendered is sent again."""

from __future__ import annotations

from server.core.metrics import Registry
from server.dhcp.codec import decode
from server.dhcp.profiles import ProfileTable, profiles_from_tables
from server.dhcp.responder import Mode
from server.dhcp.service import DhcpConfig, DhcpService
from server.registry.model import DeviceState, DeviceView, ProvisioningEndpoint
from tests.helpers.fixtures import scapy_dhcp

MAC = "02:00:5e:00:01:01"
SERVER = "198.18.77.1"
EP = ProvisioningEndpoint("https", "imprint.example.net", 443, "/provision", "ab" * 32)
SRC = ("198.18.77.11", 68)


def acme(template: str) -> ProfileTable:
    site = profiles_from_tables(
        [
            {
                "name": "acme",
                "match": "Acme-Phone",
                "options": [{"code": 242, "encoding": "text", "value": template}],
            }
        ]
    )
    return ProfileTable(site, EP, SERVER, builtins=False)


def inform(xid: int) -> bytes:
    return scapy_dhcp(
        "inform",
        mac=MAC,
        xid=xid,
        ciaddr=SRC[0],
        options=[("vendor_class_id", b"Acme-Phone"), ("param_req_list", [1, 242])],
    )


async def test_a_new_table_answers_the_next_datagram_with_a_fresh_memo() -> None:
    first = acme("v1 {url}")
    index = {MAC: DeviceView(MAC, "acme", "Acme", DeviceState.AWAITING_ACTIVATION, "desk")}
    cfg = DhcpConfig(mode=Mode.INFORM, server_ip=SERVER, endpoint=EP, builtin_profiles=False)
    svc = DhcpService(cfg, index, Registry(), profiles=first)
    assert svc.profiles is first and svc.ctx.profiles is first
    (out,) = await svc.handle(inform(1), SRC, "eth0")
    assert decode(out.data).options[242] == b"v1 https://imprint.example.net/provision"
    assert len(first.reply_options) == 1

    second = acme("v2 {host}")
    svc.set_profiles(second)
    assert svc.ctx.profiles is second and svc.config.profiles == second.site_profiles
    assert svc.config.builtin_profiles is False
    (out,) = await svc.handle(inform(2), SRC, "eth0")
    assert decode(out.data).options[242] == b"v2 imprint.example.net"
    assert len(second.reply_options) == 1  # its own memo; the old table's is left behind
