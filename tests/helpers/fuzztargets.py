"""Every decoder of untrusted bytes or text, as a fuzz target: the call, the errors it may raise,
seed inputs (the captures under tests/fixtures and messages our own encoders make) and
dictionary tokens (pieces of its format a mutator should insert whole).

Shared by bench/reliability/fuzz.py (atheris or its mutation engine, a million inputs per
target) and the CI-sized hypothesis tests, so both fuzz the same calls with the same seeds.
A target takes bytes; the text decoders get them as UTF-8 with `surrogateescape`, so lone
surrogates (which JSON's \\ud800 escapes can deliver) are among their inputs.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from unittest import mock

from aiohttp import web
from aiohttp.multipart import BadContentDispositionHeader, BadContentDispositionParam
from aiohttp.streams import StreamReader
from aiohttp.test_utils import make_mocked_request

from server.core.mac import MacError, normalize_mac
from server.dhcp.codec import DecodeError as DhcpDecodeError
from server.dhcp.codec import DhcpMessage, decode, encode
from server.dhcp.probe import discover_datagram, ipv4_udp, parse_offer
from server.mdns.codec import DecodeError as MdnsDecodeError
from server.mdns.codec import (
    QueryDecoder,
    decode_query,
    decode_records,
    encode_probe,
    encode_response,
)
from server.mdns.frames import MDNS_PORT, FrameError, parse_frame
from server.mdns.netlink import (
    NLMSG_DONE,
    NLMSG_ERROR,
    RTM_NEWNEIGH,
    NetlinkError,
    parse_neigh_dump,
)
from server.mdns.records import build_records
from server.registry.csvio import TEMPLATE, CsvError, parse_upload
from server.registry.model import (
    CursorError,
    ProvisioningEndpoint,
    decode_cursor,
    encode_cursor,
    parse_iso,
)
from server.web.routes import BodyError, parse_json, read_form
from tests.helpers.fixtures import load_hex_fixture


@dataclass(frozen=True)
class Target:
    name: str
    call: Callable[[bytes], object]
    allowed: tuple[type[BaseException], ...]  # the documented errors; anything else is a crash
    seeds: Callable[[], list[bytes]]
    max_len: int
    tokens: tuple[bytes, ...] = ()


def _text(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


# --- seeds -------------------------------------------------------------------------------------

DHCP_FIXTURES = (
    "dhcp/dhcpcd-inform-ms-uc-client.hex",
    "dhcp/dhcpcd-discover.hex",
    "dhcp/udhcpc-discover-yealink.hex",
    "dhcp/perfdhcp-relayed-discover.hex",
)
MDNS_FIXTURES = ("mdns/dig-legacy-unicast-ptr.hex", "mdns/zeroconf-browse-ptr.hex")
ENDPOINT = ProvisioningEndpoint("https", "imprint.local", 8443, "/provision", "ab" * 32)
PROBE_XID = 0x5EED
PROBE_MAC = bytes.fromhex("02005e0001fe")
SERVER_MAC = bytes.fromhex("02005e000101")


def dhcp_seeds() -> list[bytes]:
    return [data for name in DHCP_FIXTURES for _src, data in load_hex_fixture(name)]


def mdns_query_seeds() -> list[bytes]:
    out = [data for name in MDNS_FIXTURES for _src, data in load_hex_fixture(name)]
    records = build_records(
        ENDPOINT, hostname="imprint", addresses=["198.18.77.1", "fd00::1"], service="_imprint._tcp"
    )
    out.append(encode_probe(["imprint.local.", "Imprint._imprint._tcp.local."], [], qu=True))
    # A query carrying known answers (the answer section of a query, RFC 6762 §7.1).
    response = encode_response(records.service_set)
    out.append(response[:2] + b"\x00\x00" + response[4:])
    return out


def mdns_record_seeds() -> list[bytes]:
    records = build_records(
        ENDPOINT, hostname="imprint", addresses=["198.18.77.1", "fd00::1"], service="_imprint._tcp"
    )
    return [
        *mdns_query_seeds(),
        encode_response(records.service_set),
        encode_response(records.records, legacy=True, msg_id=0x1234),
        encode_probe(["imprint.local."], list(records.records), qu=False),
    ]


def _udp(payload: bytes, dport: int = MDNS_PORT) -> bytes:
    return struct.pack("!HHHH", MDNS_PORT, dport, 8 + len(payload), 0) + payload


def _eth(ethertype: int, body: bytes, vlan: int | None = None) -> bytes:
    head = bytes.fromhex("01005e0000fb") + SERVER_MAC
    if vlan is not None:
        head += struct.pack("!HH", 0x8100, vlan)
    return head + struct.pack("!H", ethertype) + body


def frame_seeds() -> list[bytes]:
    out: list[bytes] = []
    for query in mdns_query_seeds()[:3]:
        udp = _udp(query)
        ip4 = struct.pack(
            "!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0x4000, 255, 17, 0,
            socket.inet_aton("198.18.77.11"), socket.inet_aton("224.0.0.251"),
        )  # fmt: skip
        ip6 = struct.pack(
            "!IHBB16s16s", 6 << 28, len(udp), 17, 255,
            socket.inet_pton(socket.AF_INET6, "fe80::ff:fe00:10b"),
            socket.inet_pton(socket.AF_INET6, "ff02::fb"),
        )  # fmt: skip
        out += [_eth(0x0800, ip4 + udp), _eth(0x86DD, ip6 + udp), _eth(0x0800, ip4 + udp, vlan=7)]
    return out


def _attr(kind: int, value: bytes) -> bytes:
    raw = struct.pack("=HH", 4 + len(value), kind) + value
    return raw + b"\0" * (-len(raw) % 4)


def _nlmsg(mtype: int, body: bytes, seq: int = 1) -> bytes:
    return struct.pack("=IHHII", 16 + len(body), mtype, 2, seq, 0) + body


def netlink_seeds() -> list[bytes]:
    ll6 = socket.inet_pton(socket.AF_INET6, "fe80::ff:fe00:10b")
    body = struct.pack("=BBHiHBB", socket.AF_INET6, 0, 0, 7, 0x02, 0, 0)
    body += _attr(1, ll6) + _attr(2, SERVER_MAC) + _attr(4, b"\0" * 16)
    body4 = struct.pack("=BBHiHBB", socket.AF_INET, 0, 0, 7, 0x04, 0, 0)
    body4 += _attr(1, socket.inet_aton("198.18.77.11")) + _attr(2, SERVER_MAC)
    neigh, neigh4 = _nlmsg(RTM_NEWNEIGH, body), _nlmsg(RTM_NEWNEIGH, body4)
    return [
        neigh + neigh4 + _nlmsg(NLMSG_DONE, b"\0" * 4),
        neigh,
        _nlmsg(NLMSG_ERROR, struct.pack("=i", -1) + b"\0" * 16),
        _nlmsg(RTM_NEWNEIGH, body, seq=2) + neigh4,
    ]


def offer_seeds() -> list[bytes]:
    offer = DhcpMessage(
        op=2,
        xid=PROBE_XID,
        chaddr=PROBE_MAC,
        options={53: b"\x02", 54: socket.inet_aton("198.18.77.1"), 51: b"\0\0\x0e\x10"},
        yiaddr=socket.inet_aton("198.18.77.100"),
    )
    src, dst = socket.inet_aton("198.18.77.1"), b"\xff\xff\xff\xff"
    return [
        ipv4_udp(encode(offer), src, dst, 67, 68),
        ipv4_udp(encode(offer, max_size=1500) + b"\0" * 40, src, dst, 67, 68),
        discover_datagram(PROBE_MAC, PROBE_XID),
    ]


def json_seeds() -> list[bytes]:
    docs: list[Any] = [
        {"mac": "02:00:5e:00:01:01", "location": "lab 3", "tenant": "acme"},
        {"devices": [{"mac": "aabb.ccdd.eeff"}, {"mac": "AA-BB-CC-DD-EE-01"}], "count": 2},
        [1, -2.5e10, True, False, None, "\u00e9\u2603", {"a": {"b": [[]]}}],
        {"name": "x" * 40, "n": 12345678901234567890, "f": 1e-7},
    ]
    return [json.dumps(d).encode() for d in docs] + [b'"\\ud83d\\ude00"', b"  3  "]


FORM_TYPE_URLENCODED = b"application/x-www-form-urlencoded"


def form_seeds() -> list[bytes]:
    part = (
        b'--XyZ\r\nContent-Disposition: form-data; name="mac"\r\n\r\n02:00:5e:00:01:01\r\n'
        b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="d.csv"\r\n'
        b"Content-Type: text/csv\r\n\r\nMAC ID,Location\r\n02005e000101,lab\r\n--XyZ--\r\n"
    )
    return [
        FORM_TYPE_URLENCODED + b"\ncsrf=abc&mac=02%3A00%3A5e%3A00%3A01%3A01&location=lab+3",
        FORM_TYPE_URLENCODED + b"; charset=latin-1\nname=caf%E9&x=%ff",
        b"multipart/form-data; boundary=XyZ\n" + part,
        b'multipart/form-data; boundary="XyZ"; charset=utf-8\n' + part,
    ]


def csv_seeds() -> list[bytes]:
    return [
        TEMPLATE.encode(),
        b'MAC ID,Location\r\n02:00:5e:00:01:01,Lab 3\r\n02005e000102,"Hall, west"\r\n',
        b"\xef\xbb\xbfMAC ID;Location\n02-00-5e-00-01-03;'=SUM(A1)\n0200.5e00.0104;\n",
        b'Location,MAC ID,Extra\n"a ""quoted"" one",02:00:5e:00:01:05,x\n\n,,\n',
    ]


def cursor_seeds() -> list[bytes]:
    return [
        encode_cursor("02:00:5e:00:01:01").encode(),
        encode_cursor("ff:ff:ff:ff:ff:fe", before=True).encode(),
    ]


def mac_seeds() -> list[bytes]:
    return [
        b"02:00:5e:00:01:01",
        b" AA-BB-CC-DD-EE-FE ",
        b"aabb.ccdd.eeff",
        b"02005e000101",
        b"ff:ff:ff:ff:ff:ff",
    ]


def iso_seeds() -> list[bytes]:
    return [b"2026-12-08T00:09:43Z", b"1970-01-01T00:00:00Z", b"9999-12-31T23:59:59Z"]


# --- calls ------------------------------------------------------------------------------------

_JSON_REQUEST = make_mocked_request(
    "POST", "/api/v1/x", headers={"Content-Type": "application/json"}
)


def call_parse_json(data: bytes) -> object:
    return parse_json(_JSON_REQUEST, data)


class _FormReader:
    """read_form over a real aiohttp request whose body is fed from memory: the first line of
    the input is the Content-Type (latin-1, as HTTP header bytes are), the rest the body."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None  # made on first use

    def __call__(self, data: bytes) -> object:
        if self.loop is None:
            self.loop = asyncio.new_event_loop()
        ctype, _, body = data.partition(b"\n")
        with warnings.catch_warnings():
            # aiohttp warns (once, in the server's log) of a part's bad Content-Disposition and
            # reads on; the test suite's filterwarnings=error would make that an exception.
            warnings.simplefilter("ignore", BadContentDispositionHeader)
            warnings.simplefilter("ignore", BadContentDispositionParam)
            return self.loop.run_until_complete(self._read(ctype.decode("latin-1"), body))

    async def _read(self, ctype: str, body: bytes) -> object:
        reader = StreamReader(
            mock.Mock(_reading_paused=False), 2**16, loop=asyncio.get_running_loop()
        )
        reader.feed_data(body)
        reader.feed_eof()
        request = make_mocked_request(
            "POST",
            "/ui/x",
            headers={"Content-Type": ctype, "Content-Length": str(len(body))},
            payload=reader,
        )
        fields = dict(await read_form(request))
        for value in fields.values():
            if isinstance(value, web.FileField):
                value.file.close()
        return fields


