"""Issue 14 end to end: the querier's MAC comes from its own frame, not the neighbour table.

A registered host that has never exchanged a packet with the server sends an mDNS query: the
server's neighbour table is flushed and checked empty for that host just before, and the host
holds a permanent neighbour entry for the server, so not even dig's ARP request tells the server
its MAC. It must be answered on that first query, by python-zeroconf (browse and resolve) and by
dig asking the server's own address; an unregistered host in the same state gets nothing.
Needs root (namespaces, AF_PACKET in the server); skips with the reason elsewhere.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.e2e.test_mdns_netns import (
    HOSTNAME,
    HTTP_PORT,
    INSTANCE,
    SERVICE,
    browse,
    dns_packets,
    expected_info,
)
from tests.helpers.netns import SERVER_IP, SERVER_MAC, Node, Topology, require_root_netns
from tests.helpers.server import ImprintServer, capture

pytestmark = pytest.mark.netns

TENANT = "acme"
SOURCES = "imprint_mdns_mac_source_total"


@dataclass
class Lab:
    tp: Topology
    srv: ImprintServer
    fingerprint: str


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
    }
    with (
        Topology(hosts=4) as tp,
        ImprintServer(tp, tp.server, tmp_path_factory.mktemp("mdns-frames"), overrides) as srv,
    ):
        srv.create_tenant(TENANT)
        srv.import_devices(TENANT, [h.mac for h in tp.hosts if h is not tp.hosts[1]])
        srv.start()
        assert srv.metrics().value("imprint_mdns_frame_capture", interface="eth0") == 1
        for host in tp.hosts:
            # The host knows the server's MAC without asking: no ARP request reaches the
            # server, whose kernel would otherwise learn the host's MAC from it.
            pinned = tp.run(
                host,
                ["ip", "neigh", "replace", SERVER_IP, "lladdr", SERVER_MAC, "dev", "eth0"]
                + ["nud", "permanent"],
                timeout=10,
            )
            assert pinned.returncode == 0, pinned.stderr
        yield Lab(tp, srv, srv.served_fingerprint())
        assert srv.stop() == 0, srv.log()[-3000:]


def forget(tp: Topology, host: Node) -> None:
    """Flush the server's neighbour table and prove it holds nothing for `host`."""
    flushed = tp.run(tp.server, ["ip", "neigh", "flush", "dev", "eth0"], timeout=10)
    assert flushed.returncode == 0, flushed.stderr
    table = tp.run(tp.server, ["ip", "neigh", "show", "dev", "eth0"], timeout=10).stdout
    assert host.ip not in table and host.mac not in table.lower(), table


def sources(srv: ImprintServer, source: str, decision: str) -> float:
    return srv.metrics().value(SOURCES, source=source, decision=decision)


def dig_server(tp: Topology, host: Node, tries: int = 1) -> tuple[int, str]:
    done = tp.run(
        host,
        ["dig", "-p", "5353", f"@{SERVER_IP}", "_imprint._tcp.local", "PTR"]
        + [f"+tries={tries}", "+time=2"],
        timeout=20,
    )
    return done.returncode, done.stdout + done.stderr


def test_zeroconf_first_query_from_host_unknown_to_the_neighbour_table_is_answered(
    frames_lab: Lab,
) -> None:
    tp, srv = frames_lab.tp, frames_lab.srv
    h1 = tp.hosts[0]
    forget(tp, h1)
    before = sources(srv, "frame", "answer")
    result = browse(tp, h1, wait=8)
    assert result["names"] == [f"{INSTANCE}.{SERVICE}"], srv.log()[-2000:]
    assert result["info"] == expected_info(frames_lab.fingerprint)
    assert sources(srv, "frame", "answer") > before
    assert sources(srv, "neighbour", "answer") == 0  # never needed the kernel table
    assert "via=frame" in srv.log()


def test_dig_at_the_server_address_is_answered_on_its_only_try(frames_lab: Lab) -> None:
    tp, srv = frames_lab.tp, frames_lab.srv
    h3 = tp.hosts[2]
    forget(tp, h3)
    before = sources(srv, "frame", "answer")
    code, text = dig_server(tp, h3, tries=1)
    assert code == 0, text
    assert "status: NOERROR" in text and re.search(r"flags: qr aa;", text), text
    assert "Imprint\\032E2E._imprint._tcp.local." in text
    assert f'"sha256={frames_lab.fingerprint}"' in text
    assert sources(srv, "frame", "answer") == before + 1


def test_unregistered_host_gets_nothing_from_zeroconf_or_dig(frames_lab: Lab) -> None:
    tp, srv = frames_lab.tp, frames_lab.srv
    h2 = tp.hosts[1]
    forget(tp, h2)
    before = sources(srv, "frame", "ignore")
    with capture(tp, h2) as cap:
        silent = browse(tp, h2, wait=3)
        code, text = dig_server(tp, h2, tries=1)
        frames = cap.frames(settle=0.3)
    assert silent == {"names": [], "info": None}
    assert code != 0 and "timed out" in text, text
    assert [p.summary() for out, p in dns_packets(frames) if not out] == []
    # The server did see the queries and knew the MAC from the frame: silence was the policy's.
    assert sources(srv, "frame", "ignore") > before
    assert re.search(rf"mac={h2.mac} via=frame .* reason=IMP_UNREGISTERED", srv.log())
