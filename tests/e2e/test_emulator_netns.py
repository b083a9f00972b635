"""RAW L2 MODE in two network namespaces joined by a veth pair, created and removed here.

The peer is a scapy-free UDP listener on 0.0.0.0:67 (below, by hand): NOT Imprint. It proves
the emulator's raw Ethernet transport puts real frames on a wire that a kernel UDP socket
accepts, and that it receives unicast and broadcast replies. Needs root (skipped otherwise).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(
        os.geteuid() != 0 or shutil.which("ip") is None, reason="needs root and iproute2"
    ),
]

REPO = Path(__file__).resolve().parents[2]
DEVICE_MAC = "02:00:5e:00:09:11"

# Replies with hand-built bytes: ACK to INFORM (unicast to ciaddr:68), OFFER/ACK with
# yiaddr 0 to DISCOVER/REQUEST (broadcast, since ciaddr is 0), each carrying option 160.
LISTENER = r"""
import socket, sys
iface, server_ip, limit = sys.argv[1], sys.argv[2], int(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, iface.encode())
s.bind(("0.0.0.0", 67))
s.settimeout(20)
print("listening", flush=True)
url = b"https://imprint.example.com/prov"
for _ in range(limit):
    try:
        data, src = s.recvfrom(2048)
    except socket.timeout:
        break
    opts, i = {}, 240
    while i < len(data) and data[i] != 255:
        if data[i] == 0:
            i += 1
            continue
        opts.setdefault(data[i], data[i + 2:i + 2 + data[i + 1]])
        i += 2 + data[i + 1]
    kind = opts[53][0]
    print(f"{src[0]} {src[1]} {data[4:8].hex()} {data[10:12].hex()} "
          f"{socket.inet_ntoa(data[12:16])} {data[28:34].hex(':')} {kind} "
          f"{opts.get(60, b'').decode()} {opts.get(54, b'').hex()}", flush=True)
    reply_type = {8: 5, 1: 2, 3: 5}[kind]
    header = bytes([2, 1, 6, 0]) + data[4:8] + b"\0\0" + data[10:12] + data[12:16]
    header += bytes(12) + data[28:44] + bytes(192) + bytes([99, 130, 83, 99])
    options = bytes([53, 1, reply_type, 54, 4]) + socket.inet_aton(server_ip)
    options += bytes([160, len(url)]) + url + b"\xff"
    dest = socket.inet_ntoa(data[12:16]) if data[12:16] != bytes(4) else "255.255.255.255"
    s.sendto(header + options, (dest, 68))
"""


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


@pytest.fixture
def namespaces() -> Iterator[tuple[str, str]]:
    """imptest-<pid>-srv (198.18.99.1) and imptest-<pid>-dev (198.18.99.11), eth0 in each."""
    tag = f"{os.getpid() % 100000}"
    srv, dev = f"imptest-{tag}-srv", f"imptest-{tag}-dev"
    veth_d, veth_s = f"imptest-{tag}d", f"imptest-{tag}s"
    try:
        ip("netns", "add", srv)
        ip("netns", "add", dev)
        ip("link", "add", veth_d, "type", "veth", "peer", "name", veth_s)
        ip("link", "set", veth_d, "netns", dev)
        ip("link", "set", veth_s, "netns", srv)
        ip("-n", dev, "link", "set", veth_d, "name", "eth0")
        ip("-n", srv, "link", "set", veth_s, "name", "eth0")
        ip("-n", dev, "link", "set", "eth0", "address", DEVICE_MAC)
        ip("-n", srv, "addr", "add", "198.18.99.1/24", "dev", "eth0")
        ip("-n", dev, "addr", "add", "198.18.99.11/24", "dev", "eth0")
        for ns in (srv, dev):
            ip("-n", ns, "link", "set", "eth0", "up")
            ip("-n", ns, "link", "set", "lo", "up")
        yield srv, dev
    finally:
        for ns in (srv, dev):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)


def run_exchange(srv: str, dev: str, expected: int, *argv: str) -> tuple[int, str, list[str]]:
    """Start the listener in `srv`, run the emulator CLI in `dev`; return its exit code,
    stdout, and the listener's report lines."""
    listener = subprocess.Popen(
        ["ip", "netns", "exec", srv, sys.executable, "-c", LISTENER, "eth0", "198.18.99.1",
         str(expected)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert listener.stdout is not None
        assert listener.stdout.readline().strip() == "listening"
        device = subprocess.run(
            ["ip", "netns", "exec", dev, sys.executable, "-m", "device_emulator", *argv],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=30,
        )
        out, err = listener.communicate(timeout=30)
    finally:
        if listener.poll() is None:
            listener.kill()
            listener.wait(timeout=10)
    assert not err, err
    return device.returncode, device.stdout, out.splitlines()


def test_raw_l2_inform_reaches_a_kernel_socket_and_unicast_ack_comes_back(
    namespaces: tuple[str, str],
) -> None:
    srv, dev = namespaces
    code, stdout, seen = run_exchange(
        srv, dev, 1,
        "dhcp", "inform", "--iface", "eth0", "--vendor-class", "MS-UC-Client",
        "--timeout", "10", "--retry-initial", "0.5", "--json",
    )  # fmt: skip
    assert code == 0, stdout
    # Source address = ciaddr (taken from eth0), source port 68, MAC = eth0's MAC, type 8.
    src, sport, xid, flags, ciaddr, chaddr, kind, vendor, _ = seen[0].split(" ")
    assert (src, sport, flags, ciaddr, chaddr, kind, vendor) == (
        "198.18.99.11", "68", "0000", "198.18.99.11", DEVICE_MAC, "8", "MS-UC-Client",
    )  # fmt: skip
    result = json.loads(stdout)
    assert result["xid"] == f"0x{xid}"
    assert result["message_type"] == "ACK" and result["server_id"] == "198.18.99.1"
    assert result["provisioning"]["url"] == "https://imprint.example.com/prov"


def test_raw_l2_discover_from_foreign_mac_gets_broadcast_offer_and_ack(
    namespaces: tuple[str, str],
) -> None:
    srv, dev = namespaces
    code, stdout, seen = run_exchange(
        srv, dev, 2,
        "dhcp", "discover", "--iface", "eth0", "--mac", "02:00:5e:00:09:99",
        "--vendor-class", "Polycom-VVX", "--timeout", "10", "--retry-initial", "0.5",
        "--offer-wait", "0", "--json",
    )  # fmt: skip
    assert code == 0, stdout
    discover, request = (line.split(" ") for line in seen)
    assert discover[0] == "0.0.0.0" and discover[3] == "8000"  # broadcast flag set
    assert discover[5] == request[5] == "02:00:5e:00:09:99"
    assert (discover[6], request[6]) == ("1", "3")
    assert request[8] == "c6126301"  # option 54 = 198.18.99.1
    result = json.loads(stdout)
    assert result["message_type"] == "ACK" and result["offer"]["yiaddr"] == "0.0.0.0"
    assert result["provisioning"]["url"] == "https://imprint.example.com/prov"
