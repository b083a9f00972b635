"""Issue 4 end to end: the real `imprint serve` answering real mDNS/DNS-SD clients in namespaces.

One topology and one server for the module: h2 is the one host that is not registered.
The clients are python-zeroconf (an independent DNS-SD implementation, run inside the host's
namespace), BIND's dig (legacy unicast, RFC 6762 §6.7) and the project's device emulator. Each
host pings the server before it asks, as a host that has talked to it would; the server reads
the MAC from the query's frame anyway (test_mdns_frames_netns.py covers hosts it never saw).
"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from scapy.layers.dns import DNS, DNSQR
from scapy.layers.inet import ICMP, IP, UDP

from tests.helpers.netns import SERVER_IP, Node, Topology, require_root_netns
from tests.helpers.server import Frame, ImprintServer, capture, emulator_argv

pytestmark = pytest.mark.netns

TENANT = "acme"
SERVICE = "_imprint._tcp.local."
INSTANCE = "Imprint E2E"
HOSTNAME = "imprint-e2e"
HTTP_PORT = 8443
MDNS_GROUP = "224.0.0.251"
DECISIONS = "imprint_mdns_decisions_total"
TYPE_PTR, TYPE_TXT, TYPE_SRV, TYPE_A = 12, 16, 33, 1

# Browse with python-zeroconf on one address, resolve the first instance found, print JSON.
# argv: service type, this host's address, seconds to wait for an instance.
ZEROCONF_BROWSE = r"""
import asyncio, json, sys
from zeroconf import IPVersion
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

async def main():
    service_type, address, limit = sys.argv[1], sys.argv[2], float(sys.argv[3])
    azc = AsyncZeroconf(interfaces=[address], ip_version=IPVersion.V4Only)
    names = asyncio.Queue()

    def on_change(zeroconf, service_type, name, state_change):
        names.put_nowait(name)

    browser = AsyncServiceBrowser(azc.zeroconf, service_type, handlers=[on_change])
    out = {"names": [], "info": None}
    try:
        name = await asyncio.wait_for(names.get(), limit)
        out["names"].append(name)
        info = AsyncServiceInfo(service_type, name)
        if await info.async_request(azc.zeroconf, 3000):
            out["info"] = {
                "name": info.name,
                "server": info.server,
                "port": info.port,
                "addresses": info.parsed_addresses(),
                "txt_keys": [k.decode() for k in info.properties],
                "properties": {
                    k.decode(): None if v is None else v.decode()
                    for k, v in info.properties.items()
                },
            }
    except asyncio.TimeoutError:
        pass
    finally:
        await browser.async_cancel()
        await azc.async_close()
    print(json.dumps(out))

asyncio.run(main())
"""


@dataclass
class Lab:
    tp: Topology
    srv: ImprintServer
    fingerprint: str  # SHA-256 of the certificate the HTTPS listener presents


@pytest.fixture(scope="module")
def mdns_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """mDNS on the server's eth0; every host but h2 registered with the CLI."""
    require_root_netns("busybox", "dig")
    overrides = {
        "http": {"port": HTTP_PORT},  # public URL https://198.18.77.1:8443 -> A 198.18.77.1
        "mdns": {
            "enabled": True,
            "interface": "eth0",
            "hostname": HOSTNAME,
            "instance_name": INSTANCE,
        },
    }
    with (
        Topology(hosts=6) as tp,
        ImprintServer(tp, tp.server, tmp_path_factory.mktemp("mdns"), overrides) as srv,
    ):
        srv.create_tenant(TENANT)
        srv.import_devices(TENANT, [h.mac for h in tp.hosts if h is not tp.hosts[1]])
        srv.start()
        yield Lab(tp, srv, srv.served_fingerprint())
        assert srv.stop() == 0, srv.log()[-3000:]  # SIGTERM: a clean shutdown


def introduce(tp: Topology, host: Node) -> None:
    """One ping to the server, so its kernel neighbour table holds this host's MAC."""
    done = tp.run(host, ["busybox", "ping", "-c", "1", "-W", "3", SERVER_IP], timeout=15)
    assert done.returncode == 0, done.stdout + done.stderr


