"""The full-mode probe for another DHCP server: its packets (checked with scapy as an independent
dissector), how it reads answers, and how it fails without privilege. The probe against a real
second server (Kea) on a real segment is in tests/e2e/test_rogue_dhcp_netns.py."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from scapy.layers.dhcp import BOOTP, DHCP
from scapy.layers.inet import IP, UDP

from server.config import ConfigError
from server.dhcp.probe import (
    ProbeUnavailable,
    discover_datagram,
    parse_offer,
    probe,
    probe_mac,
    probe_segment,
)

MAC = probe_mac(b"\xab\xcd\xef")
XID = 0x1234ABCD
SERVER_MAC = bytes.fromhex("02005e000101")


def offer(
    *,
    xid: int = XID,
    chaddr: bytes = MAC,
    yiaddr: str = "198.18.77.200",
    msg: str = "offer",
    op: int = 2,
    dport: int = 68,
    server_id: str | None = "198.18.77.11",
    frag: int = 0,
) -> bytes:
    options: list[object] = [("message-type", msg)]
    if server_id is not None:
        options.append(("server_id", server_id))
    options.append("end")
    pkt = (
        IP(src="198.18.77.11", dst="255.255.255.255", frag=frag)
        / UDP(sport=67, dport=dport)
        / BOOTP(op=op, xid=xid, yiaddr=yiaddr, chaddr=chaddr + bytes(10), flags=0x8000)
        / DHCP(options=options)
    )
    return bytes(pkt)


def test_probe_mac_is_locally_administered_unicast() -> None:
    assert MAC == b"\x02\x00\x00\xab\xcd\xef"
    assert MAC[0] & 0x02 and not MAC[0] & 0x01  # U/L bit set, I/G bit clear
    with pytest.raises(ValueError):
        probe_mac(b"\x00")


def test_discover_is_a_broadcast_client_datagram_that_scapy_reads_back() -> None:
    raw = discover_datagram(MAC, XID, secs=1)
    ip = IP(raw)
    assert (ip.src, ip.dst, ip.ttl, ip.proto) == ("0.0.0.0", "255.255.255.255", 64, 17)
    assert (ip[UDP].sport, ip[UDP].dport) == (68, 67)
    assert ip.len == len(raw) and ip[UDP].len == len(raw) - 20
    # Checksums as scapy computes them on its own.
    fresh = ip.copy()
    del fresh.chksum
    del fresh[UDP].chksum
    again = IP(bytes(fresh))
    assert (ip.chksum, ip[UDP].chksum) == (again.chksum, again[UDP].chksum)
    bootp = ip[BOOTP]
    assert (bootp.op, bootp.xid, bootp.flags, bootp.secs) == (1, XID, 0x8000, 1)
    assert bytes(bootp.chaddr)[:6] == MAC
    opts = {o[0]: o[1:] for o in ip[DHCP].options if isinstance(o, tuple)}
    assert opts["message-type"] == (1,)
    assert opts["client_id"] == (b"\x01" + MAC,)
    assert list(opts["param_req_list"][0]) == [1, 3, 6, 51, 54]


def test_offer_for_our_discover_names_the_server() -> None:
    got = parse_offer(offer(), XID, MAC, SERVER_MAC)
    assert got is not None
    assert (got.source_ip, got.server_id, got.offered) == (
        "198.18.77.11",
        "198.18.77.11",
        "198.18.77.200",
    )
    assert got.source_mac == "02:00:5e:00:01:01"
    assert got.leases_addresses
    assert "198.18.77.11" in got.describe() and "198.18.77.200" in got.describe()


def test_proxy_offer_is_heard_but_leases_nothing() -> None:
    got = parse_offer(offer(yiaddr="0.0.0.0", server_id=None), XID, MAC, SERVER_MAC)
    assert got is not None and not got.leases_addresses and got.server_id == ""


@pytest.mark.parametrize(
    "raw",
    [
        offer(xid=XID + 1),  # another client's exchange
        offer(chaddr=b"\x02\x00\x00\x00\x00\x01"),
        offer(msg="ack"),  # only OFFER answers a DISCOVER
        offer(op=1, msg="discover"),  # a request (ours, looped back)
        offer(dport=67),  # not to the client port
        offer(frag=1),  # a fragment
        offer()[:27],  # truncated
        bytes(IP(src="198.18.77.11") / UDP(sport=67, dport=68) / b"garbage"),
    ],
    ids=["xid", "chaddr", "ack", "request", "port", "fragment", "short", "garbage"],
)
def test_anything_else_is_not_an_answer(raw: bytes) -> None:
    assert parse_offer(raw, XID, MAC, SERVER_MAC) is None


def _root_or_skip() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (AF_PACKET sockets)")


def test_probe_of_a_missing_interface_says_so() -> None:
    _root_or_skip()
    with pytest.raises(ProbeUnavailable, match="no such interface"):
        probe("imp-nonexistent0", wait=0.1)


async def test_full_mode_without_an_interface_refuses_unless_on_loopback() -> None:
    assert await probe_segment(None, "127.0.0.1") is None
    with pytest.raises(ConfigError, match=r"dhcp\.interface.*--no-dhcp-probe"):
        await probe_segment(None, "0.0.0.0")


def test_probe_without_cap_net_raw_refuses_naming_the_capability() -> None:
    """Run as root but with CAP_NET_RAW removed from the bounding set: the probe says why."""
    _root_or_skip()
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("setpriv (util-linux) not installed")
    code = (
        "import asyncio\n"
        "from server.config import ConfigError\n"
        "from server.dhcp.probe import probe_segment\n"
        "try:\n"
        "    asyncio.run(probe_segment('lo', '0.0.0.0', wait=0.2))\n"
        "except ConfigError as e:\n"
        "    print(e)\n"
        "    raise SystemExit(2)\n"
    )
    done = subprocess.run(
        [setpriv, "--bounding-set=-net_raw", "--inh-caps=-net_raw", sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[3],
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "CAP_NET_RAW" in done.stdout and "--no-dhcp-probe" in done.stdout
