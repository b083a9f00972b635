"""LOOPBACK SOCKET TESTS. The peer here is a test-local UDP socket that answers with bytes
built by scapy/dnslib in this file: it is NOT Imprint. These tests prove only the clients'
socket handling, xid/ID matching, retransmission and exit codes. The end-to-end tests against
the real server live in tests/e2e/."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, cast

import pytest
from dnslib import PTR, QTYPE, RR, SRV, TXT, A, DNSHeader, DNSLabel, DNSRecord
from scapy.layers.dhcp import BOOTP, DHCP

from device_emulator.__main__ import main
from device_emulator.dhcp_client import (
    DeviceIdentity,
    NoAnswer,
    RetryPolicy,
    UdpTransport,
    discover_dhcp,
    discover_request,
    inform,
)
from device_emulator.mdns_client import MdnsTransport, discover_mdns, query_service

MAC = "02:00:5e:00:01:01"
FAST = RetryPolicy(initial=0.05, cap=0.2, jitter=0.0)
MS_UC_43 = (
    b"\x01\x0cMS-UC-Client\x02\x05https\x03\x13imprint.example.com\x04\x03443\x05\x0d/provisioning"
)
SERVICE = "_imprint._tcp.local"
INSTANCE = (b"Imprint", b"_imprint", b"_tcp", b"local")

Handler = Callable[[bytes, int], list[bytes]]


class Peer(asyncio.DatagramProtocol):
    """Test-local UDP peer: records what arrives, answers with `handler(data, n)`."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.received: list[bytes] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # 3.11's selector datagram transport does not subclass DatagramTransport: cast.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received.append(data)
        assert self.transport is not None
        for reply in self.handler(data, len(self.received)):
            self.transport.sendto(reply, addr)


async def start_peer(handler: Handler) -> tuple[Peer, tuple[str, int]]:
    loop = asyncio.get_running_loop()
    transport, peer = await loop.create_datagram_endpoint(
        lambda: Peer(handler), local_addr=("127.0.0.1", 0)
    )
    return peer, transport.get_extra_info("sockname")


def dhcp_reply(
    request: bytes,
    kind: str,
    *,
    yiaddr: str = "0.0.0.0",
    server: str = "127.0.0.1",
    options: list[Any] | None = None,
    xid: int | None = None,
) -> bytes:
    """A reply built with scapy from the request as scapy reads it."""
    req = BOOTP(request)
    return bytes(
        BOOTP(
            op=2,
            xid=req.xid if xid is None else xid,
            ciaddr=req.ciaddr,
            yiaddr=yiaddr,
            chaddr=req.chaddr,
            flags=req.flags,
        )
        / DHCP(options=[("message-type", kind), ("server_id", server), *(options or []), "end"])
    )


def dhcp_options(request: bytes) -> dict[str, Any]:
    """Options as scapy's dissector names them."""
    return {o[0]: o[1] for o in BOOTP(request)[DHCP].options if isinstance(o, tuple)}


def msg_type(request: bytes) -> int:
    return int(dhcp_options(request)["message-type"])


IDENTITY = DeviceIdentity(mac=MAC, vendor_class="MS-UC-Client")


async def test_inform_retransmits_and_skips_garbage_and_foreign_xids() -> None:
    def handler(data: bytes, n: int) -> list[bytes]:
        if n == 1:
            return []  # first INFORM lost
        good = dhcp_reply(data, "ack", options=[(43, MS_UC_43)])
        return [b"\x00garbage", dhcp_reply(data, "ack", xid=BOOTP(data).xid ^ 1), good]

    peer, addr = await start_peer(handler)
    transport = UdpTransport(addr, client_port=0, bind_address="127.0.0.1")
    try:
        result = await inform(IDENTITY, transport, ciaddr="127.0.0.1", time_limit=5.0, retry=FAST)
    finally:
        transport.close()
        assert peer.transport is not None
        peer.transport.close()
    assert len(peer.received) == 2
    assert BOOTP(peer.received[0]).xid == BOOTP(peer.received[1]).xid == result.xid
    assert result.sent == 2 and result.ignored == 2
    assert result.message_type == "ACK" and result.server_id == "127.0.0.1"
    assert result.provisioning.url == "https://imprint.example.com:443/provisioning"
    assert result.options[43] == MS_UC_43
    assert result.problems == ()


