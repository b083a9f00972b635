"""Issue 14 end to end: the querier's MAC comes from its own frame, not the neighbour table.

A registered host that has never exchanged a packet with the server sends an mDNS query: the
server's neighbour table is flushed and checked empty for that host just before, and the host
holds a permanent neighbour entry for the server, so not even dig's ARP request tells the server
its MAC. It must be answered on that first query, by python-zeroconf (browse and resolve) and by
dig asking the server's own address; an unregistered host in the same state gets nothing.
Over IPv4 and over IPv6 (the querier's link-local address, dig asking the server's link-local
address with its %eth0 scope). Needs root (namespaces, AF_PACKET in the server); skips with the
reason elsewhere.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.e2e.test_mdns_netns import (
    HOSTNAME,
    HTTP_PORT,
    INSTANCE,
    SERVICE,
    ZEROCONF_BROWSE,
    dns_packets,
    expected_info,
)
from tests.helpers.netns import SERVER_IP, SERVER_MAC, Node, Topology, require_root_netns
from tests.helpers.server import ImprintServer, capture

pytestmark = pytest.mark.netns

TENANT = "acme"
SOURCES = "imprint_mdns_mac_source_total"
FAMILIES = [4, 6]

# The IPv4 browser from test_mdns_netns, made to browse over IPv6 on one interface index.
ZEROCONF_BROWSE6 = ZEROCONF_BROWSE.replace(
    "azc = AsyncZeroconf(interfaces=[address], ip_version=IPVersion.V4Only)",
    "import socket\n    azc = AsyncZeroconf(interfaces=[socket.if_nametoindex(address)], "
    "ip_version=IPVersion.V6Only)",
)
assert ZEROCONF_BROWSE6 != ZEROCONF_BROWSE


@dataclass
class Lab:
    tp: Topology
    srv: ImprintServer
    fingerprint: str
    server_ll: str  # the server's link-local IPv6 address on eth0


def link_local(tp: Topology, node: Node) -> str:
    out = tp.run(node, ["ip", "-6", "-o", "addr", "show", "dev", "eth0", "scope", "link"]).stdout
    found = re.search(r"inet6 (fe80::[0-9a-f:]+)/64", out)
    assert found, out
    return found.group(1)


@pytest.fixture(scope="module")
def frames_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """mDNS with frame capture on the server's eth0; h2 is the one host not registered."""
    require_root_netns("dig")
    overrides = {
        "http": {"port": HTTP_PORT},
        "mdns": {
            "enabled": True,
            "interface": "eth0",
            "hostname": HOSTNAME,
            "instance_name": INSTANCE,
            "capture_frames": True,
        },
        "log": {"level": "DEBUG"},  # the per-query lines these tests read are DEBUG
    }
    with (
        Topology(hosts=4, ipv6=True) as tp,
        ImprintServer(tp, tp.server, tmp_path_factory.mktemp("mdns-frames"), overrides) as srv,
    ):
        srv.create_tenant(TENANT)
        srv.import_devices(TENANT, [h.mac for h in tp.hosts if h is not tp.hosts[1]])
        srv.start()
        assert srv.metrics().value("imprint_mdns_frame_capture", interface="eth0") == 1
        server_ll = link_local(tp, tp.server)
        for host in tp.hosts:
            # The host knows the server's MAC without asking: no ARP request or neighbour
            # solicitation reaches the server, whose kernel would learn the host's MAC from it.
            for ip in (SERVER_IP, server_ll):
                pinned = tp.run(
                    host,
                    ["ip", "neigh", "replace", ip, "lladdr", SERVER_MAC, "dev", "eth0"]
                    + ["nud", "permanent"],
                    timeout=10,
                )
                assert pinned.returncode == 0, pinned.stderr
        yield Lab(tp, srv, srv.served_fingerprint(), server_ll)
        assert srv.stop() == 0, srv.log()[-3000:]


def forget(tp: Topology, host: Node) -> None:
    """Flush the server's IPv4 and IPv6 neighbour tables; prove they hold nothing for `host`."""
    for family in ("-4", "-6"):
        flushed = tp.run(tp.server, ["ip", family, "neigh", "flush", "dev", "eth0"], timeout=10)
        assert flushed.returncode == 0, flushed.stderr
        table = tp.run(tp.server, ["ip", family, "neigh", "show", "dev", "eth0"], timeout=10)
        assert host.mac not in table.stdout.lower(), table.stdout
        assert host.ip not in table.stdout, table.stdout


def sources(srv: ImprintServer, source: str, decision: str) -> float:
    return srv.metrics().value(SOURCES, source=source, decision=decision)


def browse(lab: Lab, host: Node, family: int, wait: float) -> dict[str, Any]:
    code = ZEROCONF_BROWSE if family == 4 else ZEROCONF_BROWSE6
    where = host.ip if family == 4 else host.ifname
    done = lab.tp.ns_exec_python(host, code, SERVICE, where, str(wait), timeout=wait + 20)
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def expected(lab: Lab) -> dict[str, Any]:
    """What zeroconf resolves: our records, with A and the link-local AAAA for the host name."""
    info = expected_info(lab.fingerprint)
    info["addresses"] = sorted([SERVER_IP, lab.server_ll])
    return info


def resolved(result: dict[str, Any]) -> dict[str, Any] | None:
    info = result["info"]
    if info is not None:
        info["addresses"] = sorted(info["addresses"])
    return info


def dig_server(lab: Lab, host: Node, family: int, tries: int = 1) -> tuple[int, str]:
    at = SERVER_IP if family == 4 else f"{lab.server_ll}%eth0"
    done = lab.tp.run(
        host,
        ["dig", f"-{family}", "-p", "5353", f"@{at}", "_imprint._tcp.local", "PTR"]
        + [f"+tries={tries}", "+time=2"],
        timeout=20,
    )
    return done.returncode, done.stdout + done.stderr


