"""Fleet plumbing: the export CSV reader, percentiles, and the shared DHCP and mDNS sockets
over real loopback sockets. The peers here are test-local UDP sockets answering with bytes
built by scapy/dnslib in this file, NOT Imprint; the fleet against the real server is in
tests/e2e/test_provision_loopback.py."""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import AsyncIterator, Callable
from typing import cast

import pytest
from dnslib import PTR, QTYPE, RR, SRV, TXT, A, DNSHeader, DNSRecord
from scapy.layers.dhcp import BOOTP, DHCP

from device_emulator.dhcp_client import DeviceIdentity, RetryPolicy, inform
from device_emulator.fleet import (
    DhcpDemux,
    ExportError,
    SharedMdns,
    SharedUdpDhcp,
    device_address,
    percentile,
    read_export,
)
from device_emulator.mdns_client import query_service
from tests.helpers.proc import free_port

HEADER = "MAC ID,Location,Verification code,Code expires (UTC),State\r\n"
MS_UC_43 = b"\x01\x0cMS-UC-Client\x02\x05https\x03\x09127.0.0.1\x04\x048443\x05\x0a/provision"


def test_export_rows_with_a_code_are_read_and_the_others_counted() -> None:
    text = (
        "\ufeff"
        + HEADER
        + "02-00-5E-00-01-01,rack 1,TDRN-KGPK,2026-11-28T04:16:45Z,awaiting_activation\r\n"
        + "02:00:5e:00:01:02,rack 2,,,awaiting_activation\r\n"
        + "\r\n"
        + '02:00:5e:00:01:03,"rack 3, left",BCDF-GHJK,2026-11-28T04:16:45Z,awaiting_activation\r\n'
        + "02:00:5e:00:01:04,rack 4,,,awaiting_sign_in\r\n"
    )
    entries, skipped = read_export(text)
    assert [(e.mac, e.code, e.location) for e in entries] == [
        ("02:00:5e:00:01:01", "TDRN-KGPK", "rack 1"),
        ("02:00:5e:00:01:03", "BCDF-GHJK", "rack 3, left"),
    ]
    assert skipped == 2


def test_export_columns_are_found_by_name() -> None:
    entries, skipped = read_export("State,Verification code,MAC ID\nx,ABCD-EFGH,020000000001\n")
    assert [(e.mac, e.code) for e in entries] == [("02:00:00:00:00:01", "ABCD-EFGH")]
    assert skipped == 0


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("", "empty"),
        ("MAC ID,Location\n02:00:00:00:00:01,x\n", "'verification code'"),
        (HEADER + "not-a-mac,x,ABCD-EFGH,,\n", "line 2"),
        (HEADER + "02:00:00:00:00:01,,A,,\n02:00:00:00:00:01,,B,,\n", "appears twice"),
    ],
)
def test_export_errors_say_what_is_wrong(text: str, complaint: str) -> None:
    with pytest.raises(ExportError, match=complaint):
        read_export(text)


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    random.Random(1).shuffle(values)
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile([3.0], 99) == 3.0
    assert percentile([], 50) is None


def test_device_addresses_stay_in_loopback() -> None:
    assert device_address("127.1.0.0", 258) == "127.1.1.2"
    with pytest.raises(ValueError, match="leaves 127.0.0.0/8"):
        device_address("127.255.255.0", 1000)


# --- shared DHCP socket ----------------------------------------------------------------------


