"""RFC 6762 §8-10 end to end: probing, a name conflict with another responder, announcements,
goodbye. The other responder is python-zeroconf, registering our instance name on h1 before
Imprint starts; Imprint (with `[mdns] announce = true`) must probe, see the name in use, take
`Imprint E2E (2)`, announce that twice and withdraw it with TTL 0 at shutdown. Needs root.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from scapy.layers.dns import DNS
from scapy.layers.inet import IP

from tests.e2e.test_mdns_netns import HOSTNAME, HTTP_PORT, INSTANCE, SERVICE, dns_packets
from tests.helpers.netns import SERVER_IP, Topology, require_root_netns
from tests.helpers.server import Frame, ImprintServer, capture

pytestmark = pytest.mark.netns

TENANT = "acme"
RENAMED = f"{INSTANCE} (2)"

# A second responder owning our instance name. argv: this host's address.
ZEROCONF_OWNER = r"""
import asyncio, socket, sys
from zeroconf import IPVersion, ServiceInfo
from zeroconf.asyncio import AsyncZeroconf

async def main():
    address = sys.argv[1]
    azc = AsyncZeroconf(interfaces=[address], ip_version=IPVersion.V4Only)
    info = ServiceInfo(
        "_imprint._tcp.local.", "Imprint E2E._imprint._tcp.local.", port=9999,
        properties={"txtvers": "1"}, server="other-e2e.local.",
        addresses=[socket.inet_aton(address)],
    )
    await azc.async_register_service(info)
    print("registered", flush=True)
    await asyncio.sleep(600)

asyncio.run(main())
"""

# Every instance name a zeroconf browser hears of within argv[3] seconds, as JSON.
ZEROCONF_NAMES = r"""
import asyncio, json, sys
from zeroconf import IPVersion
from zeroconf.asyncio import AsyncServiceBrowser, AsyncZeroconf

async def main():
    service_type, address, limit = sys.argv[1], sys.argv[2], float(sys.argv[3])
    azc = AsyncZeroconf(interfaces=[address], ip_version=IPVersion.V4Only)
    names = set()
    browser = AsyncServiceBrowser(
        azc.zeroconf, service_type, handlers=[lambda zeroconf, service_type, name, state_change:
                                              names.add(name)])
    await asyncio.sleep(limit)
    await browser.async_cancel()
    await azc.async_close()
    print(json.dumps(sorted(names)))

asyncio.run(main())
"""


@dataclass
class Lab:
    tp: Topology
    srv: ImprintServer
    startup: list[Frame]  # what h3 (unregistered, a bystander) heard while Imprint started


@pytest.fixture(scope="module")
def conflict_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    require_root_netns("dig")
    overrides = {
        "http": {"port": HTTP_PORT},
        "mdns": {
            "enabled": True,
            "interface": "eth0",
            "hostname": HOSTNAME,
            "instance_name": INSTANCE,
            "announce": True,
        },
    }
    with (
        Topology(hosts=3) as tp,
        ImprintServer(tp, tp.server, tmp_path_factory.mktemp("mdns-conflict"), overrides) as srv,
    ):
        h1, h2, h3 = tp.hosts
        srv.create_tenant(TENANT)
        srv.import_devices(TENANT, [h1.mac, h2.mac])
        owner = tp.popen_python(h1, ZEROCONF_OWNER, h1.ip)
        assert owner.stdout is not None
        assert owner.stdout.readline().strip() == "registered"  # zeroconf probed and announced
        with capture(tp, h3) as cap:
            srv.start()  # returns once the names are probed
            time.sleep(1.5)  # the second announcement follows the first after one second
            startup = cap.frames(settle=0.2)
        yield Lab(tp, srv, startup)
        srv.stop()


def from_server(frames: list[Frame]) -> list[DNS]:
    return [p[DNS] for out, p in dns_packets(frames) if not out and p[IP].src == SERVER_IP]


def test_a_second_responder_with_our_instance_name_makes_imprint_take_the_next_name(
    conflict_lab: Lab,
) -> None:
    srv = conflict_lab.srv
    log = srv.log()
    assert f"renamed '{INSTANCE}'/'{HOSTNAME}' to '{RENAMED}'/'{HOSTNAME}'" in log, log[-3000:]
    assert srv.metrics().value("imprint_mdns_renames_total") == 1
    # The probes came first: queries for the old name, then three for the new one.
    probes = [d for d in from_server(conflict_lab.startup) if d.qr == 0]
    asked = [d.qd[0].qname.decode() for d in probes]
    assert asked[0] == f"{INSTANCE}.{SERVICE}" and asked[-1] == f"{RENAMED}.{SERVICE}", asked
    assert asked.count(f"{RENAMED}.{SERVICE}") == 3
    first = probes[0]
    assert first.qd[0].qtype == 255 and first.qd[0].unicastresponse == 1  # §8.1: ANY, QU
    assert {rr.type for rr in first.ns} >= {33, 16, 1}  # proposed SRV, TXT, A as authority


def test_announced_twice_after_probing(conflict_lab: Lab) -> None:
    announcements = [d for d in from_server(conflict_lab.startup) if d.qr == 1]
    assert len(announcements) == 2, [d.summary() for d in announcements]
    for d in announcements:
        owners = {rr.rrname.decode() for rr in d.an}
        assert f"{RENAMED}.{SERVICE}" in owners and f"{HOSTNAME}.local." in owners
        assert all(rr.ttl > 0 for rr in d.an)


def test_browser_sees_both_instances_and_dig_gets_the_new_name(conflict_lab: Lab) -> None:
    tp = conflict_lab.tp
    h2 = tp.hosts[1]
    done = tp.ns_exec_python(h2, ZEROCONF_NAMES, SERVICE, h2.ip, "3", timeout=30)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout) == sorted([f"{INSTANCE}.{SERVICE}", f"{RENAMED}.{SERVICE}"])
    dig = tp.run(
        h2, ["dig", "-p", "5353", f"@{SERVER_IP}", "_imprint._tcp.local", "PTR", "+tries=2"]
    )
    assert "Imprint\\032E2E\\032\\(2\\)._imprint._tcp.local." in dig.stdout, dig.stdout


def test_shutdown_withdraws_the_announced_records_with_ttl_0(conflict_lab: Lab) -> None:
    """Runs last in this module: it stops the server."""
    tp, srv = conflict_lab.tp, conflict_lab.srv
    with capture(tp, tp.hosts[2]) as cap:
        assert srv.stop() == 0, srv.log()[-3000:]
        frames = cap.frames(settle=0.3)
    goodbyes = [d for d in from_server(frames) if d.qr == 1]
    assert len(goodbyes) == 1, [d.summary() for d in goodbyes]
    owners = {rr.rrname.decode() for rr in goodbyes[0].an}
    assert f"{RENAMED}.{SERVICE}" in owners
    assert all(rr.ttl == 0 for rr in goodbyes[0].an)  # RFC 6762 §10.1