@pytest.mark.parametrize("family", FAMILIES)
def test_zeroconf_first_query_from_host_unknown_to_the_neighbour_table_is_answered(
    frames_lab: Lab, family: int
) -> None:
    tp, srv = frames_lab.tp, frames_lab.srv
    h1 = tp.hosts[0]
    forget(tp, h1)
    before = sources(srv, "frame", "answer")
    result = browse(frames_lab, h1, family, wait=8)
    assert result["names"] == [f"{INSTANCE}.{SERVICE}"], srv.log()[-2000:]
    assert resolved(result) == expected(frames_lab)
    assert sources(srv, "frame", "answer") > before
    assert sources(srv, "neighbour", "answer") == 0  # never needed the kernel table
    source = h1.ip if family == 4 else link_local(tp, h1)
    assert re.search(rf"source={re.escape(source)}:5353 mac={h1.mac} via=frame", srv.log())


@pytest.mark.parametrize("family", FAMILIES)
def test_dig_at_the_server_address_is_answered_on_its_only_try(
    frames_lab: Lab, family: int
) -> None:
    tp, srv = frames_lab.tp, frames_lab.srv
    h3 = tp.hosts[2]
    forget(tp, h3)
    before = sources(srv, "frame", "answer")
    code, text = dig_server(frames_lab, h3, family, tries=1)
    assert code == 0, text
    assert "status: NOERROR" in text and re.search(r"flags: qr aa;", text), text
    assert "Imprint\\032E2E._imprint._tcp.local." in text
    assert f'"sha256={frames_lab.fingerprint}"' in text
    assert re.search(rf"\sA\s+{re.escape(SERVER_IP)}$", text, re.M), text
    assert re.search(rf"\sAAAA\s+{re.escape(frames_lab.server_ll)}$", text, re.M), text
    ttls = [int(ln.split()[1]) for ln in text.splitlines() if "\tIN\t" in ln and ln[0] != ";"]
    assert ttls and max(ttls) <= 10, text  # RFC 6762 §6.7
    assert sources(srv, "frame", "answer") == before + 1


@pytest.mark.parametrize("family", FAMILIES)
def test_unregistered_host_gets_nothing_from_zeroconf_or_dig(frames_lab: Lab, family: int) -> None:
    tp, srv = frames_lab.tp, frames_lab.srv
    h2 = tp.hosts[1]
    forget(tp, h2)
    before = sources(srv, "frame", "ignore")
    with capture(tp, h2) as cap:
        silent = browse(frames_lab, h2, family, wait=3)
        code, text = dig_server(frames_lab, h2, family, tries=1)
        frames = cap.frames(settle=0.3)
    assert silent == {"names": [], "info": None}
    assert code != 0 and "timed out" in text, text
    assert [p.summary() for out, p in dns_packets(frames) if not out] == []
    # The server did see the queries and knew the MAC from the frame: silence was the policy's.
    assert sources(srv, "frame", "ignore") > before
    assert re.search(rf"mac={h2.mac} via=frame .* reason=IMP_UNREGISTERED", srv.log())


@pytest.fixture(scope="module")
def fallback_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """The same, with `capture_frames = false`: what a server without CAP_NET_RAW does."""
    require_root_netns("busybox")
    overrides = {
        "http": {"port": HTTP_PORT},
        "mdns": {
            "enabled": True,
            "interface": "eth0",
            "hostname": HOSTNAME,
            "instance_name": INSTANCE,
            "capture_frames": False,
        },
        "log": {"level": "DEBUG"},  # the per-query lines these tests read are DEBUG
    }
    with (
        Topology(hosts=1, ipv6=True) as tp,
        ImprintServer(tp, tp.server, tmp_path_factory.mktemp("mdns-fallback"), overrides) as srv,
    ):
        srv.create_tenant(TENANT)
        srv.import_devices(TENANT, [tp.hosts[0].mac])
        srv.start()
        assert srv.metrics().value("imprint_mdns_frame_capture", interface="eth0") == 0
        yield Lab(tp, srv, srv.served_fingerprint(), link_local(tp, tp.server))
        assert srv.stop() == 0, srv.log()[-3000:]


@pytest.mark.parametrize("family", FAMILIES)
def test_without_frames_the_mac_comes_from_the_neighbour_table_once_the_host_talked(
    fallback_lab: Lab, family: int
) -> None:
    """The cost of running without CAP_NET_RAW, and the IPv6 neighbour table read over netlink."""
    tp, srv = fallback_lab.tp, fallback_lab.srv
    h1 = tp.hosts[0]
    forget(tp, h1)
    unknown = sources(srv, "unknown", "ignore")
    assert browse(fallback_lab, h1, family, wait=2) == {"names": [], "info": None}
    assert sources(srv, "unknown", "ignore") > unknown  # IMP_MAC_UNKNOWN: never saw this host
    target = SERVER_IP if family == 4 else f"{fallback_lab.server_ll}%eth0"
    ping = ["busybox", "ping", f"-{family}", "-c", "1", "-W", "3", target]
    done = tp.run(h1, ping, timeout=15)
    assert done.returncode == 0, done.stdout + done.stderr
    before = sources(srv, "neighbour", "answer")
    result = browse(fallback_lab, h1, family, wait=8)
    assert resolved(result) == expected(fallback_lab), srv.log()[-2000:]
    assert sources(srv, "neighbour", "answer") > before
    source = h1.ip if family == 4 else link_local(tp, h1)
    assert re.search(
        rf"source={re.escape(source)}(%eth0)?:5353 mac={h1.mac} via=neighbour", srv.log()
    )
