"""The emulated device's mDNS / DNS-SD browser: PTR, then SRV/TXT/A, over UDP sockets.

Two ways to ask (RFC 6762): legacy unicast from an ephemeral port (§6.7; the responder answers
by unicast to that port), or a QU query from port 5353 (§5.4) after joining 224.0.0.251 on an
interface. In the loopback lab both go to a given address:port instead of the group.
Imports nothing from server/.
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
import socket
import struct
from dataclasses import dataclass, field
from typing import Any

from device_emulator.mdns_codec import (
    DEFAULT_SERVICE,
    MDNS_GROUP,
    MDNS_PORT,
    PTR,
    MdnsDecodeError,
    Name,
    RecordSet,
    ServiceInfo,
    build_query,
    legacy_problems,
    name_text,
    parse_response,
    reject_reason,
    to_name,
)
from device_emulator.provisioning import NoAnswer, ProvisioningInfo
from device_emulator.udp import SocketReceiver, bound_udp_socket

__all__ = [
    "DEFAULT_SERVICE",
    "MdnsResult",
    "MdnsTransport",
    "NoAnswer",
    "ServiceInfo",
    "discover_mdns",
    "query_service",
]

_SO_BINDTODEVICE = getattr(socket, "SO_BINDTODEVICE", 25)


def _mreqn(group: str, ifindex: int) -> bytes:
    """struct ip_mreqn: group, local address (any), interface index."""
    return socket.inet_aton(group) + socket.inet_aton("0.0.0.0") + struct.pack("@i", ifindex)


class MdnsTransport(SocketReceiver[tuple[bytes, tuple[str, int]]]):
    """One UDP socket for one browse; `recv(wait)` returns a datagram and its source.

    `qu=False`: legacy unicast, bound to `client_port` (0: ephemeral). `qu=True`: bound to
    `client_port` (default 5353, shared with any local responder via SO_REUSEPORT) and, when
    asking the group, joined to 224.0.0.251 on `iface` so multicast answers arrive too.
    """

    def __init__(
        self,
        *,
        qu: bool = False,
        server: tuple[str, int] | None = None,
        iface: str | None = None,
        client_port: int | None = None,
    ) -> None:
        self.qu = qu
        self.server = server
        self.destination = server or (MDNS_GROUP, MDNS_PORT)
        port = (MDNS_PORT if client_port is None else client_port) if qu else (client_port or 0)
        multicast = ipaddress.IPv4Address(self.destination[0]).is_multicast
        ifindex = socket.if_nametoindex(iface) if iface else 0

        def configure(sock: socket.socket) -> None:
            if qu:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if iface:
                sock.setsockopt(socket.SOL_SOCKET, _SO_BINDTODEVICE, iface.encode())
            if multicast:
                # RFC 6762 §11: mDNS packets go out with IP TTL 255.
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 255)
                if ifindex:
                    sock.setsockopt(
                        socket.IPPROTO_IP, socket.IP_MULTICAST_IF, _mreqn(MDNS_GROUP, ifindex)
                    )
                if qu:  # closing the socket leaves the group
                    sock.setsockopt(
                        socket.IPPROTO_IP,
                        socket.IP_ADD_MEMBERSHIP,
                        _mreqn(self.destination[0], ifindex),
                    )

        super().__init__(bound_udp_socket(("0.0.0.0", port), configure=configure), size=9000)
        self.local_address: tuple[str, int] = self._sock.getsockname()

    async def send(self, payload: bytes) -> None:
        """Send one query to the group (or the lab responder)."""
        await asyncio.get_running_loop().sock_sendto(self._sock, payload, self.destination)

    async def _receive(self) -> tuple[bytes, tuple[str, int]]:
        return await self._datagram()


@dataclass(frozen=True, slots=True)
class MdnsResult:
    """What a browse produced."""

    service: str
    services: tuple[ServiceInfo, ...]
    sent: int
    ignored: int
    responders: tuple[str, ...]  # address:port of every accepted response
    problems: tuple[str, ...] = field(default=())

    @property
    def provisioning(self) -> ProvisioningInfo:
        """The first resolved instance as ProvisioningInfo."""
        return self.services[0].provisioning()

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready form."""
        return {
            "service": self.service,
            "services": [s.as_dict() for s in self.services],
            "sent": self.sent,
            "ignored": self.ignored,
            "responders": list(self.responders),
            "provisioning": self.provisioning.as_dict(),
            "problems": list(self.problems),
        }