def browse(tp: Topology, host: Node, wait: float) -> dict[str, Any]:
    done = tp.ns_exec_python(host, ZEROCONF_BROWSE, SERVICE, host.ip, str(wait), timeout=wait + 20)
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def dns_packets(frames: list[Frame]) -> list[tuple[bool, Any]]:
    """(outgoing, scapy packet) for every captured UDP datagram carrying DNS."""
    out = []
    for frame in frames:
        packet = frame.scapy()
        if packet.haslayer(UDP) and packet.haslayer(DNS) and not packet.haslayer(ICMP):
            out.append((frame.outgoing, packet))
    return out


def decisions(srv: ImprintServer, decision: str, reason: str) -> float:
    return srv.metrics().value(DECISIONS, decision=decision, reason=reason)


def expected_info(fingerprint: str) -> dict[str, Any]:
    return {
        "name": f"{INSTANCE}.{SERVICE}",
        "server": f"{HOSTNAME}.local.",
        "port": HTTP_PORT,
        "addresses": [SERVER_IP],
        "txt_keys": ["txtvers", "scheme", "path", "sha256"],  # txtvers first (RFC 6763 §6.7)
        "properties": {
            "txtvers": "1",
            "scheme": "https",
            "path": "/provision",
            "sha256": fingerprint,
        },
    }


def test_zeroconf_on_registered_host_resolves_service_host_port_and_pin(mdns_lab: Lab) -> None:
    tp, srv = mdns_lab.tp, mdns_lab.srv
    h1, h2 = tp.hosts[0], tp.hosts[1]
    introduce(tp, h1)
    before = decisions(srv, "answer", "IMP_REGISTERED")
    with capture(tp, h2) as bystander:
        result = browse(tp, h1, wait=8)
        heard = dns_packets(bystander.frames())
    assert result["names"] == [f"{INSTANCE}.{SERVICE}"]
    assert result["info"] == expected_info(mdns_lab.fingerprint)
    assert decisions(srv, "answer", "IMP_REGISTERED") > before
    # Answers go by unicast to the querier only: h2 heard h1's multicast queries (so it was
    # listening) but nothing from the server.
    assert any(not out and p[IP].src == h1.ip and p[IP].dst == MDNS_GROUP for out, p in heard)
    assert [p.summary() for out, p in heard if p[IP].src == SERVER_IP] == []


def test_zeroconf_on_unregistered_host_gets_nothing_until_it_is_registered(
    mdns_lab: Lab,
) -> None:
    tp, srv = mdns_lab.tp, mdns_lab.srv
    h2 = tp.hosts[1]
    introduce(tp, h2)
    before = decisions(srv, "ignore", "IMP_UNREGISTERED")
    with capture(tp, h2) as cap:
        silent = browse(tp, h2, wait=3)
        frames = cap.frames()
    assert silent == {"names": [], "info": None}
    assert [p.summary() for out, p in dns_packets(frames) if p[IP].src == SERVER_IP] == []
    # The queries arrived and the MAC was known (from the ping): silence was the policy's.
    assert decisions(srv, "ignore", "IMP_UNREGISTERED") > before

    srv.add_device(TENANT, h2.mac, "desk 2")
    assert srv.proc is not None
    pid = srv.proc.pid
    # Picked up within [store] poll_interval_s (0.2 s) by the running server.
    answered = browse(tp, h2, wait=8)
    assert answered["info"] == expected_info(mdns_lab.fingerprint)
    assert srv.running and srv.proc is not None and srv.proc.pid == pid