async def test_inform_ack_with_lease_time_is_reported() -> None:
    def handler(data: bytes, n: int) -> list[bytes]:
        return [dhcp_reply(data, "ack", options=[("lease_time", 3600), (43, MS_UC_43)])]

    peer, addr = await start_peer(handler)
    transport = UdpTransport(addr, client_port=0, bind_address="127.0.0.1")
    try:
        result = await inform(IDENTITY, transport, ciaddr="127.0.0.1", time_limit=5.0, retry=FAST)
    finally:
        transport.close()
        assert peer.transport is not None
        peer.transport.close()
    assert any("option 51" in p for p in result.problems)


async def test_silence_raises_no_answer_after_bounded_retries() -> None:
    peer, addr = await start_peer(lambda data, n: [])
    transport = UdpTransport(addr, client_port=0, bind_address="127.0.0.1")
    try:
        with pytest.raises(NoAnswer, match="DHCPACK"):
            await inform(IDENTITY, transport, ciaddr="127.0.0.1", time_limit=0.5, retry=FAST)
    finally:
        transport.close()
        assert peer.transport is not None
        peer.transport.close()
    # Backoff 0.05, 0.1, 0.2, 0.2 ... within 0.5 s: more than one, bounded by the time limit.
    assert 2 <= len(peer.received) <= 10


async def test_discover_proxy_offer_then_request_with_54_only() -> None:
    def handler(data: bytes, n: int) -> list[bytes]:
        if msg_type(data) == 1:
            return [dhcp_reply(data, "offer", options=[(160, b"https://imprint.example.com/p/")])]
        return [dhcp_reply(data, "ack")]  # options-only ACK without the URL

    peer, addr = await start_peer(handler)
    transport = UdpTransport(addr, client_port=0, bind_address="127.0.0.1")
    identity = DeviceIdentity(mac=MAC, vendor_class="Polycom-VVX")
    try:
        result = await discover_request(identity, transport, time_limit=5.0, retry=FAST)
    finally:
        transport.close()
        assert peer.transport is not None
        peer.transport.close()
    discover, request = peer.received
    assert msg_type(discover) == 1 and msg_type(request) == 3
    assert BOOTP(discover).xid == BOOTP(request).xid == result.xid
    req_opts = dhcp_options(request)
    assert req_opts["server_id"] == "127.0.0.1"
    assert "requested_addr" not in req_opts
    assert BOOTP(request).ciaddr == "0.0.0.0"
    assert BOOTP(discover).flags == 0  # UDP lab transport: no broadcast flag by default
    assert result.message_type == "ACK" and result.yiaddr == "0.0.0.0"
    assert result.offer is not None and result.offer.message_type_name == "OFFER"
    assert result.provisioning.url == "https://imprint.example.com/p/"  # from the OFFER


async def test_discover_full_mode_requests_offered_address_and_reads_nak() -> None:
    def handler(data: bytes, n: int) -> list[bytes]:
        if msg_type(data) == 1:
            return [dhcp_reply(data, "offer", yiaddr="127.0.0.50", options=[(224, b"https://i/x")])]
        return [dhcp_reply(data, "nak")]

    peer, addr = await start_peer(handler)
    transport = UdpTransport(addr, client_port=0, bind_address="127.0.0.1")
    try:
        result = await discover_request(IDENTITY, transport, time_limit=5.0, retry=FAST)
    finally:
        transport.close()
        assert peer.transport is not None
        peer.transport.close()
    assert dhcp_options(peer.received[1])["requested_addr"] == "127.0.0.50"
    assert result.message_type == "NAK"


async def test_discover_prefers_the_offer_that_carries_provisioning() -> None:
    def handler(data: bytes, n: int) -> list[bytes]:
        if msg_type(data) == 1:
            site = dhcp_reply(data, "offer", yiaddr="127.0.0.77", server="127.0.0.9")
            imprint = dhcp_reply(data, "offer", options=[(66, b"http://imprint.example.com/y/")])
            return [site, imprint]
        if dhcp_options(data)["server_id"] == "127.0.0.1":
            return [dhcp_reply(data, "ack", options=[(66, b"http://imprint.example.com/y/")])]
        return []

    peer, addr = await start_peer(handler)
    transport = UdpTransport(addr, client_port=0, bind_address="127.0.0.1")
    identity = DeviceIdentity(mac=MAC, vendor_class="yealink")
    try:
        result = await discover_request(
            identity, transport, time_limit=5.0, retry=FAST, offer_wait=2.0
        )
    finally:
        transport.close()
        assert peer.transport is not None
        peer.transport.close()
    assert len(result.offers) == 2
    assert result.server_id == "127.0.0.1" and result.message_type == "ACK"
    assert "requested_addr" not in dhcp_options(peer.received[1])
    assert result.provisioning.url == "http://imprint.example.com/y/"


