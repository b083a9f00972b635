"""DHCP test parts shared by the unit, integration and ops tests: a registered device's view,
an MS-UC-Client DHCPINFORM built by scapy (an encoder independent of ours), a metric lookup
and a lease store whose commits wait for the test."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Sequence
from typing import Any

from server.core.metrics import Counter, Registry
from server.dhcp.pool import Lease, MemoryLeaseStore
from server.registry.model import DeviceState, DeviceView


def device_view(mac: str, location: str = "desk") -> DeviceView:
    """A registered device awaiting activation in tenant acme."""
    return DeviceView(mac, "acme", "Acme", DeviceState.AWAITING_ACTIVATION, location)


def inform(mac: str, xid: int, ciaddr: str = "127.0.0.1") -> bytes:
    """A Teams-device DHCPINFORM asking for options 43 and 120."""
    from scapy.layers.dhcp import BOOTP, DHCP

    return bytes(
        BOOTP(op=1, xid=xid, ciaddr=ciaddr, chaddr=bytes.fromhex(mac.replace(":", "")))
        / DHCP(
            options=[
                ("message-type", "inform"),
                ("vendor_class_id", b"MS-UC-Client"),
                ("param_req_list", [1, 3, 6, 43, 120]),
                "end",
            ]
        )
    )


def counter(reg: Registry, name: str) -> Counter:
    m = reg.get(name)
    assert isinstance(m, Counter), f"{name} is not a registered counter"
    return m


class GatedStore(MemoryLeaseStore):
    """A real in-memory lease store whose commits wait until the test opens the gate; it
    counts the commits waiting and records each batch committed."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.waiting = 0
        self.batches: list[list[str]] = []

    async def save_leases(self, changes: Sequence[Lease]) -> None:
        self.waiting += 1
        await self.gate.wait()
        self.batches.append([c.ip for c in changes])
        await super().save_leases(changes)


def relayed_dora(
    relay: socket.socket,
    server: tuple[str, int],
    mac: str,
    *,
    vendor_class: bytes = b"MS-UC-Client",
    server_id: str = "127.0.0.1",
    timeout: float = 10.0,
) -> str:
    """DISCOVER, OFFER, REQUEST, ACK through a relay on loopback (giaddr 127.0.0.1): `relay` is
    a bound UDP socket whose port is the server's `[dhcp] server_port`, so replies come back
    to it. Blocking (run it in a thread beside an in-process server); returns the leased IP."""
    from scapy.layers.dhcp import BOOTP, DHCP

    chaddr = bytes.fromhex(mac.replace(":", ""))

    def ask(xid: int, *options: object) -> Any:
        packet = BOOTP(op=1, xid=xid, hops=1, giaddr="127.0.0.1", chaddr=chaddr) / DHCP(
            options=[*options, ("vendor_class_id", vendor_class), "end"]
        )
        relay.sendto(bytes(packet), server)
        relay.settimeout(timeout)
        while True:
            reply = BOOTP(relay.recv(4096))
            if reply.xid == xid:
                return reply

    offer = ask(0x1EA5E001, ("message-type", "discover"))
    ip = str(offer.yiaddr)
    ack = ask(
        0x1EA5E002,
        ("message-type", "request"),
        ("server_id", server_id),
        ("requested_addr", ip),
    )
    types = {o[0]: o[1] for o in ack[DHCP].options if isinstance(o, tuple)}
    assert types["message-type"] == 5, f"no DHCPACK for {mac}: {ack.summary()}"
    return ip