def test_dig_legacy_unicast_query_is_answered_to_its_port_with_id_and_short_ttls(
    mdns_lab: Lab,
) -> None:
    tp = mdns_lab.tp
    h3 = tp.hosts[2]
    introduce(tp, h3)
    argv = ["dig", "-p", "5353", f"@{MDNS_GROUP}", "_imprint._tcp.local", "PTR"]
    with capture(tp, h3) as cap:
        # BIND 9.18's dig connects its UDP socket to the address it asked (the group), so the
        # kernel drops a unicast answer from the server before dig sees it and dig times out;
        # RFC 6762 §6.7 wants exactly that unicast answer, so it is read off the wire here.
        # Two tries, as a legacy resolver retries: see the neighbour-table test below for why
        # a first query can go unanswered today.
        tp.run(h3, [*argv, "+tries=2", "+time=1"], timeout=20)
        packets = dns_packets(cap.frames(settle=0.2))
    queries = {
        (p[UDP].sport, p[DNS].id): p for out, p in packets if out and p[IP].dst == MDNS_GROUP
    }
    assert queries
    for sport, qid in queries:
        assert sport != 5353 and qid != 0  # legacy unicast, as dig sends it
    answers = [p for out, p in packets if not out and p[IP].src == SERVER_IP]
    assert answers, mdns_lab.srv.log()[-2000:]
    answer = answers[-1]
    dns = answer[DNS]
    # RFC 6762 §6.7: to the query's source address and port, ID and question echoed,
    # TTL at most 10 s, no cache-flush bit.
    assert (answer[IP].dst, answer[UDP].sport) == (h3.ip, 5353)
    assert (answer[UDP].dport, dns.id) in queries
    assert (dns.qr, dns.aa, dns.rcode) == (1, 1, 0)
    assert [(q.qname, q.qtype, q.qclass) for q in dns.qd] == [(b"_imprint._tcp.local.", 12, 1)]
    records = list(dns.an) + list(dns.ar)
    assert records
    for rr in records:
        assert rr.ttl <= 10, rr.summary()
        assert rr.cacheflush == 0 and rr.rclass == 1, rr.summary()
    by_type = {rr.type: rr for rr in records}
    assert [rr.type for rr in dns.an] == [TYPE_PTR]
    assert by_type[TYPE_PTR].rdata == f"{INSTANCE}.{SERVICE}".encode()
    assert (by_type[TYPE_SRV].port, by_type[TYPE_SRV].target) == (
        HTTP_PORT,
        f"{HOSTNAME}.local.".encode(),
    )
    assert f"sha256={mdns_lab.fingerprint}".encode() in by_type[TYPE_TXT].rdata
    assert by_type[TYPE_A].rdata == SERVER_IP


def test_dig_unicast_query_to_the_server_port_5353_prints_the_records(mdns_lab: Lab) -> None:
    tp = mdns_lab.tp
    h3 = tp.hosts[2]
    introduce(tp, h3)
    # Asked at the server's own address, dig accepts the answer and checks the ID itself.
    done = tp.run(
        h3,
        ["dig", "-p", "5353", f"@{SERVER_IP}", "_imprint._tcp.local", "PTR", "+tries=2", "+time=1"],
        timeout=20,
    )
    text = done.stdout
    assert done.returncode == 0, text + done.stderr
    assert "status: NOERROR" in text
    assert re.search(r"flags: qr aa;", text), text
    assert "ID mismatch" not in text
    answer = _dig_section(text, "ANSWER")
    additional = _dig_section(text, "ADDITIONAL")
    assert answer == [("_imprint._tcp.local.", "IN", "PTR", "Imprint\\032E2E._imprint._tcp.local.")]
    by_type = {rtype: rdata for _, _, rtype, rdata in additional}
    assert by_type["SRV"] == f"0 0 {HTTP_PORT} {HOSTNAME}.local."
    assert f'"sha256={mdns_lab.fingerprint}"' in by_type["TXT"]
    assert by_type["A"] == SERVER_IP
    assert max(_dig_ttls(text)) <= 10


def _dig_records(text: str) -> list[list[str]]:
    return [
        line.split(None, 4)
        for line in text.splitlines()
        if line and not line.startswith(";") and len(line.split()) >= 5
    ]


def _dig_section(text: str, name: str) -> list[tuple[str, str, str, str]]:
    """(owner, class, type, rdata) of a dig output section."""
    lines = text.split(f";; {name} SECTION:\n", 1)
    if len(lines) < 2:
        return []
    body = lines[1].split("\n\n", 1)[0]
    return [(r[0], r[2], r[3], r[4]) for r in _dig_records(body)]


