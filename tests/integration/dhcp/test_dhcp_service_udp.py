"""The DHCP transport over real UDP sockets on loopback, with packets built by scapy.

Replies to ciaddr go to ciaddr:client_port and replies to a relay go to giaddr:server_port, so
setting those two lab knobs to the test socket's port lets loopback stand in for the LAN.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from scapy.layers.dhcp import BOOTP, DHCP

from server.core.metrics import Registry
from server.dhcp.pool import subnet_from_mapping
from server.dhcp.responder import Mode
from server.dhcp.service import DhcpConfig, DhcpService
from server.dhcp.transport import DhcpServer, interface_address, start_dhcp
from server.registry.discovered import DiscoveredDevices
from server.registry.model import ProvisioningEndpoint
from tests.helpers.dhcp import GatedStore, counter, device_view, inform

MAC = "02:00:5e:00:01:01"
STRANGER = "02:00:5e:00:09:09"
EP = ProvisioningEndpoint("https", "imprint.example.net", 8443, "/provision", "cd" * 32)
WAIT = 5.0  # upper bound on any single wait; loopback answers in milliseconds


async def wait_until(cond: object, what: str) -> None:
    """Poll `cond()` every 10 ms for at most WAIT seconds."""
    assert callable(cond)
    for _ in range(int(WAIT / 0.01)):
        if cond():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


@asynccontextmanager
async def client_socket() -> AsyncIterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    try:
        yield sock
    finally:
        sock.close()


async def recv(sock: socket.socket, within: float = WAIT) -> bytes:
    loop = asyncio.get_running_loop()
    return await asyncio.wait_for(loop.sock_recv(sock, 4096), within)


async def send(sock: socket.socket, data: bytes, server: DhcpServer) -> None:
    await asyncio.get_running_loop().sock_sendto(sock, data, server.sockname)


async def test_inform_over_udp_gets_ack_and_unregistered_gets_nothing() -> None:
    reg = Registry()
    index = {MAC: device_view(MAC)}
    discovered = DiscoveredDevices()
    async with client_socket() as client:
        port = client.getsockname()[1]
        cfg = DhcpConfig(mode=Mode.INFORM, server_ip="127.0.0.1", endpoint=EP, client_port=port)
        server = await start_dhcp(DhcpService(cfg, index, reg, discovered), "127.0.0.1", 0)
        try:
            await send(client, inform(MAC, 0x11223344), server)
            reply = BOOTP(await recv(client))
            assert reply.op == 2 and reply.xid == 0x11223344
            assert reply.yiaddr == "0.0.0.0" and reply.ciaddr == "127.0.0.1"
            opts = {o[0]: o[1:] for o in reply[DHCP].options if isinstance(o, tuple)}
            assert opts["message-type"] == (5,)
            assert opts["server_id"] == ("127.0.0.1",)
            assert "lease_time" not in opts
            sub = opts["vendor_specific"][0]
            assert sub.startswith(
                b"\x01\x0cMS-UC-Client\x02\x05https\x03\x13imprint.example.net\x04\x048443"
            )
            assert opts[120] == (b"\x00\x07imprint\x07example\x03net\x00",)

            dropped = counter(reg, "imprint_dhcp_packets_dropped_total")
            await send(client, inform(STRANGER, 0x55667788), server)
            await wait_until(lambda: dropped.value("IMP_UNREGISTERED") == 1, "the drop counter")
            with pytest.raises(TimeoutError):
                await recv(client, within=0.3)
            seen = discovered.get(STRANGER)
            assert seen is not None and seen.vendor_class == "MS-UC-Client"
            assert seen.interface == "127.0.0.1"  # no interface given: the bound address

            # Registering the stranger takes effect on its very next packet.
            index[STRANGER] = device_view(STRANGER)
            await send(client, inform(STRANGER, 0x55667789), server)
            assert BOOTP(await recv(client)).xid == 0x55667789
            assert counter(reg, "imprint_dhcp_errors_total").total() == 0
        finally:
            await server.close()


async def test_garbage_datagrams_are_counted_and_the_server_keeps_answering() -> None:
    reg = Registry()
    async with client_socket() as client:
        port = client.getsockname()[1]
        cfg = DhcpConfig(mode=Mode.INFORM, server_ip="127.0.0.1", endpoint=EP, client_port=port)
        server = await start_dhcp(DhcpService(cfg, {MAC: device_view(MAC)}, reg), "127.0.0.1", 0)
        try:
            for junk in (b"", b"\x01", os.urandom(300), inform(MAC, 1)[:250]):
                await send(client, junk, server)
            await send(client, inform(MAC, 2), server)
            assert BOOTP(await recv(client)).xid == 2
            received = counter(reg, "imprint_dhcp_packets_received_total")
            await wait_until(lambda: received.value("malformed") == 4, "four malformed datagrams")
            assert counter(reg, "imprint_dhcp_errors_total").total() == 0
        finally:
            await server.close()


def relayed(msg_type: str, xid: int, mac: str = MAC, *extra: tuple[object, ...]) -> bytes:
    return bytes(
        BOOTP(op=1, xid=xid, hops=1, giaddr="127.0.0.1", chaddr=bytes.fromhex(mac.replace(":", "")))
        / DHCP(options=[("message-type", msg_type), *extra, "end"])
    )


async def test_full_mode_through_a_relay_and_load_shedding_when_the_queue_is_full() -> None:
    reg = Registry()
    store = GatedStore()
    subnet = subnet_from_mapping(
        {"subnet": "127.0.0.0/8", "pool": "127.0.0.100-127.0.0.200", "lease_time": 600}
    )
    async with client_socket() as relay:
        port = relay.getsockname()[1]
        cfg = DhcpConfig(
            mode=Mode.FULL, server_ip="127.0.0.1", endpoint=EP, subnets=(subnet,), server_port=port
        )
        service = DhcpService(cfg, {MAC: device_view(MAC)}, reg, None, store)
        server = await start_dhcp(service, "127.0.0.1", 0, queue_size=2, workers=1)
        try:
            await send(relay, relayed("discover", 1), server)
            offer = BOOTP(await recv(relay))
            assert offer.yiaddr == "127.0.0.100" and offer.giaddr == "127.0.0.1"

            request = relayed(
                "request", 2, MAC, ("server_id", "127.0.0.1"), ("requested_addr", "127.0.0.100")
            )
            await send(relay, request, server)
            await wait_until(lambda: store.waiting == 1, "the lease commit")
            # The only worker now waits on the store: two datagrams queue, the rest are shed.
            for xid in range(10, 15):
                await send(relay, relayed("discover", xid), server)
            dropped = counter(reg, "imprint_dhcp_packets_dropped_total")
            await wait_until(lambda: dropped.value("DHCP_QUEUE_FULL") == 3, "three shed datagrams")
            with pytest.raises(TimeoutError):
                await recv(relay, within=0.2)  # no ACK before the lease is stored
            store.gate.set()
            ack = BOOTP(await recv(relay))
            assert ack.xid == 2 and ack.yiaddr == "127.0.0.100"
            assert "127.0.0.100" in store.leases
            first, second = BOOTP(await recv(relay)), BOOTP(await recv(relay))
            assert sorted([first.xid, second.xid]) == [10, 11]
            assert counter(reg, "imprint_dhcp_errors_total").total() == 0
        finally:
            await server.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="SO_BINDTODEVICE needs root or CAP_NET_RAW")
async def test_bound_to_an_interface_still_answers() -> None:
    reg = Registry()
    async with client_socket() as client:
        port = client.getsockname()[1]
        cfg = DhcpConfig(mode=Mode.INFORM, server_ip="127.0.0.1", endpoint=EP, client_port=port)
        server = await start_dhcp(
            DhcpService(cfg, {MAC: device_view(MAC)}, reg), "127.0.0.1", 0, interface="lo"
        )
        try:
            assert server.interface == "lo"
            await send(client, inform(MAC, 77), server)
            assert BOOTP(await recv(client)).xid == 77
        finally:
            await server.close()


def test_interface_address_reads_the_kernels_ipv4_address() -> None:
    assert interface_address("lo") == "127.0.0.1"
    with pytest.raises(OSError):
        interface_address("no-such-if0")