async def test_proxy_offer_without_ack_keeps_offer_information() -> None:
    def handler(data: bytes, n: int) -> list[bytes]:
        if msg_type(data) == 1:
            return [dhcp_reply(data, "offer", options=[(114, b"http://imprint.example.com/o")])]
        return []

    peer, addr = await start_peer(handler)
    transport = UdpTransport(addr, client_port=0, bind_address="127.0.0.1")
    try:
        result = await discover_request(IDENTITY, transport, time_limit=0.6, retry=FAST)
    finally:
        transport.close()
        assert peer.transport is not None
        peer.transport.close()
    assert result.message_type == "OFFER"
    assert result.provisioning.url == "http://imprint.example.com/o"
    assert any("DHCPACK/DHCPNAK" in p for p in result.problems)


async def test_discover_dhcp_picks_inform_when_address_known() -> None:
    def handler(data: bytes, n: int) -> list[bytes]:
        assert msg_type(data) == 8
        return [dhcp_reply(data, "ack", options=[(43, MS_UC_43)])]

    peer, addr = await start_peer(handler)
    transport = UdpTransport(addr, client_port=0, bind_address="127.0.0.1")
    try:
        info = await discover_dhcp(IDENTITY, transport, ciaddr="127.0.0.1", retry=FAST)
    finally:
        transport.close()
        assert peer.transport is not None
        peer.transport.close()
    assert info.host == "imprint.example.com" and info.source == "dhcp"


def dns_sd(query: bytes, *, full: bool) -> bytes:
    """Answer a query with dnslib: PTR only, or whatever of SRV/TXT/A/PTR was asked."""
    q = DNSRecord.parse(query)
    reply = DNSRecord(DNSHeader(id=q.header.id, qr=1, aa=1, rd=0))
    for question in q.questions:
        reply.add_question(question)
        qtype = question.qtype
        if qtype == QTYPE.PTR:
            reply.add_answer(RR(SERVICE, QTYPE.PTR, ttl=10, rdata=PTR(DNSLabel(INSTANCE))))
        elif qtype == QTYPE.SRV and full:
            reply.add_answer(
                RR(DNSLabel(INSTANCE), QTYPE.SRV, ttl=10, rdata=SRV(0, 0, 8443, "imprint.local"))
            )
        elif qtype == QTYPE.TXT and full:
            reply.add_answer(
                RR(DNSLabel(INSTANCE), QTYPE.TXT, ttl=10, rdata=TXT([b"txtvers=1", b"path=/e"]))
            )
        elif qtype == QTYPE.A and full:
            reply.add_answer(RR("imprint.local", QTYPE.A, ttl=10, rdata=A("127.0.0.1")))
    return bytes(reply.pack())


async def test_mdns_legacy_follows_up_for_srv_txt_a() -> None:
    def handler(data: bytes, n: int) -> list[bytes]:
        return [dns_sd(data, full=n > 1)]

    peer, addr = await start_peer(handler)
    transport = MdnsTransport(server=addr)
    try:
        result = await query_service(transport, time_limit=5.0, retry_initial=0.05)
    finally:
        transport.close()
        assert peer.transport is not None
        peer.transport.close()
    first, second, third = (DNSRecord.parse(d) for d in peer.received)
    assert first.header.id != 0 and [q.qtype for q in first.questions] == [QTYPE.PTR]
    assert [q.qtype for q in second.questions] == [QTYPE.SRV, QTYPE.TXT]
    assert [q.qtype for q in third.questions] == [QTYPE.A]
    assert len({first.header.id, second.header.id, third.header.id}) == 3
    (service,) = result.services
    assert service.url == "https://127.0.0.1:8443/e" and service.port == 8443
    assert result.provisioning.path == "/e"
    assert result.problems == ()


async def test_mdns_qu_query_in_lab_mode_has_id_0_and_qu_bit() -> None:
    peer, addr = await start_peer(lambda data, n: [dns_sd(data, full=True)])
    transport = MdnsTransport(qu=True, server=addr, client_port=0)
    try:
        info = await discover_mdns(transport, time_limit=5.0)
    finally:
        transport.close()
        assert peer.transport is not None
        peer.transport.close()
    query = DNSRecord.parse(peer.received[0])
    assert query.header.id == 0 and query.questions[0].qclass == 0x8001
    assert info.source == "mdns" and info.port == 8443