async def query_service(
    transport: MdnsTransport,
    *,
    service: str = DEFAULT_SERVICE,
    time_limit: float = 3.0,
    retry_initial: float = 1.0,
    retry_cap: float = 8.0,
    rng: random.Random | None = None,
) -> MdnsResult:
    """Browse `service` and resolve its instances within `time_limit`; raise NoAnswer when no
    instance could be resolved completely (PTR -> SRV + TXT -> address).

    Missing SRV/TXT/A records are asked for at once in a follow-up query (RFC 6763 §12 lets a
    responder put them in the additional section; it need not). Retransmissions wait 1 s, then
    double (RFC 6762 §5.2), capped at `retry_cap`.
    """
    if time_limit <= 0:
        raise ValueError("time_limit must be positive")
    rng = rng or random.SystemRandom()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + time_limit
    records = RecordSet()
    questions: list[tuple[str | Name, int]] = [(to_name(service), PTR)]
    legacy = not transport.qu
    asked: dict[int, list[tuple[str | Name, int]]] = {}  # query id -> its questions
    query_id = 0
    sent = ignored = 0
    responders: list[str] = []
    problems: list[str] = []
    attempt = 0
    fresh = True
    while (now := loop.time()) < deadline:
        if fresh:
            # §18.1: multicast (QU/QM) queries carry ID 0; legacy unicast needs its own ID.
            query_id = rng.randrange(1, 0x10000) if legacy else 0
            asked[query_id] = questions
            fresh = False
        await transport.send(build_query(questions, query_id=query_id, qu=transport.qu))
        sent += 1
        wait_until = min(
            now + min(retry_initial * float(1 << min(attempt, 30)), retry_cap), deadline
        )
        attempt += 1
        while (remaining := wait_until - loop.time()) > 0:
            got = await transport.recv(remaining)
            if got is None:
                break
            data, source = got
            try:
                response = parse_response(data)
            except MdnsDecodeError:
                ignored += 1
                continue
            if reject_reason(
                response,
                source,
                expected_source=transport.server,
                query_ids=set(asked) if legacy else None,
            ):
                ignored += 1
                continue
            responders.append(f"{source[0]}:{source[1]}")
            if legacy:
                problems += legacy_problems(response, asked[response.query_id])
            records.add(response)
            resolved = records.services(service)
            if resolved:
                return MdnsResult(
                    service=service,
                    services=tuple(resolved),
                    sent=sent,
                    ignored=ignored,
                    responders=tuple(dict.fromkeys(responders)),
                    problems=tuple(dict.fromkeys(problems)),
                )
            missing: list[tuple[str | Name, int]] = list(records.missing(service))
            if missing != questions:
                questions = missing
                attempt = 0
                fresh = True
                break  # ask for what is missing now
    seen = records.instances(service)
    what = (
        f"instances {', '.join(name_text(i) for i in seen)} were not fully resolved"
        if seen
        else "no answer"
    )
    raise NoAnswer(
        f"mDNS browse for {service}: {what} after "
        f"{sent} {'query' if sent == 1 else 'queries'} in {time_limit} s"
    )


async def discover_mdns(
    transport: MdnsTransport, *, service: str = DEFAULT_SERVICE, time_limit: float = 3.0
) -> ProvisioningInfo:
    """What a booting device learns by DNS-SD; raises NoAnswer when nobody answered (an
    unregistered MAC gets silence)."""
    result = await query_service(transport, service=service, time_limit=time_limit)
    return result.provisioning
