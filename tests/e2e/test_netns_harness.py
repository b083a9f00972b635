"""The namespace harness itself, proved with real tools, and the third-party DHCP clients
(perfdhcp, busybox udhcpc, dhcpcd) proved against a real Kea in the same topology, so the
Imprint e2e tests can use the same invocations and trust their parsing."""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers.netns import (
    LAN_CIDR,
    PREFIX,
    REMOTE_CIDR,
    SERVER_IP,
    SERVER_MAC,
    KeaDhcp4,
    Topology,
    bench_macs,
    host_mac,
    kea_dhcp4_config,
    kea_reservation,
    kea_subnet,
    list_namespaces,
    parse_perfdhcp_output,
    percentile,
    require_root_netns,
    run_dhcpcd_inform,
    run_perfdhcp,
    run_udhcpc,
    sweep_stale_namespaces,
    write_mac_list,
)

pytestmark = pytest.mark.netns

# Option 43 as a Lync phone expects it: sub-option 1 "MS-UC-Client", 2 "https" (protocols.md).
VENDOR_43 = bytes([1, 12]) + b"MS-UC-Client" + bytes([2, 5]) + b"https"
TFTP_66 = "prov.imprint.test"  # host-name form: busybox shows a URL in option 66 as "bad"


def _running(pid: int) -> bool:
    """True while pid exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def _link(topology: Topology, netns: str, ifname: str) -> dict[str, object]:
    done = topology.run(netns, ["ip", "-j", "-s", "addr", "show", "dev", ifname], check=True)
    return dict(json.loads(done.stdout)[0])


# -- the topology ------------------------------------------------------------------------


def test_nodes_get_the_documented_addresses_and_macs(netns_relay_topology: Topology) -> None:
    tp = netns_relay_topology
    assert tp.relay is not None
    expected = [(tp.server, "198.18.77.1", SERVER_MAC)]
    expected += [(h, f"198.18.77.{10 + i}", host_mac(i)) for i, h in enumerate(tp.hosts, 1)]
    expected += [(tp.relay, "198.18.77.2", "02:00:5e:00:00:02")]
    expected += [(tp.remote_hosts[0], "198.18.78.11", "02:00:5e:00:02:01")]
    for node, ip, mac in expected:
        link = _link(tp, node.netns, node.ifname)
        assert link["address"] == mac, node
        assert link["operstate"] in ("UP", "UNKNOWN"), node
        addrs = [(a["local"], a["prefixlen"]) for a in link["addr_info"]]  # type: ignore[attr-defined]
        assert addrs == [(ip, 24)], node  # IPv4 only: IPv6 is disabled by default
    relay_down = _link(tp, tp.relay.netns, tp.relay.remote_ifname)
    assert [a["local"] for a in relay_down["addr_info"]] == ["198.18.78.1"]  # type: ignore[attr-defined]
    assert all(name.startswith(PREFIX) for name in tp.namespaces)
    assert set(tp.namespaces) <= set(list_namespaces())


def test_hosts_reach_the_server_each_other_and_across_the_relay(
    netns_relay_topology: Topology,
) -> None:
    tp = netns_relay_topology
    h1, h2 = tp.hosts
    for src, dst in [(h1, SERVER_IP), (h1, h2.ip), (tp.remote_hosts[0], SERVER_IP)]:
        done = tp.run(src, ["busybox", "ping", "-c", "1", "-W", "3", dst], timeout=10)
        assert done.returncode == 0, (src.role, dst, done.stdout, done.stderr)
        assert "1 packets received" in done.stdout


def test_udp_datagram_goes_from_one_namespace_to_another(netns_topology: Topology) -> None:
    tp = netns_topology
    h1, h2 = tp.hosts
    with tp.socket(h2, socket.AF_INET, socket.SOCK_DGRAM) as receiver:
        receiver.bind((h2.ip, 40067))
        receiver.settimeout(10)
        sender = (
            "import socket, sys\n"
            "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            "s.sendto(b'imprint-probe', (sys.argv[1], 40067))\n"
        )
        done = tp.ns_exec_python(h1, sender, h2.ip)
        assert done.returncode == 0, done.stderr
        payload, (src_ip, _port) = receiver.recvfrom(100)
    assert payload == b"imprint-probe"
    assert src_ip == h1.ip


def test_dig_mdns_query_reaches_a_group_member_in_another_namespace(
    netns_topology: Topology,
) -> None:
    require_root_netns("dig")
    tp = netns_topology
    h1, h2 = tp.hosts
    with tp.socket(h2, socket.AF_INET, socket.SOCK_DGRAM) as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("0.0.0.0", 5353))
        group = socket.inet_aton("224.0.0.251") + socket.inet_aton(h2.ip)
        listener.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, group)
        listener.settimeout(10)
        # The fixture's invocation: a legacy unicast query (RFC 6762 §6.7), nobody answers it.
        dig = tp.popen(
            h1,
            ["dig", "-p", "5353", "@224.0.0.251", "_imprint._tcp.local", "PTR", "+tries=1"],
        )
        payload, (src_ip, src_port) = listener.recvfrom(2000)
        tp.stop(dig)
    assert src_ip == h1.ip
    assert src_port != 5353
    assert b"\x08_imprint\x04_tcp\x05local\x00\x00\x0c\x00\x01" in payload  # PTR, class IN


def test_ipv6_option_gives_link_local_addresses_that_answer_at_once() -> None:
    require_root_netns("busybox")
    with Topology(hosts=2, ipv6=True) as tp:
        link = _link(tp, tp.hosts[1].netns, "eth0")
        infos = link["addr_info"]
        assert isinstance(infos, list)
        local = [a for a in infos if a["family"] == "inet6" and a["scope"] == "link"]
        assert len(local) == 1
        assert not local[0].get("tentative")  # accept_dad=0: usable without a DAD wait
        target = f"{local[0]['local']}%eth0"
        done = tp.run(tp.hosts[0], ["busybox", "ping", "-6", "-c", "1", "-W", "3", target])
        assert done.returncode == 0, done.stdout + done.stderr


def test_namespace_socket_really_lives_in_that_namespace(netns_topology: Topology) -> None:
    tp = netns_topology
    h1, h2 = tp.hosts
    with tp.socket(h1, socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((h1.ip, 0))  # h1's address exists only in h1's namespace
    with tp.socket(h1, socket.AF_INET, socket.SOCK_DGRAM) as sock, pytest.raises(OSError):
        sock.bind((h2.ip, 0))


def test_exit_stops_processes_and_removes_namespaces_even_after_an_error() -> None:
    require_root_netns()
    tp = Topology(hosts=1)
    pids: list[int] = []
    with pytest.raises(ValueError, match="body failed"), tp:
        child = tp.popen(tp.hosts[0], ["sleep", "300"])
        pids.append(child.pid)
        # A daemon that left our process tree: only the namespace sweep can find it.
        tp.run(tp.server, ["sh", "-c", "setsid -f sleep 300 >/dev/null 2>&1"], check=True)
        strays = subprocess.run(
            ["ip", "netns", "pids", tp.server.netns], capture_output=True, text=True, check=True
        )
        pids += [int(p) for p in strays.stdout.split()]
        assert len(pids) == 2
        raise ValueError("body failed")
    assert not any(_running(pid) for pid in pids)
    assert not set(tp.namespaces) & set(list_namespaces())
    assert not [n for n in list_namespaces() if n.startswith(tp.tag)]


async def test_async_with_builds_and_removes_the_topology() -> None:
    require_root_netns()
    async with Topology(hosts=1) as tp:
        made = set(tp.namespaces)
        done = await tp.arun(tp.hosts[0], ["busybox", "ping", "-c", "1", "-W", "3", SERVER_IP])
        assert done.returncode == 0, done.stderr
    assert len(made) == 3
    assert not made & set(list_namespaces())


def test_sweep_removes_only_namespaces_whose_owner_is_dead() -> None:
    require_root_netns()
    dead_owner = subprocess.Popen(["true"])
    dead_owner.wait()
    stale = f"{PREFIX}{dead_owner.pid}-{secrets.token_hex(2)}-sweep"
    live = f"{PREFIX}{os.getpid()}-{secrets.token_hex(2)}-sweep"
    for name in (stale, live):
        subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        removed = sweep_stale_namespaces()
        present = set(list_namespaces())
        assert stale in removed
        assert stale not in present
        assert live in present
    finally:
        for name in (stale, live):
            subprocess.run(["ip", "netns", "del", name], capture_output=True)


# -- third-party clients against a real Kea ----------------------------------------------


@dataclass(frozen=True)
class KeaLab:
    topology: Topology
    kea: KeaDhcp4
    reserved: dict[str, str]  # MAC -> reserved address
    bench_list: Path


@pytest.fixture(scope="module")
def kea_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KeaLab]:
    """Kea in the server namespace: reservations only (no pools), so unknown MACs get nothing."""
    require_root_netns("kea-dhcp4", "perfdhcp", "udhcpc", "dhcpcd", "busybox")
    workdir = tmp_path_factory.mktemp("kea")
    options: list[dict[str, object]] = [
        {"name": "vendor-encapsulated-options", "csv-format": False, "data": VENDOR_43.hex()},
        {"name": "tftp-server-name", "data": TFTP_66},
    ]
    reserved = {host_mac(1): "198.18.77.51"}
    reserved.update({mac: f"198.18.77.{61 + i}" for i, mac in enumerate(bench_macs(2))})
    remote_mac = host_mac(1, segment=2)
    config = kea_dhcp4_config(
        workdir,
        "eth0",
        [
            kea_subnet(
                1,
                LAN_CIDR,
                reservations=[
                    kea_reservation(mac, ip, options if mac == host_mac(1) else ())
                    for mac, ip in reserved.items()
                ],
            ),
            kea_subnet(2, REMOTE_CIDR, reservations=[kea_reservation(remote_mac, "198.18.78.51")]),
        ],
    )
    reserved[remote_mac] = "198.18.78.51"
    bench_list = write_mac_list(workdir / "macs.txt", bench_macs(2))
    with Topology(hosts=2, remote_hosts=1) as tp, KeaDhcp4(tp, tp.server, workdir, config) as kea:
        yield KeaLab(tp, kea, reserved, bench_list)


def test_perfdhcp_completes_exchanges_with_kea_for_the_listed_macs(kea_lab: KeaLab) -> None:
    tp = kea_lab.topology
    result = run_perfdhcp(
        tp, tp.hosts[1], SERVER_IP, rate=50, seconds=2, mac_list=kea_lab.bench_list
    )
    assert result.sent > 0
    assert set(result.exchanges) == {"DISCOVER-OFFER", "REQUEST-ACK"}
    assert result.completed > 0
    acks = result.exchanges["REQUEST-ACK"]
    # -x t gives one timer per successful exchange: the percentile source is complete.
    assert len(acks.latencies_ms) == acks.received
    assert acks.min_ms - 0.001 <= acks.latency_pct(99) <= acks.max_ms + 0.001
    leased = {row["hwaddr"]: row["address"] for row in kea_lab.kea.leases()}
    assert set(bench_macs(2)) <= set(leased)
    assert all(leased[mac] == kea_lab.reserved[mac] for mac in bench_macs(2))


def test_udhcpc_gets_its_reserved_address_and_options_from_kea(kea_lab: KeaLab) -> None:
    tp = kea_lab.topology
    result = run_udhcpc(tp, tp.hosts[0], vendor_class="yealink", request=(43, 66))
    assert result.returncode == 0, result.output
    lease = result.lease
    assert lease is not None, result.output
    assert lease["ip"] == "198.18.77.51"
    assert lease["serverid"] == SERVER_IP
    assert lease["opt43"] == VENDOR_43.hex()
    assert lease["tftp"] == TFTP_66
    # udhcpc sends option 61 = 01 + MAC by default; Kea echoes it (RFC 6842).
    assert lease["opt61"] == "01" + host_mac(1).replace(":", "")


def test_udhcpc_without_a_reservation_gets_no_lease(kea_lab: KeaLab) -> None:
    tp = kea_lab.topology
    result = run_udhcpc(tp, tp.hosts[1], request=(43,), tries=2, wait_per_try=1)
    assert result.returncode != 0
    assert result.lease is None
    assert [event for event, _ in result.events] == ["deconfig", "leasefail"]


def test_dhcpcd_inform_is_acked_by_kea_with_the_reserved_vendor_options(kea_lab: KeaLab) -> None:
    tp = kea_lab.topology
    result = run_dhcpcd_inform(tp, tp.hosts[0])
    assert result.returncode == 0, result.output
    assert result.reason == "TEST"
    assert result.answered
    assert result.options["dhcp_message_type"] == "5"  # DHCPACK (RFC 2131 §4.3.5)
    assert result.options["dhcp_server_identifier"] == SERVER_IP
    assert result.options["ip_address"] == tp.hosts[0].ip  # ciaddr, not a new lease
    assert result.options["vendor_encapsulated_options"] == VENDOR_43.hex()
    assert result.options["dhcp_client_identifier"] == "01" + host_mac(1).replace(":", "")


def test_dhcpcd_inform_from_an_unreserved_mac_gets_no_vendor_options(kea_lab: KeaLab) -> None:
    tp = kea_lab.topology
    result = run_dhcpcd_inform(tp, tp.hosts[1])
    # Kea answers any INFORM from its subnet; only the reservation carries option 43.
    assert result.answered, result.output
    assert "vendor_encapsulated_options" not in result.options


def test_relayed_perfdhcp_is_answered_through_the_relay(kea_lab: KeaLab) -> None:
    tp = kea_lab.topology
    assert tp.relay is not None
    before = _link(tp, tp.relay.netns, tp.relay.remote_ifname)["stats64"]
    remote = tp.remote_hosts[0]
    result = run_perfdhcp(
        tp, remote, SERVER_IP, rate=10, num_requests=3, base_mac=remote.mac, local=remote.ip
    )
    after = _link(tp, tp.relay.netns, tp.relay.remote_ifname)["stats64"]
    assert result.sent == 3
    assert result.completed == 3
    leased = {row["hwaddr"]: row["address"] for row in kea_lab.kea.leases()}
    # giaddr = 198.18.78.11 made Kea pick the remote subnet and the remote reservation.
    assert leased[remote.mac] == "198.18.78.51"
    # 3 DISCOVERs + 3 REQUESTs in, 3 OFFERs + 3 ACKs out, all through the relay's remote side.
    assert after["rx"]["packets"] - before["rx"]["packets"] >= 6  # type: ignore[index]
    assert after["tx"]["packets"] - before["tx"]["packets"] >= 6  # type: ignore[index]


def test_dhcpcd_inform_with_no_server_reports_no_answer(netns_topology: Topology) -> None:
    require_root_netns("dhcpcd")
    result = run_dhcpcd_inform(netns_topology, netns_topology.hosts[0], wait=2)
    assert not result.answered
    assert result.returncode != 0


# -- parsing, on text perfdhcp 2.2 printed -----------------------------------------------

PERFDHCP_REPORT = """\
Running: perfdhcp -4 -r 100 -p 2 -x t 198.18.77.1
Scenario: basic.
***Rate statistics***
Rate: 99.4597 4-way exchanges/second, expected rate: 100

