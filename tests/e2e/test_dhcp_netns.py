"""Issue 3 end to end: the real `imprint serve` answering real DHCP clients in network namespaces.

One class per `dhcp.mode`; each builds its own topology and server (class-scoped fixture) and
removes both afterwards. The clients are third-party programs (dhcpcd 9, busybox udhcpc, Kea
perfdhcp) and the project's device emulator in raw L2 mode. Where a client does not show a
reply's bytes, the frames captured in the client's own namespace are dissected by scapy, an
independent decoder.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from scapy.layers.dhcp import BOOTP, DHCP, DHCPRevOptions
from scapy.layers.inet import IP, UDP

from tests.helpers.netns import (
    LAN_PREFIX,
    REMOTE_PREFIX,
    SERVER_IP,
    Node,
    Topology,
    bench_macs,
    require_root_netns,
    run_dhcpcd_inform,
    run_perfdhcp,
    run_udhcpc,
    write_mac_list,
)
from tests.helpers.server import Frame, ImprintServer, capture, emulator_argv

pytestmark = pytest.mark.netns

TENANT = "acme"
PUBLIC_HOST = "imprint.e2e.test"
HTTP_PORT = 8443
PROVISION_URL = f"https://{PUBLIC_HOST}:{HTTP_PORT}/provision"
LEASE_TIME = 600
LAN_POOL = (f"{LAN_PREFIX}.100", f"{LAN_PREFIX}.199")
REMOTE_POOL = (f"{REMOTE_PREFIX}.100", f"{REMOTE_PREFIX}.150")
# Relay agent information as a relay would add it (RFC 3046 §2.0): circuit id "eth0/1",
# remote id 01020304.
OPTION_82 = bytes([1, 6]) + b"eth0/1" + bytes([2, 4, 1, 2, 3, 4])
DROPPED = "imprint_dhcp_packets_dropped_total"
UNREGISTERED = "IMP_UNREGISTERED"
ACK, OFFER = 5, 2


# -- reading replies -------------------------------------------------------------------------


def tlv(raw: bytes) -> dict[int, bytes]:
    """Code/length/value items (option 43 sub-options, RFC 2132 §8.4); every byte accounted for."""
    out: dict[int, bytes] = {}
    i = 0
    while i < len(raw):
        assert i + 2 <= len(raw), f"truncated sub-option header at {i} in {raw.hex()}"
        code, length = raw[i], raw[i + 1]
        assert i + 2 + length <= len(raw), f"sub-option {code} runs past the end: {raw.hex()}"
        assert code not in out, f"sub-option {code} twice"
        out[code] = raw[i + 2 : i + 2 + length]
        i += 2 + length
    return out


def dns_labels(name: str) -> bytes:
    """A name in uncompressed RFC 1035 label form."""
    return b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"


def options(packet: Any) -> dict[int, Any]:
    """A reply's options by code, in wire order, as scapy decoded them."""
    out: dict[int, Any] = {}
    for item in packet[DHCP].options:
        if not isinstance(item, tuple):
            continue  # "end" / "pad"
        name, value = item[0], item[1] if len(item) == 2 else item[1:]
        code = name if isinstance(name, int) else DHCPRevOptions[name][0]
        out[code] = value
    return out


def dhcp_replies(frames: list[Frame]) -> list[Any]:
    """Incoming DHCP server replies (UDP from port 67, BOOTREPLY) among captured frames."""
    replies = []
    for frame in frames:
        if frame.outgoing:
            continue
        packet = frame.scapy()
        if packet.haslayer(DHCP) and packet[UDP].sport == 67 and packet[BOOTP].op == 2:
            replies.append(packet)
    return replies


def chaddr(packet: Any) -> str:
    return bytes(packet[BOOTP].chaddr)[:6].hex(":")


def in_pool(ip: str, pool: tuple[str, str]) -> bool:
    addr = ipaddress.IPv4Address(ip)
    return ipaddress.IPv4Address(pool[0]) <= addr <= ipaddress.IPv4Address(pool[1])


def discovered(srv: ImprintServer) -> dict[str, dict[str, Any]]:
    resp = srv.api("GET", "/api/v1/discovered")
    assert resp.status == 200, resp.body
    return {entry["mac"]: entry for entry in resp.body["results"]}


