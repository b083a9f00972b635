"""Shedding on a real loopback socket: datagrams queue in the kernel while the event loop is
held (the test sends without yielding), then the transport reads the backlog and sheds by the
receive buffer's fill and each datagram's type before decoding it."""

from __future__ import annotations

import asyncio
import socket
import sys

import pytest

from server.core.metrics import Registry
from server.dhcp.overload import SHED_ALL_AT, SHED_NEW_AT
from server.dhcp.responder import Mode
from server.dhcp.service import DhcpConfig, DhcpService
from server.dhcp.transport import DhcpServer, start_dhcp
from server.registry.model import ProvisioningEndpoint
from tests.helpers.dhcp import counter, device_view, inform
from tests.helpers.fixtures import scapy_dhcp

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="SO_MEMINFO is Linux's")

MAC = "02:00:5e:00:0e:01"
EP = ProvisioningEndpoint("https", "imprint.example.net", 8443, "/provision", "cd" * 32)
WAIT = 5.0


async def started(reg: Registry, client_port: int) -> DhcpServer:
    cfg = DhcpConfig(mode=Mode.INFORM, server_ip="127.0.0.1", endpoint=EP, client_port=client_port)
    service = DhcpService(cfg, {MAC: device_view(MAC)}, reg)
    # A small buffer: a hundred or so datagrams fill it.
    return await start_dhcp(service, "127.0.0.1", 0, recv_buffer=64 << 10)


def fill_to(client: socket.socket, server: DhcpServer, data: bytes, fill: float) -> int:
    """Send `data` (blocking, no yield to the loop) until the server's queue is `fill` full."""
    sent = 0
    while server.queue_fill() < fill:
        client.sendto(data, server.sockname)
        sent += 1
        assert sent < 10_000, "the receive queue never filled"
    return sent


async def settle(reg: Registry, want: int) -> None:
    """Until `want` datagrams were either decoded or shed."""
    received = counter(reg, "imprint_dhcp_packets_received_total")
    shed = counter(reg, "imprint_dhcp_packets_shed_total")
    for _ in range(int(WAIT / 0.01)):
        if received.total() + shed.total() >= want:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"only {received.total()} decoded + {shed.total()} shed of {want}")


async def test_a_deep_queue_sheds_new_informs_and_keeps_requests() -> None:
    reg = Registry()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.bind(("127.0.0.1", 0))
        server = await started(reg, client.getsockname()[1])
        try:
            n_inform = fill_to(client, server, inform(MAC, 1), 0.7)
            for xid in range(5):
                client.sendto(scapy_dhcp("request", mac=MAC, xid=xid), server.sockname)
            assert server.queue_fill() < SHED_ALL_AT
            await settle(reg, n_inform + 5)
            shed = counter(reg, "imprint_dhcp_packets_shed_total")
            received = counter(reg, "imprint_dhcp_packets_received_total")
            assert shed.value("request") == 0 and received.value("request") == 5
            assert shed.value("inform") > 0
            assert shed.value("inform") + received.value("inform") == n_inform
            # Once the queue drained below the threshold the rest were answered as usual.
            assert received.value("inform") > 0
            assert counter(reg, "imprint_dhcp_packets_sent_total").value("ack") == received.value(
                "inform"
            )
            dropped = counter(reg, "imprint_dhcp_packets_dropped_total")
            assert dropped.value("DHCP_OVERLOAD") == shed.total()
            assert server.queue_fill() < SHED_NEW_AT
        finally:
            await server.close()


async def test_a_nearly_full_queue_sheds_requests_too() -> None:
    reg = Registry()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.bind(("127.0.0.1", 0))
        server = await started(reg, client.getsockname()[1])
        try:
            n = fill_to(client, server, scapy_dhcp("request", mac=MAC, xid=9), SHED_ALL_AT)
            await settle(reg, n)
            shed = counter(reg, "imprint_dhcp_packets_shed_total")
            assert shed.value("request") > 0
            assert (
                shed.value("request")
                + counter(reg, "imprint_dhcp_packets_received_total").value("request")
                == n
            )
        finally:
            await server.close()


async def test_a_shallow_queue_sheds_nothing() -> None:
    reg = Registry()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.bind(("127.0.0.1", 0))
        server = await started(reg, client.getsockname()[1])
        try:
            n = fill_to(client, server, inform(MAC, 2), SHED_NEW_AT / 2)
            await settle(reg, n)
            assert counter(reg, "imprint_dhcp_packets_shed_total").total() == 0
            assert counter(reg, "imprint_dhcp_packets_sent_total").value("ack") == n
        finally:
            await server.close()
