"""Several links: `[mdns] interfaces` with one responder per link.

Two layouts, the same tests. "vlan": two 802.1Q VLANs on one veth trunk; every namespace's eth0
is a port of one bridge that floods tagged frames like a trunk, the server has eth0.100
(10.100.0.1) and eth0.200 (10.200.0.1), h1 and h3 sit on VLAN 100 and h2 on VLAN 200. It skips
when the kernel has no 802.1Q support (no 8021q module, as in some containers). "links": the
same with two plain segments, the server's eth0 (h1, h3) and a second veth eth1 (h2) on its own
bridge. Each link answers with its own address, and a query is answered only on the link it
came in on: nothing reaches the other link. Needs root.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from scapy.layers.dns import DNS
from scapy.layers.inet import IP

from tests.e2e.test_mdns_netns import HOSTNAME, HTTP_PORT, INSTANCE, SERVICE, ZEROCONF_BROWSE
from tests.helpers.netns import (
    Node,
    Topology,
    add_link,
    add_vlan,
    require_root_netns,
    vlan_supported,
)
from tests.helpers.server import Frame, ImprintServer, capture

pytestmark = pytest.mark.netns

TENANT = "acme"
V100, V200 = "10.100.0", "10.200.0"


@dataclass(frozen=True)
class VlanHost:
    node: Node
    ifname: str
    ip: str


@dataclass
class Lab:
    tp: Topology
    srv: ImprintServer
    h1: VlanHost  # VLAN 100, registered
    h2: VlanHost  # VLAN 200, registered
    h3: VlanHost  # VLAN 100, not registered
    links: list[str]  # the server's interface on link 1 (h1, h3) and link 2 (h2)
    server_ips: list[str]  # the server's address on each


@pytest.fixture(scope="module", params=["vlan", "links"])
def vlan_lab(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Lab]:
    require_root_netns("dig")
    with Topology(hosts=3) as tp:
        srv_node, n1, n2, n3 = tp.server, *tp.hosts
        if request.param == "vlan":
            if not vlan_supported(tp):
                pytest.skip(
                    "this kernel has no 802.1Q VLAN support (8021q): 'ip link add type vlan' fails"
                )
            links = [
                add_vlan(tp, srv_node, 100, f"{V100}.1/24"),
                add_vlan(tp, srv_node, 200, f"{V200}.1/24"),
            ]
            h1 = VlanHost(n1, add_vlan(tp, n1, 100, f"{V100}.11/24"), f"{V100}.11")
            h3 = VlanHost(n3, add_vlan(tp, n3, 100, f"{V100}.13/24"), f"{V100}.13")
        else:
            # Link 1 is the topology's own eth0 segment (198.18.77.0/24).
            links = ["eth0", add_link(tp, srv_node, "s9", f"{V200}.1/24")]
            h1 = VlanHost(n1, "eth0", n1.ip)
            h3 = VlanHost(n3, "eth0", n3.ip)
        h2_if = (
            add_vlan(tp, n2, 200, f"{V200}.12/24")
            if request.param == "vlan"
            else add_link(tp, n2, "h9", f"{V200}.12/24")
        )
        h2 = VlanHost(n2, h2_if, f"{V200}.12")
        overrides = {
            "http": {"port": HTTP_PORT},
            "mdns": {
                "enabled": True,
                "interfaces": links,
                "hostname": HOSTNAME,
                "instance_name": INSTANCE,
            },
            "log": {"level": "DEBUG"},  # the per-query lines these tests read are DEBUG
        }
        with ImprintServer(tp, srv_node, tmp_path_factory.mktemp("mdns-links"), overrides) as srv:
            srv.create_tenant(TENANT)
            srv.import_devices(TENANT, [n1.mac, n2.mac])
            srv.start()
            first = f"{V100}.1" if request.param == "vlan" else srv_node.ip
            yield Lab(tp, srv, h1, h2, h3, links, [first, f"{V200}.1"])
            assert srv.stop() == 0, srv.log()[-3000:]


def browse(lab: Lab, host: VlanHost, wait: float) -> dict[str, Any]:
    done = lab.tp.ns_exec_python(
        host.node, ZEROCONF_BROWSE, SERVICE, host.ip, str(wait), timeout=wait + 20
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def dig(lab: Lab, host: VlanHost, server_ip: str) -> str:
    done = lab.tp.run(
        host.node,
        ["dig", "-p", "5353", f"@{server_ip}", "_imprint._tcp.local", "PTR", "+tries=2", "+time=2"],
        timeout=20,
    )
    return done.stdout


def server_dns(lab: Lab, frames: list[Frame]) -> list[tuple[str, str]]:
    """(source, destination) of every DNS message from one of the server's link addresses."""
    out = []
    for frame in frames:
        p = frame.scapy()
        if p.haslayer(DNS) and p.haslayer(IP) and p[IP].src in lab.server_ips:
            out.append((p[IP].src, p[IP].dst))
    return out


@pytest.mark.parametrize("which", [0, 1])
def test_each_link_is_answered_with_its_own_address_and_only_there(
    vlan_lab: Lab, which: int
) -> None:
    host = (vlan_lab.h1, vlan_lab.h2)[which]
    other = (vlan_lab.h1, vlan_lab.h2)[1 - which]
    with capture(vlan_lab.tp, other.node) as cap:
        result = browse(vlan_lab, host, wait=8)
        heard = server_dns(vlan_lab, cap.frames(settle=0.3))
    info = result["info"]
    assert isinstance(info, dict), vlan_lab.srv.log()[-3000:]
    assert info["name"] == f"{INSTANCE}.{SERVICE}"
    assert (info["server"], info["port"]) == (f"{HOSTNAME}.local.", HTTP_PORT)
    # This link's address, not the other's.
    assert [a for a in info["addresses"] if "." in a] == [vlan_lab.server_ips[which]]
    assert info["properties"]["sha256"] == vlan_lab.srv.served_fingerprint()
    # The other link's host (in "vlan" mode its capture sees the raw trunk, both tags) heard no
    # answer to this host: the reply left on the querier's link only, to the querier only.
    assert [d for d in heard if d[1] == host.ip] == []
    link = vlan_lab.links[which]
    log = vlan_lab.srv.log()
    assert re.search(rf"link={link} source={re.escape(host.ip)}:5353 mac={host.node.mac}", log)
    assert not re.search(rf"link={vlan_lab.links[1 - which]} source={re.escape(host.ip)}:", log)


def test_dig_on_each_link_gets_that_links_a_record(vlan_lab: Lab) -> None:
    for which, host in enumerate((vlan_lab.h1, vlan_lab.h2)):
        mine, theirs = vlan_lab.server_ips[which], vlan_lab.server_ips[1 - which]
        text = dig(vlan_lab, host, mine)
        assert re.search(rf"{HOSTNAME}\.local\.\s+\d+\s+IN\s+A\s+{re.escape(mine)}$", text, re.M), (
            text
        )
        assert theirs not in text.split(";; ADDITIONAL SECTION:")[-1]


def test_unregistered_host_on_a_vlan_gets_nothing(vlan_lab: Lab) -> None:
    with capture(vlan_lab.tp, vlan_lab.h3.node) as cap:
        result = browse(vlan_lab, vlan_lab.h3, wait=3)
        heard = server_dns(vlan_lab, cap.frames(settle=0.3))
    assert result == {"names": [], "info": None}
    assert [d for d in heard if d[1] == vlan_lab.h3.ip] == []
    assert "reason=IMP_UNREGISTERED" in vlan_lab.srv.log()