def run_emulator(
    tp: Topology, node: Node, *args: str, timeout: float = 30.0
) -> tuple[int, Any, str]:
    """`imprint-device ARGS --json` in a node; (exit status, parsed JSON or None, stderr)."""
    done = tp.run(node, [*emulator_argv(), *args, "--json"], timeout=timeout)
    body = json.loads(done.stdout) if done.stdout.strip() else None
    return done.returncode, body, done.stderr


# -- labs -------------------------------------------------------------------------------------


@dataclass
class Lab:
    tp: Topology
    srv: ImprintServer
    fingerprint: str  # SHA-256 of the certificate the HTTPS listener presents
    workdir: Path


def start_lab(
    tp: Topology, workdir: Path, mode: str, macs: list[str], **dhcp: Any
) -> Iterator[Lab]:
    """Register `macs` with the CLI, start `imprint serve` in `mode`, stop it afterwards."""
    overrides = {
        "http": {"port": HTTP_PORT, "public_url": f"https://{PUBLIC_HOST}:{HTTP_PORT}"},
        "dhcp": {"enabled": True, "mode": mode, "interface": tp.server.ifname, **dhcp},
    }
    with ImprintServer(tp, tp.server, workdir, overrides) as srv:
        srv.create_tenant(TENANT)
        srv.import_devices(TENANT, macs)
        srv.start()
        yield Lab(tp, srv, srv.served_fingerprint(), workdir)
        assert srv.stop() == 0, srv.log()[-3000:]  # SIGTERM: a clean shutdown


@pytest.fixture(scope="class")
def inform_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """Inform mode; h1 registered, h2 not."""
    require_root_netns("dhcpcd", "udhcpc")
    with Topology(hosts=2) as tp:
        yield from start_lab(tp, tmp_path_factory.mktemp("inform"), "inform", [tp.hosts[0].mac])


@pytest.fixture(scope="class")
def proxy_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """Proxy mode; h1 and the bench MACs registered, h2 not."""
    require_root_netns("perfdhcp")
    with Topology(hosts=2) as tp:
        macs = [tp.hosts[0].mac, *bench_macs(6)]
        yield from start_lab(tp, tmp_path_factory.mktemp("proxy"), "proxy", macs)


@pytest.fixture(scope="class")
def full_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """Full mode with a LAN pool and a pool for the subnet behind the relay.

    Registered: h1, the remote host r1 and the bench MACs; h2 is not.
    """
    require_root_netns("udhcpc", "perfdhcp")
    with Topology(hosts=3, remote_hosts=1) as tp:
        subnets = [
            {
                "subnet": f"{LAN_PREFIX}.0/24",
                "pool": "-".join(LAN_POOL),
                "router": SERVER_IP,
                "dns": [SERVER_IP],
                "lease_time": LEASE_TIME,
            },
            {
                "subnet": f"{REMOTE_PREFIX}.0/24",
                "pool": "-".join(REMOTE_POOL),
                "router": f"{REMOTE_PREFIX}.1",
                "lease_time": LEASE_TIME,
            },
        ]
        macs = [tp.hosts[0].mac, tp.remote_hosts[0].mac, *bench_macs(6)]
        yield from start_lab(tp, tmp_path_factory.mktemp("full"), "full", macs, subnets=subnets)


# -- inform mode ------------------------------------------------------------------------------