def _dig_ttls(text: str) -> list[int]:
    ttls = [int(r[1]) for r in _dig_records(text) if r[1].isdigit()]
    assert ttls, text
    return ttls


def test_emulator_qu_browse_from_registered_host_sees_no_problem(mdns_lab: Lab) -> None:
    tp = mdns_lab.tp
    h4 = tp.hosts[3]
    introduce(tp, h4)
    done = tp.run(
        h4,
        [*emulator_argv(), "mdns", "--iface", h4.ifname, "--qu", "--json", "--timeout", "5"],
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    body = json.loads(done.stdout)
    assert body["problems"] == []
    assert body["provisioning"]["problems"] == []
    assert body["responders"] == [f"{SERVER_IP}:5353"]  # unicast from the server, port 5353
    (service,) = body["services"]
    assert service["problems"] == []
    assert (service["instance"], service["host"], service["port"]) == (
        f"{INSTANCE}._imprint._tcp.local",
        f"{HOSTNAME}.local",
        HTTP_PORT,
    )
    assert service["addresses"] == [SERVER_IP]
    assert service["txt"]["sha256"] == mdns_lab.fingerprint
    assert body["provisioning"]["url"] == f"https://{SERVER_IP}:{HTTP_PORT}/provision"


def hello_then_query(tp: Topology, host: Node, query: bytes) -> bytes | None:
    """From `host`: one datagram to the server, then one legacy mDNS query; the answer or None.

    The datagram makes `host` ARP for the server, which puts `host` in the server's neighbour
    table; the ICMP port unreachable coming back proves that exchange is complete (the server
    had to resolve `host` to send it). No process is started between the two, so they are
    milliseconds apart.
    """
    with (
        tp.socket(host, socket.AF_INET, socket.SOCK_DGRAM) as hello,
        tp.socket(host, socket.AF_INET, socket.SOCK_DGRAM) as asker,
    ):
        hello.settimeout(3)
        hello.connect((SERVER_IP, 9))
        hello.send(b"hello")
        with pytest.raises(ConnectionRefusedError):
            hello.recv(16)
        asker.bind((host.ip, 0))
        asker.settimeout(3)
        asker.sendto(query, (MDNS_GROUP, 5353))
        try:
            return asker.recv(4096)
        except TimeoutError:
            return None


def test_registered_hosts_known_to_the_kernel_are_answered_on_their_first_query(
    mdns_lab: Lab,
) -> None:
    """Two registered hosts that each talk to the server and then ask once, one right after the
    other, both get an answer: the server's kernel holds both MACs when the queries arrive.

    Regression: KernelNeighbours.lookup once re-read /proc/net/arp on a miss only when its copy
    was at least 0.25 s old, so the second query found a copy made before that host's ARP and
    was dropped as IMP_MAC_UNKNOWN although the kernel already knew its MAC.
    """
    tp, srv = mdns_lab.tp, mdns_lab.srv
    query = bytes(DNS(id=0x4D5E, rd=0, qd=DNSQR(qname="_imprint._tcp.local.", qtype="PTR")))
    unknown_before = decisions(srv, "ignore", "IMP_MAC_UNKNOWN")
    hosts = tp.hosts[4:6]
    answers = {host.mac: hello_then_query(tp, host, query) for host in hosts}
    arp = tp.run(tp.server, ["cat", "/proc/net/arp"], timeout=10).stdout
    assert all(host.mac in arp for host in hosts), arp  # the kernel knew them
    missing = [mac for mac, answer in answers.items() if answer is None]
    unknown = decisions(srv, "ignore", "IMP_MAC_UNKNOWN") - unknown_before
    assert missing == [], (
        f"no answer for registered {missing}, known to the server's kernel; "
        f"IMP_MAC_UNKNOWN decisions +{unknown:g}\n{srv.log()[-800:]}"
    )
    for answer in answers.values():
        assert answer is not None
        dns = DNS(answer)
        assert dns.id == 0x4D5E
        assert dns.an[0].rdata == f"{INSTANCE}.{SERVICE}".encode()
