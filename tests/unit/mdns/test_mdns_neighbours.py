"""Learning MACs and on-link networks: /proc parsers on real-format text, resolver precedence."""

from __future__ import annotations

import ipaddress
import sys
from pathlib import Path

import pytest

from server.mdns.neighbours import (
    KernelNeighbours,
    NeighbourConfigError,
    NeighbourResolver,
    interface_addresses,
    interface_networks,
    parse_if_inet6,
    parse_proc_net_arp,
    parse_proc_net_ipv6_route,
    parse_proc_net_route,
)

ARP = """\
IP address       HW type     Flags       HW address            Mask     Device
198.18.77.11     0x1         0x2         02:00:5E:00:01:01     *        eth0
198.18.77.12     0x1         0x0         00:00:00:00:00:00     *        eth0
198.18.77.13     0x1         0x6         02:00:5e:00:01:03     *        eth0
10.0.0.7         0x1         0x2         02:00:5e:00:09:09     *        eth1
garbage line
"""

# /proc/net/route as printed on a little-endian host (x86-64): 192.0.2.0/24 on eth0 via no
# gateway, a default route via 192.0.2.1, 10.9.0.0/16 via a gateway, 198.18.77.0/24 on br0.
ROUTE = """\
Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0
eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
eth0\t0000090A\t010200C0\t0003\t0\t0\t0\t0000FFFF\t0\t0\t0
br0\t004D12C6\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
"""

IPV6_ROUTE = """\
fd000000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth0
fe800000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000002 00000000 00000001     eth0
00000000000000000000000000000000 00 00000000000000000000000000000000 00 fd000000000000000000000000000001 00000400 00000003 00000000 00000003     eth0
fd000000000000000000000000000002 80 00000000000000000000000000000000 00 00000000000000000000000000000000 00000000 00000004 00000000 80200001     eth0
ff000000000000000000000000000000 08 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000003 00000000 00000001     eth0
20010db8000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth1
"""


def test_arp_table_keeps_complete_entries_with_normalised_macs() -> None:
    assert parse_proc_net_arp(ARP) == {
        "198.18.77.11": "02:00:5e:00:01:01",
        "198.18.77.13": "02:00:5e:00:01:03",
        "10.0.0.7": "02:00:5e:00:09:09",
    }
    assert set(parse_proc_net_arp(ARP, "eth1")) == {"10.0.0.7"}


def test_ipv4_routes_without_gateway_are_on_link() -> None:
    nets = parse_proc_net_route(ROUTE, byteorder="little")
    assert nets == [ipaddress.ip_network("192.0.2.0/24"), ipaddress.ip_network("198.18.77.0/24")]
    assert parse_proc_net_route(ROUTE, "br0", byteorder="little") == [
        ipaddress.ip_network("198.18.77.0/24")
    ]


def test_ipv6_on_link_prefixes_skip_gateways_own_addresses_and_multicast() -> None:
    assert parse_proc_net_ipv6_route(IPV6_ROUTE, "eth0") == [
        ipaddress.ip_network("fd00::/64"),
        ipaddress.ip_network("fe80::/64"),
    ]


def test_interface_networks_reads_proc_files(tmp_path: Path) -> None:
    (tmp_path / "net").mkdir()
    (tmp_path / "net" / "route").write_text(ROUTE)
    (tmp_path / "net" / "ipv6_route").write_text(IPV6_ROUTE)
    nets = interface_networks("br0", tmp_path)
    if sys.byteorder == "little":
        assert nets == [ipaddress.ip_network("198.18.77.0/24")]
    assert interface_networks("lo", tmp_path) == [
        ipaddress.ip_network("127.0.0.0/8"),
        ipaddress.ip_network("::1/128"),
    ]
    assert interface_networks("eth0", tmp_path / "missing") == []