class TestInformMode:
    def test_dhcpcd_inform_from_registered_mac_gets_ms_uc_client_options(
        self, inform_lab: Lab
    ) -> None:
        tp = inform_lab.tp
        h1 = tp.hosts[0]
        with capture(tp, h1) as cap:
            result = run_dhcpcd_inform(
                tp, h1, request=("vendor_encapsulated_options", "sip_server"), wait=5
            )
            frames = cap.frames()
        assert result.returncode == 0, result.output
        got = result.options
        assert got["dhcp_message_type"] == "5"  # DHCPACK
        assert got["dhcp_server_identifier"] == SERVER_IP
        assert got["ip_address"] == h1.ip  # the client's own address, not a lease
        assert tlv(bytes.fromhex(got["vendor_encapsulated_options"])) == {
            1: b"MS-UC-Client",
            2: b"https",
            3: PUBLIC_HOST.encode(),
            4: str(HTTP_PORT).encode(),
            5: b"/provision",
            6: inform_lab.fingerprint.encode(),  # the certificate HTTPS really serves
        }
        assert got["sip_server"] == PUBLIC_HOST
        assert "dhcp_lease_time" not in got
        # The same reply as scapy reads it off the wire.
        acks = dhcp_replies(frames)
        assert acks, "dhcpcd printed a reply that the capture did not see"
        for ack in acks:
            opts = options(ack)
            # RFC 2131 §4.3.5: to ciaddr, yiaddr 0, no lease time or T1/T2; 53 and 54 first.
            assert (ack[IP].dst, ack[UDP].dport) == (h1.ip, 68)
            assert ack[BOOTP].yiaddr == "0.0.0.0"
            assert ack[BOOTP].ciaddr == h1.ip
            assert list(opts)[:2] == [53, 54]
            assert opts[53] == ACK
            assert not {51, 58, 59} & set(opts)
            assert opts[43] == bytes.fromhex(got["vendor_encapsulated_options"])
            assert opts[120] == b"\0" + dns_labels(PUBLIC_HOST)  # RFC 3361 §3.1: name form

    def test_emulator_inform_in_raw_l2_mode_gets_the_options_and_sees_no_problem(
        self, inform_lab: Lab
    ) -> None:
        tp = inform_lab.tp
        h1 = tp.hosts[0]
        status, body, err = run_emulator(
            tp,
            h1,
            "dhcp",
            "inform",
            "--iface",
            h1.ifname,
            "--vendor-class",
            "MS-UC-Client",
            "--timeout",
            "8",
        )
        assert status == 0, err
        assert body["problems"] == []
        assert body["provisioning"]["problems"] == []
        assert (body["message_type"], body["server_id"]) == ("ACK", SERVER_IP)
        assert body["yiaddr"] == "0.0.0.0"
        assert "51" not in body["options"]
        assert body["provisioning"]["url"] == PROVISION_URL
        assert body["provisioning"]["fingerprint"] == inform_lab.fingerprint
        assert tlv(bytes.fromhex(body["options"]["43"]))[6] == inform_lab.fingerprint.encode()

    def test_inform_mode_never_offers_an_address(self, inform_lab: Lab) -> None:
        tp, srv = inform_lab.tp, inform_lab.srv
        before = srv.metrics().value(DROPPED, reason="DHCP_TYPE_NOT_SERVED")
        result = run_udhcpc(tp, tp.hosts[0], vendor_class="yealink", tries=1, wait_per_try=1)
        assert result.lease is None, result.output
        assert [event for event, _ in result.events] == ["deconfig", "leasefail"]
        assert srv.metrics().value(DROPPED, reason="DHCP_TYPE_NOT_SERVED") > before

    def test_unregistered_mac_gets_nothing_is_listed_and_is_answered_once_registered(
        self, inform_lab: Lab
    ) -> None:
        tp, srv = inform_lab.tp, inform_lab.srv
        h2 = tp.hosts[1]
        assert srv.proc is not None
        pid = srv.proc.pid
        before = srv.metrics().value(DROPPED, reason=UNREGISTERED)
        with capture(tp, h2) as cap:
            silent = run_dhcpcd_inform(tp, h2, wait=2)
            frames = cap.frames()
        assert not silent.answered, silent.output
        assert silent.returncode != 0
        assert dhcp_replies(frames) == []  # not even a NAK
        assert srv.metrics().value(DROPPED, reason=UNREGISTERED) > before
        seen = discovered(srv)[h2.mac]
        assert (seen["vendor_class"], seen["source"], seen["interface"]) == (
            "MS-UC-Client",
            "dhcp",
            "eth0",
        )
        assert seen["count"] >= 1

        srv.add_device(TENANT, h2.mac, "desk 2")
        # The running server picks the CLI's write up within [store] poll_interval_s (0.2 s);
        # a few bounded tries cover a slow poll.
        for _attempt in range(5):
            answered = run_dhcpcd_inform(tp, h2, wait=2)
            if answered.answered:
                break
        assert answered.answered, answered.output
        sub = tlv(bytes.fromhex(answered.options["vendor_encapsulated_options"]))
        assert sub[1] == b"MS-UC-Client"
        assert srv.running and srv.proc is not None and srv.proc.pid == pid  # no restart


