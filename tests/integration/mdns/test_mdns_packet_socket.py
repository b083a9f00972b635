"""Real sockets: AF_PACKET with the kernel filter, start-up without CAP_NET_RAW, rtnetlink.

Both need root (a namespace, or dropping a capability root holds); they skip with the reason
elsewhere. Traffic goes only between namespaces the test creates.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time

import pytest

from server.mdns.frames import FrameError, parse_frame
from server.mdns.netlink import NetlinkNeighbours
from server.mdns.transport import open_packet_socket
from tests.helpers.netns import SERVER_IP, Node, Topology, netns_call, require_root_netns

pytestmark = pytest.mark.netns


def read_frames(sock: socket.socket, wait: float) -> list[bytes]:
    sock.settimeout(0.2)
    out: list[bytes] = []
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            frame, addr = sock.recvfrom(65535)
        except TimeoutError:
            continue
        out.append(frame)
    return out


def test_packet_socket_filter_passes_only_udp_to_port_5353_with_the_senders_mac() -> None:
    require_root_netns()
    with Topology(hosts=1) as tp:
        host = tp.hosts[0]
        packet = netns_call(tp.server.netns, lambda: open_packet_socket("eth0", 5353))
        try:
            with tp.socket(host, socket.AF_INET, socket.SOCK_DGRAM) as udp:
                udp.bind((host.ip, 40000))
                udp.sendto(b"to-53", (SERVER_IP, 53))
                udp.sendto(b"to-5354", (SERVER_IP, 5354))
                udp.sendto(b"to-5353", (SERVER_IP, 5353))
                udp.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(host.ip))
                udp.sendto(b"to-group", ("224.0.0.251", 5353))
            frames = read_frames(packet, 1.0)
        finally:
            packet.close()
    parsed = []
    for frame in frames:
        try:
            parsed.append(parse_frame(frame))
        except FrameError as e:  # anything the filter let through must be ours to parse
            pytest.fail(f"filter passed a frame the parser refuses: {e}: {frame.hex()}")
    # ARP, the host's IPv6/IGMP chatter and the datagrams to 53 and 5354 never got through.
    assert sorted(d.payload for d in parsed) == [b"to-5353", b"to-group"]
    for d in parsed:
        assert (d.src_mac, d.src_ip, d.src_port, d.dst_port) == (host.mac, host.ip, 40000, 5353)


STARTUP = r"""
import asyncio, logging, sys
from server.core.metrics import Registry
from server.mdns.neighbours import NeighbourResolver, interface_networks
from server.mdns.records import build_records
from server.mdns.service import MdnsService
from server.mdns.transport import start_mdns
from server.registry.model import ProvisioningEndpoint

class Count(logging.Handler):
    lines = []
    def emit(self, record):
        if record.levelno >= logging.WARNING:
            self.lines.append(record.getMessage())

async def main():
    logging.getLogger("imprint.mdns").addHandler(Count())
    metrics = Registry()
    service = MdnsService(
        build_records(ProvisioningEndpoint("https", "198.18.77.1", 8443, "/p", ""),
                      hostname="imprint", addresses=["198.18.77.1"]),
        {}, networks=interface_networks("lo"), neighbours=NeighbourResolver(), metrics=metrics)
    srv = await start_mdns(service, "127.0.0.1", 0, "lo", join_group=False, capture=True)
    print(int(srv.capturing), service.capture.value("lo"), len(Count.lines))
    for line in Count.lines:
        print(line)
    srv.close(goodbye=False)
    await srv.wait_closed()