***Statistics for: DISCOVER-OFFER***
sent packets: 4
received packets: 3
drops: 1
drops ratio: 25 %
orphans: 0
rejected leases: 0
non unique addresses: 0

min delay: 0.408 ms
avg delay: 0.744 ms
max delay: 1.679 ms
std deviation: 0.174 ms
collected packets: 0

***Statistics for: REQUEST-ACK***
sent packets: 3
received packets: 2
drops: 1
drops ratio: 33.333 %
orphans: 0
rejected leases: 0
non unique addresses: 0

min delay: 0.220 ms
avg delay: 0.452 ms
max delay: 1.487 ms
std deviation: 0.169 ms
collected packets: 0

***Timestamps for packets: DISCOVER-OFFER***
sent / received: 000000.000234 / 000000.001321
sent / received: 000000.020260 / 000000.020947
sent / received: 000000.030304 / 000000.030819
***Timestamps for packets: REQUEST-ACK***
sent / received: 000000.001400 / 000000.001620
sent / received: 000000.021000 / 000000.022487
"""


def test_perfdhcp_report_parses_into_counts_delays_and_timers() -> None:
    result = parse_perfdhcp_output(PERFDHCP_REPORT, returncode=3)
    assert result.rate == pytest.approx(99.4597)
    assert result.expected_rate == 100
    offers, acks = result.exchanges["DISCOVER-OFFER"], result.exchanges["REQUEST-ACK"]
    assert (offers.sent, offers.received, offers.drops) == (4, 3, 1)
    assert acks.drops_ratio_pct == pytest.approx(33.333)
    assert (acks.min_ms, acks.avg_ms, acks.max_ms) == (0.220, 0.452, 1.487)
    assert offers.latencies_ms == (1.087, 0.687, 0.515)
    assert acks.latencies_ms == (0.22, 1.487)
    assert result.sent == 4
    assert result.completed == 2
    assert result.drop_pct == pytest.approx(50.0)
    assert offers.latency_pct(50) == 0.687
    assert offers.latency_pct(99) == 1.087


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 99) == 99.0
    assert percentile(values, 50) == 50.0
    assert percentile(values, 100) == 100.0
    assert percentile([3.0], 99) == 3.0