# -- proxy mode -------------------------------------------------------------------------------


class TestProxyMode:
    def test_perfdhcp_exchanges_complete_with_options_only_offers_and_acks(
        self, proxy_lab: Lab
    ) -> None:
        tp = proxy_lab.tp
        h2 = tp.hosts[1]
        macs = bench_macs(6)
        mac_list = write_mac_list(proxy_lab.workdir / "registered.txt", macs)
        with capture(tp, h2) as cap:
            # A unicast server address makes perfdhcp act as a relay: giaddr = h2, port 67.
            result = run_perfdhcp(
                tp, h2, SERVER_IP, rate=20, seconds=2, mac_list=mac_list, timestamps=False
            )
            frames = cap.frames(settle=0.2)
        offers, acks = result.exchanges["DISCOVER-OFFER"], result.exchanges["REQUEST-ACK"]
        # perfdhcp takes an OFFER with yiaddr 0.0.0.0 as a received offer, sends a REQUEST for
        # it and counts the options-only ACK; it does not look at yiaddr, so the wire does.
        assert offers.sent > 0 and offers.received > 0, result.output
        assert acks.received > 0, result.output
        replies = dhcp_replies(frames)
        got_offers = [r for r in replies if options(r)[53] == OFFER]
        got_acks = [r for r in replies if options(r)[53] == ACK]
        assert len(got_offers) >= offers.received
        assert len(got_acks) >= acks.received
        for reply in replies:
            opts = options(reply)
            assert reply[BOOTP].yiaddr == "0.0.0.0"  # proxy: never an address
            assert (reply[IP].dst, reply[UDP].dport) == (h2.ip, 67)  # to the relay (giaddr)
            assert reply[BOOTP].giaddr == h2.ip
            assert chaddr(reply) in macs
            assert opts[54] == SERVER_IP
            # No vendor class: the built-in generic profile (URL in 224, pin in 225).
            assert opts[224] == PROVISION_URL.encode()
            assert opts[225] == proxy_lab.fingerprint.encode()
            assert not {51, 58, 59} & set(opts)

    def test_emulator_discover_gets_proxy_offer_and_ack_with_yiaddr_zero(
        self, proxy_lab: Lab
    ) -> None:
        tp = proxy_lab.tp
        h1 = tp.hosts[0]
        status, body, err = run_emulator(
            tp,
            h1,
            "dhcp",
            "discover",
            "--iface",
            h1.ifname,
            "--vendor-class",
            "yealink",
            "--timeout",
            "8",
        )
        assert status == 0, err
        assert body["problems"] == []
        assert body["provisioning"]["problems"] == []
        assert body["offer"]["yiaddr"] == "0.0.0.0"
        assert body["offer"]["server_id"] == SERVER_IP
        assert (body["message_type"], body["yiaddr"], body["server_id"]) == (
            "ACK",
            "0.0.0.0",
            SERVER_IP,
        )
        url_hex = PROVISION_URL.encode().hex()  # yealink profile: URL as text in option 66
        assert body["offer"]["options"]["66"] == url_hex
        assert body["options"]["66"] == url_hex
        assert body["provisioning"]["url"] == PROVISION_URL

    def test_unregistered_macs_get_no_proxy_offer(self, proxy_lab: Lab) -> None:
        tp, srv = proxy_lab.tp, proxy_lab.srv
        h1, h2 = tp.hosts
        mac_list = write_mac_list(proxy_lab.workdir / "strangers.txt", bench_macs(2, segment=0x20))
        before = srv.metrics().value(DROPPED, reason=UNREGISTERED)
        with capture(tp, h1) as cap:
            result = run_perfdhcp(
                tp, h1, SERVER_IP, rate=10, num_requests=4, mac_list=mac_list, timestamps=False
            )
            frames = cap.frames(settle=0.2)
        assert result.sent == 4, result.output
        assert result.exchanges["DISCOVER-OFFER"].received == 0, result.output
        assert dhcp_replies(frames) == []
        # perfdhcp draws each exchange's MAC at random from the list: read which it used.
        sent = {chaddr(f.scapy()) for f in frames if f.outgoing and f.scapy().haslayer(DHCP)}
        status, body, err = run_emulator(
            tp,
            h2,
            "dhcp",
            "discover",
            "--iface",
            h2.ifname,
            "--vendor-class",
            "yealink",
            "--timeout",
            "3",
        )
        assert status == 2, (body, err)  # exit 2: no answer
        assert "no DHCPOFFER" in err
        assert srv.metrics().value(DROPPED, reason=UNREGISTERED) >= before + 5
        seen = discovered(srv)
        assert sent and sent <= set(seen)
        assert all(seen[mac]["vendor_class"] == "" for mac in sent)  # perfdhcp sends no 60
        assert seen[h2.mac]["vendor_class"] == "yealink"


