"""Several links: `[[dhcp.links]]`, one DHCP responder per link with its own mode and subnets.

Two layouts, the same tests (as tests/e2e/test_mdns_vlans_netns.py). "vlan": two 802.1Q VLANs
on one veth trunk; the server has eth0.100 (10.100.0.1, full mode, a pool) and eth0.200
(10.200.0.1, inform mode), and the device h1 has an interface on each VLAN with its one MAC.
It skips when the kernel has no 802.1Q support. "links": the same with two plain segments, the
server's eth0 (198.18.77.0/24, full) and a second veth eth1 (10.200.0.0/24, inform), h1 on both.
h2, not registered, is on link 2. The device is registered once and answered on either link by
that link's rules and server identifier; a reply leaves only by the link its request came in
on. The clients are busybox udhcpc and dhcpcd. Needs root.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.e2e.test_dhcp_netns import ACK, DROPPED, dhcp_replies, in_pool, lease_rows, options
from tests.helpers.netns import (
    LAN_PREFIX,
    Node,
    Topology,
    add_link,
    add_vlan,
    require_root_netns,
    run_dhcpcd_inform,
    run_udhcpc,
    vlan_supported,
)
from tests.helpers.server import ImprintServer, capture

pytestmark = pytest.mark.netns

TENANT = "acme"
V100, V200 = "10.100.0", "10.200.0"
LEASE_TIME = 600


@dataclass
class Lab:
    tp: Topology
    srv: ImprintServer
    h1_full: Node  # the registered device on link 1 (full mode)
    h1_inform: Node  # the same device, same MAC, on link 2 (inform mode)
    h2: Node  # not registered, on link 2
    server_ips: tuple[str, str]
    pool: tuple[str, str]  # link 1's pool


def on(node: Node, ifname: str, ip: str) -> Node:
    """`node` as seen on another of its interfaces (the clients and captures use ifname)."""
    return dataclasses.replace(node, ifname=ifname, ip=ip, prefixlen=24)


@pytest.fixture(scope="module", params=["vlan", "links"])
def links_lab(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Lab]:
    require_root_netns("udhcpc", "dhcpcd")
    with Topology(hosts=2) as tp:
        srv_node, n1, n2 = tp.server, *tp.hosts
        if request.param == "vlan":
            if not vlan_supported(tp):
                pytest.skip(
                    "this kernel has no 802.1Q VLAN support (8021q): 'ip link add type vlan' fails"
                )
            link1 = add_vlan(tp, srv_node, 100, f"{V100}.1/24")
            link2 = add_vlan(tp, srv_node, 200, f"{V200}.1/24")
            net1, srv1 = V100, f"{V100}.1"
            h1_full = on(n1, add_vlan(tp, n1, 100, f"{V100}.11/24"), f"{V100}.11")
            h1_inform = on(n1, add_vlan(tp, n1, 200, f"{V200}.11/24"), f"{V200}.11")
            h2 = on(n2, add_vlan(tp, n2, 200, f"{V200}.12/24"), f"{V200}.12")
        else:
            link1, net1, srv1 = "eth0", LAN_PREFIX, srv_node.ip
            link2 = add_link(tp, srv_node, "s9", f"{V200}.1/24")
            h1_full = n1
            h1_inform = on(n1, add_link(tp, n1, "h9", f"{V200}.11/24"), f"{V200}.11")
            h2 = on(n2, add_link(tp, n2, "h8", f"{V200}.12/24"), f"{V200}.12")
        pool = (f"{net1}.100", f"{net1}.199")
        overrides = {
            "dhcp": {
                "enabled": True,
                "links": [
                    {
                        "interface": link1,
                        "mode": "full",
                        "subnets": [
                            {
                                "subnet": f"{net1}.0/24",
                                "pool": "-".join(pool),
                                "router": srv1,
                                "dns": [srv1],
                                "lease_time": LEASE_TIME,
                            }
                        ],
                    },
                    {"interface": link2, "mode": "inform"},
                ],
            },
        }
        with ImprintServer(tp, srv_node, tmp_path_factory.mktemp("dhcp-links"), overrides) as srv:
            srv.create_tenant(TENANT)
            srv.import_devices(TENANT, [n1.mac])
            srv.start()
            yield Lab(tp, srv, h1_full, h1_inform, h2, (srv1, f"{V200}.1"), pool)
            assert srv.stop() == 0, srv.log()[-3000:]


def udhcpc(lab: Lab, node: Node, tries: int = 3) -> Any:
    return run_udhcpc(lab.tp, node, vendor_class="yealink", request=(43, 66), tries=tries)


def test_full_link_leases_from_its_own_pool_and_the_reply_stays_on_that_link(
    links_lab: Lab,
) -> None:
    lab = links_lab
    with capture(lab.tp, lab.h1_inform) as other, capture(lab.tp, lab.h1_full) as here:
        result = udhcpc(lab, lab.h1_full)
        heard_here, heard_there = here.frames(), other.frames(settle=0.3)
    lease = result.lease
    assert lease is not None, result.output + lab.srv.log()[-3000:]
    assert in_pool(lease["ip"], lab.pool)
    assert lease["serverid"] == lab.server_ips[0]
    assert lease["router"] == lab.server_ips[0]
    acks = [r for r in dhcp_replies(heard_here) if options(r)[53] == ACK]
    assert acks and options(acks[-1])[54] == lab.server_ips[0]
    assert dhcp_replies(heard_there) == []  # nothing left by the other link
    rows = lease_rows(lab.srv, lab.h1_full.mac)
    assert [(r["ip"], r["state"]) for r in rows] == [(lease["ip"], "bound")]


def test_inform_link_answers_the_same_mac_with_its_own_server_id_and_only_there(
    links_lab: Lab,
) -> None:
    lab = links_lab
    with capture(lab.tp, lab.h1_full) as other, capture(lab.tp, lab.h1_inform) as here:
        result = run_dhcpcd_inform(lab.tp, lab.h1_inform, wait=5)
        heard_here, heard_there = here.frames(), other.frames(settle=0.3)
    assert result.returncode == 0, result.output + lab.srv.log()[-3000:]
    got = result.options
    assert got["dhcp_message_type"] == "5"  # DHCPACK to the INFORM
    assert got["dhcp_server_identifier"] == lab.server_ips[1]
    assert got["ip_address"] == lab.h1_inform.ip  # its own address: inform mode leases nothing
    assert "vendor_encapsulated_options" in got
    replies = dhcp_replies(heard_here)
    assert replies and all(options(r)[54] == lab.server_ips[1] for r in replies)
    assert dhcp_replies(heard_there) == []


def test_inform_link_never_offers_an_address_though_the_other_link_leases(links_lab: Lab) -> None:
    lab = links_lab
    before = lab.srv.metrics().value(DROPPED, reason="DHCP_TYPE_NOT_SERVED")
    result = udhcpc(lab, lab.h1_inform, tries=1)
    assert result.lease is None, result.output
    assert lab.srv.metrics().value(DROPPED, reason="DHCP_TYPE_NOT_SERVED") > before
    # Whatever it leased on link 1, nothing was leased from link 2's subnet.
    rows = lease_rows(lab.srv, lab.h1_inform.mac)
    assert not [r for r in rows if r["ip"].startswith(V200 + ".")]


def test_unregistered_host_on_the_second_link_gets_nothing(links_lab: Lab) -> None:
    lab = links_lab
    with capture(lab.tp, lab.h2) as cap:
        result = run_dhcpcd_inform(lab.tp, lab.h2, wait=3)
        heard = cap.frames(settle=0.3)
    assert not result.answered, result.output
    assert dhcp_replies(heard) == []