def test_kernel_table_is_reread_when_stale_or_on_a_miss(tmp_path: Path) -> None:
    arp = tmp_path / "arp"
    arp.write_text(ARP)
    k = KernelNeighbours(path=arp, max_age=10.0, miss_interval=1.0)
    assert k.lookup("198.18.77.11", 0.0) == "02:00:5e:00:01:01"
    head = ARP.splitlines()[0]
    arp.write_text(head + "\n198.18.77.20  0x1  0x2  02:00:5e:00:01:20  *  eth0\n")
    assert k.lookup("198.18.77.20", 0.5) is None  # a miss re-reads at most once a second
    assert k.lookup("198.18.77.20", 1.0) == "02:00:5e:00:01:20"
    assert k.lookup("198.18.77.11", 1.2) is None  # gone from the new table
    arp.unlink()
    assert k.lookup("198.18.77.20", 20.0) is None  # unreadable: empty, not an error


def test_resolver_precedence_frame_static_kernel_lease(tmp_path: Path) -> None:
    arp = tmp_path / "arp"
    arp.write_text(ARP)
    leases = {"198.18.77.50": "02-00-5E-00-01-50", "198.18.77.11": "02:00:5e:00:00:99"}
    r = NeighbourResolver(
        static={"127.0.0.1": "02:00:5E:00:01:01", "198.18.77.13": "02:00:5e:00:0a:0a"},
        kernel=KernelNeighbours(path=arp),
        leases=leases.get,
    )
    assert r.resolve("198.18.77.11", 0.0, frame_mac="02:00:5e:00:0f:0f") == (
        "02:00:5e:00:0f:0f",
        "frame",
    )
    assert r.resolve("127.0.0.1", 0.0) == ("02:00:5e:00:01:01", "static")
    assert r.resolve("198.18.77.13", 0.0) == ("02:00:5e:00:0a:0a", "static")
    assert r.resolve("198.18.77.11", 0.0) == ("02:00:5e:00:01:01", "neighbour")
    assert r.resolve("198.18.77.50", 0.0) == ("02:00:5e:00:01:50", "lease")
    assert r.resolve("198.18.77.99", 0.0) == (None, "unknown")


def test_bad_lease_mac_is_not_used() -> None:
    r = NeighbourResolver(leases={"198.18.77.50": "ff:ff:ff:ff:ff:ff"}.get)
    assert r.resolve("198.18.77.50", 0.0) == (None, "unknown")


def test_bad_static_entries_name_the_key() -> None:
    with pytest.raises(NeighbourConfigError, match="not an IP"):
        NeighbourResolver(static={"lab-box": "02:00:5e:00:01:01"})
    with pytest.raises(NeighbourConfigError, match="127.0.0.1"):
        NeighbourResolver(static={"127.0.0.1": "01:00:5e:00:00:fb"})  # multicast MAC


IF_INET6 = """\
fe8000000000000000fc00fffe000001 04 40 20 80     eth0
00000000000000000000000000000001 01 80 10 80       lo
fd000000000000000000000000000002 04 40 00 82     eth0
fd000000000000000000000000000003 04 40 00 c0     eth0
20010db8000000000000000000000001 05 40 00 80     eth1
"""


def test_if_inet6_skips_tentative_addresses_and_other_interfaces() -> None:
    assert parse_if_inet6(IF_INET6, "eth0") == [
        ipaddress.IPv6Address("fe80::fc:ff:fe00:1"),
        ipaddress.IPv6Address("fd00::2"),
    ]
    assert parse_if_inet6(IF_INET6, "lo") == []


def test_interface_addresses_leave_out_link_local(tmp_path: Path) -> None:
    (tmp_path / "net").mkdir()
    (tmp_path / "net" / "if_inet6").write_text(IF_INET6)
    # "lo" carries 127.0.0.1 on every Linux host: a real ioctl, read back.
    assert interface_addresses("lo", tmp_path) == ["127.0.0.1"]
    assert interface_addresses("no-such-if0", tmp_path) == []