_QUERY_DECODER = QueryDecoder()


def _neigh(data: bytes) -> object:
    return parse_neigh_dump(data, 1)


def _offer(data: bytes) -> object:
    return parse_offer(data, PROBE_XID, PROBE_MAC, SERVER_MAC)


MDNS_TOKENS = (
    b"\xc0\x0c", b"\xc0\x00", b"\xc0\x0c\xc0\x0c", b"\x05local\x00", b"\x08_imprint\x04_tcp",
    b"\x00\x0c\x00\x01", b"\x00\x0c\x80\x01", b"\x00\x21\x80\x01", b"\x00\x10\x00\x01",
    b"\x00\x1c\x00\x01", b"\x00\x01\x80\x01", b"\x00\xff\x00\x01", b"\x00\x00\x11\x94\x00\x04",
    b"\x3f", b"\x40", b"\xff\xff", b"\x00\x01\x00\x00\x00\x00\x00\x00", b"\x80\x00",
)  # fmt: skip
DHCP_TOKENS = (
    b"\x63\x82\x53\x63", b"\x35\x01\x01", b"\x35\x01\x03", b"\x35\x01\x08", b"\x34\x01\x03",
    b"\x37\x04\x01\x03\x06\x2b", b"\x3c\x0cMS-UC-Client", b"\x3d\x07\x01\x02\x00\x5e\x00\x01\x01",
    b"\x52\x06\x01\x04abcd", b"\x39\x02\x05\xdc", b"\x2b\x00", b"\xff", b"\x00\x00\x00\x00",
    b"\x01\x01\x06\x00",
)  # fmt: skip
FRAME_TOKENS = (
    b"\x08\x00", b"\x86\xdd", b"\x81\x00", b"\x88\xa8", b"\x14\xe9", b"\x45\x00", b"\x46\x00",
    b"\x60\x00\x00\x00", b"\x11", b"\x40\x00", b"\x20\x00", b"\xe0\x00\x00\xfb",
)  # fmt: skip
NETLINK_TOKENS = (
    b"\x1c\x00", b"\x03\x00", b"\x02\x00", b"\x01\x00", b"\x01\x00\x00\x00", b"\x08\x00\x01\x00",
    b"\x0a\x00\x02\x00", b"\x14\x00\x01\x00", b"\xff\xff\xff\xff",
)  # fmt: skip
JSON_TOKENS = (
    b'{"', b'":', b'",', b"[", b"]", b"{}", b"\\u", b"\\ud800", b"\\udc00", b"1e999", b"-0",
    b"NaN", b"-Infinity", b"true", b"null", b'"\\', b"9" * 64, b"[" * 64, b"\xc3\xa9", b"\xed\xa0\x80",
)  # fmt: skip
FORM_TOKENS = (
    b"\r\n", b"\r\n\r\n", b"--XyZ", b"--XyZ--", b"Content-Disposition: form-data; name=",
    b"; filename=", b"Content-Type: ", b"Content-Transfer-Encoding: base64", b"; charset=",
    b"utf-16", b"&", b"=", b"%", b"%ff", b"+", b"boundary=", b"multipart/form-data",
)  # fmt: skip
CSV_TOKENS = (
    b"MAC ID", b"Location", b",", b";", b'"', b'""', b"\r\n", b"\r", b"\xef\xbb\xbf",
    b"02:00:5e:00:01:01", b"=cmd", b"'=", b"aabb.ccdd.eeff", b"\x00", b"\xff\xfe",
)  # fmt: skip

TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target("dhcp", decode, (DhcpDecodeError,), dhcp_seeds, 1600, DHCP_TOKENS),
        Target("mdns-query", decode_query, (MdnsDecodeError,), mdns_query_seeds, 2048, MDNS_TOKENS),
        Target(
            "mdns-decoder",
            _QUERY_DECODER.decode,
            (MdnsDecodeError,),
            mdns_query_seeds,
            2048,
            MDNS_TOKENS,
        ),
        Target(
            "mdns-records", decode_records, (MdnsDecodeError,), mdns_record_seeds, 2048, MDNS_TOKENS
        ),
        Target("mdns-frame", parse_frame, (FrameError,), frame_seeds, 1600, FRAME_TOKENS),
        Target("netlink", _neigh, (NetlinkError,), netlink_seeds, 1024, NETLINK_TOKENS),
        Target(
            "json",
            call_parse_json,
            (BodyError, json.JSONDecodeError),
            json_seeds,
            4096,
            JSON_TOKENS,
        ),
        Target(
            "form",
            _FormReader(),
            (BodyError, web.HTTPRequestEntityTooLarge),
            form_seeds,
            2048,
            FORM_TOKENS,
        ),
        Target("csv", parse_upload, (CsvError,), csv_seeds, 4096, CSV_TOKENS),
        Target("cursor", lambda d: decode_cursor(_text(d)), (CursorError,), cursor_seeds, 128),
        Target("mac", lambda d: normalize_mac(_text(d)), (MacError,), mac_seeds, 64),
        Target("iso", lambda d: parse_iso(_text(d)), (ValueError,), iso_seeds, 64),
        Target("dhcp-offer", _offer, (), offer_seeds, 1600, DHCP_TOKENS),
    )
}
