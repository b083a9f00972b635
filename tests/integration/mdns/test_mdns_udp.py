"""The real mDNS transport on loopback (lab mode): dnslib-built queries over real UDP sockets.

Lab mode: interface "lo", on-link networks 127.0.0.0/8, and `static_neighbours` mapping
127.0.0.1 to a registered MAC and 127.0.0.2 to an unregistered one.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable, Iterator

import dnslib
import pytest

from server.core.metrics import Registry
from server.mdns.neighbours import NeighbourResolver, interface_networks
from server.mdns.records import build_records
from server.mdns.service import MdnsService
from server.mdns.transport import MDNS_GROUP, MdnsServer, start_mdns
from server.registry.model import DeviceState, DeviceView, ProvisioningEndpoint

REGISTERED = "02:00:5e:00:01:01"
UNREGISTERED = "02:00:5e:00:01:02"
WAIT = 2.0  # seconds: upper bound for an answer that must come
SILENCE = 0.5  # seconds: how long we listen for an answer that must not come

MakeSocket = Callable[..., socket.socket]


@pytest.fixture
async def server() -> AsyncIterator[MdnsServer]:
    service = MdnsService(
        build_records(
            ProvisioningEndpoint("https", "imprint.local", 8443, "/provision", "ab" * 32),
            hostname="imprint",
            addresses=["127.0.0.1"],
        ),
        {REGISTERED: DeviceView(REGISTERED, "acme", "Acme", DeviceState.SIGNED_IN, "lab")},
        networks=interface_networks("lo"),
        neighbours=NeighbourResolver(
            static={"127.0.0.1": REGISTERED, "127.0.0.2": UNREGISTERED, "127.0.0.3": REGISTERED}
        ),
        metrics=Registry(),
    )
    srv = await start_mdns(service, host="0.0.0.0", port=0, interface="lo")
    try:
        yield srv
    finally:
        srv.close(goodbye=False)
        await asyncio.wait_for(srv.wait_closed(), WAIT)


@pytest.fixture
def client() -> Iterator[MakeSocket]:
    socks: list[socket.socket] = []

    def make(ip: str, port: int = 0) -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.setblocking(False)
        s.bind((ip, port))
        socks.append(s)
        return s

    yield make
    for s in socks:
        s.close()


async def recv(sock: socket.socket, within: float) -> tuple[bytes, tuple[str, int]] | None:
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(within):
            data, addr = await loop.sock_recvfrom(sock, 9000)
    except TimeoutError:
        return None
    return data, addr


def counter(srv: MdnsServer, name: str, *labels: str) -> float:
    metric = srv.service.decisions if name == "decisions" else srv.service.dropped
    return metric.value(*labels)


async def test_legacy_unicast_query_gets_ptr_srv_txt_a_with_id_echoed(
    server: MdnsServer, client: MakeSocket
) -> None:
    sock = client("127.0.0.1")
    query = dnslib.DNSRecord(dnslib.DNSHeader(id=0x5A5A, bitmap=0))
    query.add_question(dnslib.DNSQuestion("_imprint._tcp.local.", 12, 1))
    sock.sendto(query.pack(), ("127.0.0.1", server.address[1]))
    got = await recv(sock, WAIT)
    assert got is not None, "no answer from the mDNS transport"
    data, addr = got
    assert addr[1] == server.address[1]
    reply = dnslib.DNSRecord.parse(data)
    assert reply.header.id == 0x5A5A and reply.header.qr == 1
    assert str(reply.q.qname) == "_imprint._tcp.local."
    records = [*reply.rr, *reply.ar]
    assert {rr.rtype for rr in records} == {12, 33, 16, 1}
    assert str(reply.rr[0].rdata) == "Imprint._imprint._tcp.local."
    assert all(rr.ttl <= 10 for rr in records)
    srv = next(rr for rr in records if rr.rtype == 33)
    assert srv.rdata.port == 8443


async def test_unregistered_neighbour_gets_nothing(server: MdnsServer, client: MakeSocket) -> None:
    sock = client("127.0.0.2")
    query = dnslib.DNSRecord.question("_imprint._tcp.local.", "PTR")
    sock.sendto(query.pack(), ("127.0.0.1", server.address[1]))
    assert await recv(sock, SILENCE) is None
    # The query did arrive and was refused by policy (not lost on the way):
    assert counter(server, "decisions", "ignore", "IMP_UNREGISTERED") == 1


async def test_garbage_does_not_stop_the_responder(server: MdnsServer, client: MakeSocket) -> None:
    sock = client("127.0.0.1")
    dest = ("127.0.0.1", server.address[1])
    sock.sendto(b"\x00" * 12, dest)  # no question at all
    sock.sendto(bytes(4) + b"\x00\x01" + bytes(6) + b"\xc0\x0c\x00\x0c\x00\x01", dest)
    sock.sendto(b"", dest)
    sock.sendto(dnslib.DNSRecord.question("_imprint._tcp.local.", "PTR").pack(), dest)
    got = await recv(sock, WAIT)
    assert got is not None
    assert counter(server, "dropped", "MDNS_POINTER_LOOP") == 1
    assert counter(server, "dropped", "MDNS_TRUNCATED") == 1
    assert counter(server, "dropped", "MDNS_NO_QUESTION") == 1


async def test_query_to_the_multicast_group_on_lo_is_answered_by_unicast(
    server: MdnsServer, client: MakeSocket
) -> None:
    sock = client("127.0.0.1")
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("127.0.0.1"))
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
    query = dnslib.DNSRecord(dnslib.DNSHeader(id=0x0101, bitmap=0))
    query.add_question(dnslib.DNSQuestion("Imprint._imprint._tcp.local.", 33, 1))
    sock.sendto(query.pack(), (MDNS_GROUP, server.address[1]))
    got = await recv(sock, WAIT)
    assert got is not None, "the group membership on lo did not deliver the query"
    reply = dnslib.DNSRecord.parse(got[0])
    assert reply.header.id == 0x0101 and reply.rr[0].rtype == 33


async def test_close_sends_goodbye_by_unicast_to_a_recent_qu_querier(
    server: MdnsServer, client: MakeSocket
) -> None:
    try:
        sock = client("127.0.0.3", 5353)
    except OSError as e:
        pytest.skip(f"cannot bind 127.0.0.3:5353 for a non-legacy querier: {e}")
    query = dnslib.DNSRecord(dnslib.DNSHeader(id=0, bitmap=0))
    query.add_question(dnslib.DNSQuestion("_imprint._tcp.local.", 12, 0x8001))  # QU
    sock.sendto(query.pack(), ("127.0.0.1", server.address[1]))
    got = await recv(sock, WAIT)
    assert got is not None
    first = dnslib.DNSRecord.parse(got[0])
    assert first.rr[0].ttl == 4500 and first.rr[0].rclass == 1
    server.close()  # goodbye=True
    bye = await recv(sock, WAIT)
    assert bye is not None, "no goodbye packet"
    goodbye = dnslib.DNSRecord.parse(bye[0])
    assert {rr.rtype for rr in goodbye.rr} == {12, 33, 16}
    assert all(rr.ttl == 0 for rr in goodbye.rr)