asyncio.run(main())
"""


def run_startup(prefix: list[str]) -> list[str]:
    done = subprocess.run(
        [*prefix, sys.executable, "-c", STARTUP],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.splitlines()


def test_without_cap_net_raw_mdns_starts_and_says_once_what_is_missing() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: the test drops CAP_NET_RAW from a process that holds it")
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("needs setpriv (util-linux) to drop CAP_NET_RAW")
    # With the capability (root), frames are captured: no warning.
    assert run_startup([]) == ["1 1 0"]
    # The same process without CAP_NET_RAW in its bounding set: starts, falls back, says why.
    out = run_startup([setpriv, "--bounding-set=-net_raw", "--inh-caps=-net_raw", "--"])
    assert out[0] == "0 0 1", out
    assert "CAP_NET_RAW" in out[1] and "IMP_MAC_UNKNOWN" in out[1] and "neighbour table" in out[1]


def test_netlink_neighbours_find_an_ipv6_neighbour_by_link_local_address() -> None:
    require_root_netns("busybox")
    with Topology(hosts=1, ipv6=True) as tp:
        host = tp.hosts[0]

        def ll(node: Node) -> str:
            out = tp.run(node, ["ip", "-6", "-o", "addr", "show", "dev", "eth0", "scope", "link"])
            return out.stdout.split("inet6 ", 1)[1].split("/", 1)[0]

        server_ll, host_ll = ll(tp.server), ll(host)
        table = NetlinkNeighbours("eth0")
        assert netns_call(tp.server.netns, lambda: table.lookup(host_ll, 0.0)) is None
        pinged = tp.run(host, ["busybox", "ping", "-6", "-c", "1", "-W", "3", f"{server_ll}%eth0"])
        assert pinged.returncode == 0, pinged.stdout + pinged.stderr
        # A miss re-reads the table at once, so the entry made by the ping is found now.
        found = netns_call(tp.server.netns, lambda: table.lookup(f"{host_ll}%eth0", 1.0))
        assert found == host.mac
        other = NetlinkNeighbours("lo")  # the same table, but only entries of another interface
        assert netns_call(tp.server.netns, lambda: other.lookup(host_ll, 0.0)) is None


CAPTURING = r"""
import asyncio, sys
from server.core.metrics import Registry
from server.mdns.neighbours import NeighbourResolver, interface_networks
from server.mdns.records import build_records
from server.mdns.service import MdnsService
from server.mdns.transport import start_mdns
from server.registry.model import DeviceState, DeviceView, ProvisioningEndpoint

MAC = sys.argv[1]

async def main():
    service = MdnsService(
        build_records(ProvisioningEndpoint("https", "198.18.77.1", 8443, "/p", ""),
                      hostname="imprint", addresses=["198.18.77.1"]),
        {MAC: DeviceView(MAC, "t", "T", DeviceState.AWAITING_ACTIVATION, "")},
        networks=interface_networks("eth0"), neighbours=NeighbourResolver(), metrics=Registry())
    srv = await start_mdns(service, "0.0.0.0", 5353, "eth0", capture=True)
    print("ready", flush=True)
    await asyncio.sleep(2.0)
    port = f"{srv.address[1]:04X}"
    drops = [int(line.split()[-1]) for line in open("/proc/net/udp").read().splitlines()[1:]
             if line.split()[1].endswith(":" + port)]
    print(int(service.received.value()), service.answers.value("legacy"), drops, flush=True)
    srv.close(goodbye=False)
    await srv.wait_closed()

asyncio.run(main())
"""


def test_while_frames_are_answered_the_kernel_drops_the_udp_copies() -> None:
    """Each query is read once (as a frame); its UDP copy is dropped by a socket filter."""
    require_root_netns()
    with Topology(hosts=1) as tp:
        host = tp.hosts[0]
        proc = tp.popen_python(tp.server, CAPTURING, host.mac)
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        query = bytes.fromhex("000100000001000000000000") + (
            b"\x08_imprint\x04_tcp\x05local\x00\x00\x0c\x00\x01"
        )
        with tp.socket(host, socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((host.ip, 0))
            udp.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(host.ip))
            udp.settimeout(2)
            answers = 0
            for _ in range(3):
                udp.sendto(query, ("224.0.0.251", 5353))
                udp.recv(4096)
                answers += 1
        out, err = proc.communicate(timeout=10)
    assert answers == 3
    received, legacy, drops = out.split(" ", 2)
    assert (received, legacy) == ("3", "3"), out + err  # each query handled once
    assert drops.strip() == "[3]", out + err  # the three UDP copies, dropped in the kernel