# -- full mode --------------------------------------------------------------------------------


def lease_rows(srv: ImprintServer, mac: str) -> list[dict[str, Any]]:
    rows = srv.query("SELECT ip, mac, state, subnet FROM dhcp_leases WHERE mac = ?", mac)
    return [dict(row) for row in rows]


class TestFullMode:
    def test_udhcpc_from_registered_mac_leases_a_pool_address_with_options(
        self, full_lab: Lab
    ) -> None:
        tp, srv = full_lab.tp, full_lab.srv
        h1 = tp.hosts[0]
        with capture(tp, h1) as cap:
            result = run_udhcpc(tp, h1, vendor_class="yealink", request=(43, 66))
            frames = cap.frames()
        assert result.returncode == 0, result.output
        lease = result.lease
        assert lease is not None, result.output
        assert in_pool(lease["ip"], LAN_POOL)
        assert lease["serverid"] == SERVER_IP
        assert (lease["subnet"], lease["router"], lease["dns"]) == (
            "255.255.255.0",
            SERVER_IP,
            SERVER_IP,
        )
        assert lease["lease"] == str(LEASE_TIME)
        assert lease["opt61"] == "01" + h1.mac.replace(":", "")  # echoed (RFC 6842)
        # busybox shows a URL in option 66 as "bad" (not a host name): read the wire instead.
        assert lease["tftp"] == "bad"
        acks = [r for r in dhcp_replies(frames) if options(r)[53] == ACK]
        assert acks, "udhcpc printed a lease that the capture did not see"
        opts = options(acks[-1])
        assert acks[-1][BOOTP].yiaddr == lease["ip"]
        assert opts[66] == PROVISION_URL.encode()
        assert (opts[51], opts[58], opts[59]) == (LEASE_TIME, LEASE_TIME // 2, LEASE_TIME * 7 // 8)
        assert list(opts)[:2] == [53, 54]
        # Persisted before the ACK went out.
        assert lease_rows(srv, h1.mac) == [
            {"ip": lease["ip"], "mac": h1.mac, "state": "bound", "subnet": f"{LAN_PREFIX}.0/24"}
        ]

    def test_udhcpc_from_unregistered_mac_gets_no_lease_and_is_listed(self, full_lab: Lab) -> None:
        tp, srv = full_lab.tp, full_lab.srv
        h2 = tp.hosts[1]
        before = srv.metrics().value(DROPPED, reason=UNREGISTERED)
        with capture(tp, h2) as cap:
            result = run_udhcpc(tp, h2, vendor_class="yealink", request=(66,), tries=2)
            frames = cap.frames()
        assert result.returncode != 0
        assert result.lease is None
        assert [event for event, _ in result.events] == ["deconfig", "leasefail"]
        assert dhcp_replies(frames) == []  # silence: no OFFER, no NAK
        assert lease_rows(srv, h2.mac) == []
        assert srv.metrics().value(DROPPED, reason=UNREGISTERED) >= before + 2
        assert discovered(srv)[h2.mac]["vendor_class"] == "yealink"

    def test_perfdhcp_dora_binds_one_stable_pool_address_per_registered_mac(
        self, full_lab: Lab
    ) -> None:
        tp, srv = full_lab.tp, full_lab.srv
        h3 = tp.hosts[2]
        macs = bench_macs(6)
        mac_list = write_mac_list(full_lab.workdir / "registered.txt", macs)
        with capture(tp, h3) as cap:
            result = run_perfdhcp(
                tp, h3, SERVER_IP, rate=20, seconds=2, mac_list=mac_list, timestamps=False
            )
            frames = cap.frames(settle=0.2)
        assert set(result.exchanges) == {"DISCOVER-OFFER", "REQUEST-ACK"}
        assert result.completed > 0, result.output
        acks = [r for r in dhcp_replies(frames) if options(r)[53] == ACK]
        assert len(acks) >= result.completed
        given: dict[str, set[str]] = {}
        for ack in acks:
            assert (ack[IP].dst, ack[UDP].dport) == (h3.ip, 67)  # perfdhcp is the relay
            given.setdefault(chaddr(ack), set()).add(ack[BOOTP].yiaddr)
        assert set(given) <= set(macs)
        for mac, addresses in given.items():
            # RFC 2131 §4.3.1: a client with a binding is offered that same address again.
            assert len(addresses) == 1, (mac, addresses)
            (ip,) = addresses
            assert in_pool(ip, LAN_POOL)
            assert lease_rows(srv, mac) == [
                {"ip": ip, "mac": mac, "state": "bound", "subnet": f"{LAN_PREFIX}.0/24"}
            ]
        ips = [next(iter(a)) for a in given.values()]
        assert len(set(ips)) == len(ips)

    def test_relayed_discover_is_answered_to_the_relay_with_option_82_echoed(
        self, full_lab: Lab
    ) -> None:
        tp, srv = full_lab.tp, full_lab.srv
        remote = tp.remote_hosts[0]
        with capture(tp, remote) as cap:
            # perfdhcp as the relay agent in the remote subnet: giaddr = its address, sent
            # from port 67 through the routing relay namespace, with option 82 added.
            result = run_perfdhcp(
                tp,
                remote,
                SERVER_IP,
                rate=10,
                num_requests=3,
                base_mac=remote.mac,
                local=remote.ip,
                timestamps=False,
                extra_args=["-o", f"82,{OPTION_82.hex()}"],
            )
            frames = cap.frames(settle=0.2)
        # perfdhcp -n may end before it answers the last OFFER (its exit condition is the number
        # of DISCOVERs sent), so the run is judged on the wire: every relayed DISCOVER got an
        # OFFER and every REQUEST an ACK, all sent back to the relay.
        assert result.sent == 3 and result.completed >= 1, result.output
        relayed = [p for p in (f.scapy() for f in frames if f.outgoing) if p.haslayer(DHCP)]
        assert relayed and all(options(p)[82] == OPTION_82 for p in relayed)
        replies = dhcp_replies(frames)
        answer_to = {1: OFFER, 3: ACK}
        answered = {(r[BOOTP].xid, options(r)[53]) for r in replies}
        for request in relayed:
            assert (request[BOOTP].xid, answer_to[options(request)[53]]) in answered
        for reply in replies:
            opts = options(reply)
            assert (reply[IP].src, reply[IP].dst) == (SERVER_IP, remote.ip)
            assert (reply[UDP].sport, reply[UDP].dport) == (67, 67)  # RFC 2131 §4.1
            assert reply[BOOTP].giaddr == remote.ip
            assert in_pool(reply[BOOTP].yiaddr, REMOTE_POOL)  # subnet picked by giaddr
            assert opts[3] == f"{REMOTE_PREFIX}.1"
            assert opts[82] == OPTION_82  # RFC 3046 §2.2: echoed unchanged...
            assert list(opts)[-1] == 82  # ...and last
        (row,) = lease_rows(srv, remote.mac)
        assert row["state"] == "bound" and row["subnet"] == f"{REMOTE_PREFIX}.0/24"

    def test_lease_survives_a_server_restart(self, full_lab: Lab) -> None:
        tp, srv = full_lab.tp, full_lab.srv
        h1 = tp.hosts[0]
        first = run_udhcpc(tp, h1, vendor_class="yealink")
        assert first.lease is not None, first.output
        assert srv.stop() == 0, srv.log()[-3000:]
        stored = lease_rows(srv, h1.mac)  # the store file, with no server running
        assert stored == [
            {
                "ip": first.lease["ip"],
                "mac": h1.mac,
                "state": "bound",
                "subnet": f"{LAN_PREFIX}.0/24",
            }
        ]
        srv.start()
        # Asking afresh (a DISCOVER without a requested address, RFC 2131 §4.3.1), h1 gets the
        # address the restarted server loaded from the store.
        again = run_udhcpc(tp, h1, vendor_class="yealink")
        assert again.lease is not None, again.output
        assert again.lease["ip"] == first.lease["ip"]