class DhcpPeer(asyncio.DatagramProtocol):
    """Answers each INFORM with a scapy-built ACK sent, as RFC 2131 §4.3.5 says, to ciaddr at
    the sender's port; before it, a reply with a foreign xid (must be counted, not delivered)."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.requests = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.requests += 1
        req = BOOTP(data)
        assert self.transport is not None

        def reply(xid: int) -> bytes:
            return bytes(
                BOOTP(op=2, xid=xid, ciaddr=req.ciaddr, chaddr=req.chaddr)
                / DHCP(
                    options=[
                        ("message-type", "ack"),
                        ("server_id", "127.0.0.1"),
                        (43, MS_UC_43),
                        "end",
                    ]
                )
            )

        destination = (req.ciaddr, addr[1])
        self.transport.sendto(reply(req.xid ^ 0xFFFFFFFF), destination)
        self.transport.sendto(reply(req.xid), destination)


@pytest.fixture
async def dhcp_peer() -> AsyncIterator[tuple[DhcpPeer, tuple[str, int]]]:
    loop = asyncio.get_running_loop()
    transport, peer = await loop.create_datagram_endpoint(DhcpPeer, local_addr=("127.0.0.1", 0))
    yield peer, transport.get_extra_info("sockname")
    transport.close()


async def test_one_dhcp_socket_serves_many_devices_by_xid(
    dhcp_peer: tuple[DhcpPeer, tuple[str, int]],
) -> None:
    peer, address = dhcp_peer
    shared = await SharedUdpDhcp.open(address, client_port=free_port(socket.SOCK_DGRAM))
    demux = DhcpDemux(shared)
    demux.start()
    macs = [f"02:00:5e:00:10:{i:02x}" for i in range(60)]

    async def device(i: int, mac: str) -> str:
        view = demux.view()
        try:
            # Every reply goes to the same ciaddr:port, as in the lab: only the xid tells them apart.
            result = await inform(
                DeviceIdentity(mac=mac, vendor_class="MS-UC-Client"),
                view,
                ciaddr="127.0.0.1",
                time_limit=5.0,
                retry=RetryPolicy(initial=1.0, jitter=0.0),
                rng=random.Random(i),
            )
        finally:
            view.close()
        assert result.provisioning.url == "https://127.0.0.1:8443/provision"
        return result.reply.chaddr[:6].hex(":")

    try:
        got = await asyncio.gather(*(device(i, mac) for i, mac in enumerate(macs)))
    finally:
        await demux.close()
    assert got == macs
    assert peer.requests >= len(macs)
    # Every foreign-xid reply was counted, none handed to a device (plus, under load, answers
    # to retransmissions that came after their device had finished).
    assert demux.unmatched >= peer.requests


async def test_two_views_cannot_claim_one_xid(
    dhcp_peer: tuple[DhcpPeer, tuple[str, int]],
) -> None:
    _, address = dhcp_peer
    demux = DhcpDemux(await SharedUdpDhcp.open(address, client_port=free_port(socket.SOCK_DGRAM)))
    demux.start()
    payload = bytes(BOOTP(op=1, xid=0x1234) / DHCP(options=[("message-type", "inform"), "end"]))
    first, second = demux.view(), demux.view()
    try:
        await first.send(payload)
        with pytest.raises(RuntimeError, match="already in use"):
            await second.send(payload)
        first.close()
        await second.send(payload)  # released by close
    finally:
        second.close()
        await demux.close()


# --- shared mDNS socket ----------------------------------------------------------------------

SERVICE = "_imprint._tcp.local."
INSTANCE = "Imprint._imprint._tcp.local."


class MdnsPeer(asyncio.DatagramProtocol):
    """A legacy-unicast DNS-SD responder: answers with a TXT path naming the querier's address,
    so each device can tell that the answer it got was meant for it."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.sources: list[str] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        query = DNSRecord.parse(data)
        self.sources.append(addr[0])
        reply = DNSRecord(DNSHeader(id=query.header.id, qr=1, aa=1), q=query.q)
        reply.add_answer(RR(SERVICE, QTYPE.PTR, rdata=PTR(INSTANCE), ttl=10))
        reply.add_ar(RR(INSTANCE, QTYPE.SRV, rdata=SRV(0, 0, 8443, "imprint.local."), ttl=10))
        path = f"path=/provision/{addr[0]}".encode()
        reply.add_ar(RR(INSTANCE, QTYPE.TXT, rdata=TXT([b"txtvers=1", path]), ttl=10))
        reply.add_ar(RR("imprint.local.", QTYPE.A, rdata=A("127.0.0.1"), ttl=10))
        assert self.transport is not None
        self.transport.sendto(reply.pack(), addr)


async def test_one_mdns_socket_sends_from_each_devices_address() -> None:
    loop = asyncio.get_running_loop()
    transport, peer = await loop.create_datagram_endpoint(MdnsPeer, local_addr=("127.0.0.1", 0))
    shared = SharedMdns(transport.get_extra_info("sockname"))
    shared.start()
    addresses = [f"127.77.0.{i}" for i in range(1, 21)]

    async def browse(address: str) -> str | None:
        view = shared.view(address)
        try:
            result = await query_service(view, service="_imprint._tcp.local", time_limit=5.0)
        finally:
            view.close()
        return result.provisioning.path

    try:
        paths = await asyncio.gather(*(browse(a) for a in addresses))
    finally:
        shared.close()
        transport.close()
    assert paths == [f"/provision/{a}" for a in addresses]
    assert sorted(set(peer.sources)) == sorted(addresses)  # each query left from its address
    assert shared.unmatched == 0


async def test_late_mdns_answers_for_a_closed_view_are_counted() -> None:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(MdnsPeer, local_addr=("127.0.0.1", 0))
    shared = SharedMdns(transport.get_extra_info("sockname"))
    shared.start()
    view = shared.view("127.77.1.1")
    try:
        query = DNSRecord.question(SERVICE, "PTR")
        await view.send(query.pack())
        view.close()  # the device gave up before the answer came

        async def wait_for(predicate: Callable[[], bool]) -> None:
            for _ in range(200):
                if predicate():
                    return
                await asyncio.sleep(0.01)

        await wait_for(lambda: shared.unmatched > 0)
        assert shared.unmatched == 1
    finally:
        shared.close()
        transport.close()