async def test_mdns_reply_with_wrong_id_or_source_is_ignored() -> None:
    def wrong_id(data: bytes, n: int) -> list[bytes]:
        reply = bytearray(dns_sd(data, full=True))
        reply[0:2] = (int.from_bytes(reply[0:2], "big") ^ 0x5A5A).to_bytes(2, "big")
        return [bytes(reply)]

    peer, addr = await start_peer(wrong_id)
    transport = MdnsTransport(server=addr)
    try:
        with pytest.raises(NoAnswer, match="no answer"):
            await query_service(transport, time_limit=0.4, retry_initial=0.1)
    finally:
        transport.close()
        assert peer.transport is not None
        peer.transport.close()
    assert len(peer.received) >= 2  # retransmitted within the limit


@contextmanager
def threaded_peer(handler: Callable[[bytes], list[bytes]]) -> Iterator[int]:
    """A blocking UDP peer in a thread, for driving main() (which runs its own event loop)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.05)
    stop = threading.Event()

    def run() -> None:
        while not stop.is_set():
            try:
                data, source = sock.recvfrom(65535)
            except TimeoutError:
                continue
            for reply in handler(data):
                sock.sendto(reply, source)

    thread = threading.Thread(target=run)
    thread.start()
    try:
        yield sock.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        sock.close()


def test_cli_dhcp_inform_json_exit_0(capsys: pytest.CaptureFixture[str]) -> None:
    with threaded_peer(lambda d: [dhcp_reply(d, "ack", options=[(43, MS_UC_43)])]) as port:
        code = main(
            [
                "dhcp", "inform", "--server", f"127.0.0.1:{port}", "--client-port", "0",
                "--bind", "127.0.0.1", "--mac", MAC, "--address", "127.0.0.1",
                "--vendor-class", "MS-UC-Client", "--client-id", "auto",
                "--request-options", "1,3,43,120", "--timeout", "5", "--json",
            ]
        )  # fmt: skip
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["message_type"] == "ACK"
    assert out["provisioning"]["url"] == "https://imprint.example.com:443/provisioning"
    assert out["options"]["43"] == MS_UC_43.hex()


def test_cli_human_output_and_no_provisioning_is_exit_2(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with threaded_peer(lambda d: [dhcp_reply(d, "ack")]) as port:
        code = main(
            [
                "dhcp", "inform", "--server", f"127.0.0.1:{port}", "--client-port", "0",
                "--bind", "127.0.0.1", "--mac", MAC, "--address", "127.0.0.1", "--timeout", "5",
            ]
        )  # fmt: skip
    captured = capsys.readouterr()
    assert code == 2
    assert "DHCPACK from server 127.0.0.1" in captured.out
    assert "no provisioning information" in captured.err


def test_cli_timeout_is_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with threaded_peer(lambda d: []) as port:
        code = main(
            [
                "mdns", "--server", f"127.0.0.1:{port}", "--timeout", "0.3",
            ]
        )  # fmt: skip
    assert code == 2
    assert "no answer" in capsys.readouterr().err


def test_cli_mdns_exit_0(capsys: pytest.CaptureFixture[str]) -> None:
    with threaded_peer(lambda d: [dns_sd(d, full=True)]) as port:
        code = main(["mdns", "--server", f"127.0.0.1:{port}", "--timeout", "5"])
    assert code == 0
    out = capsys.readouterr().out
    assert "Imprint._imprint._tcp.local at imprint.local:8443" in out
    assert "https://127.0.0.1:8443/e" in out


@pytest.mark.parametrize(
    "argv",
    [
        ["dhcp", "inform", "--server", "127.0.0.1:1", "--address", "127.0.0.1"],  # no --mac
        ["dhcp", "inform", "--server", "127.0.0.1:1", "--mac", MAC],  # no --address
        ["dhcp", "inform", "--server", "127.0.0.1:1", "--mac", "zz", "--address", "1.1.1.1"],
        ["dhcp", "inform", "--server", "localhost", "--mac", MAC],
        ["dhcp", "discover", "--mac", MAC],  # neither --iface nor --server
        ["dhcp", "discover", "--server", "127.0.0.1:1", "--mac", MAC, "--request-options", "x"],
        ["mdns", "--timeout", "-1"],
        ["nonsense"],
    ],
)
def test_cli_usage_errors_exit_1(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own errors
        code = int(exc.code or 0)
    assert code == 1
    assert "error" in capsys.readouterr().err
