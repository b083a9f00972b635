"""The emulator's standard-library HTTPS client: response parsing (bytes in, response out) and
certificate pinning against a real local TLS server whose self-signed certificate is made here
with `cryptography`. The peer is a test-local asyncio TLS server, NOT Imprint: these tests prove
the client's framing and pinning; tests/e2e/test_provision_loopback.py runs it against Imprint."""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from device_emulator.https_client import (
    HttpConnection,
    HttpError,
    HttpProtocolError,
    NoPin,
    PinMismatch,
    ResponseParser,
    build_request,
    certificate_fingerprint,
)

# --- parsing ---------------------------------------------------------------------------------


def parse(*chunks: bytes, eof: bool = False, head: bool = False) -> ResponseParser:
    parser = ResponseParser(head_request=head)
    for chunk in chunks:
        parser.feed(chunk)
    if eof:
        parser.feed_eof()
    return parser


def bytewise(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


_BODY_401 = b'{"error": "wrong_code", "message": "m", "attempts_left": 2}'
JSON_401 = (
    b"HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json; charset=utf-8\r\n"
    b"Content-Length: %d\r\nRetry-After: 3\r\n\r\n%s" % (len(_BODY_401), _BODY_401)
)


def test_content_length_body_fed_one_byte_at_a_time() -> None:
    body = b'{"status": "provisioned"}'
    raw = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    parser = parse(*bytewise(raw))
    response = parser.response()
    assert response is not None
    assert (response.status, response.reason, response.body) == (200, "OK", body)
    assert response.json() == {"status": "provisioned"}
    assert response.keep_alive


def test_response_is_not_complete_until_the_last_body_byte() -> None:
    parser = parse(JSON_401[:-1])
    assert parser.response() is None
    parser.feed(JSON_401[-1:])
    response = parser.response()
    assert response is not None and response.status == 401
    assert response.header("RETRY-AFTER") == "3"
    assert response.json()["attempts_left"] == 2


def test_chunked_body_with_extension_and_trailer() -> None:
    raw = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;name=value\r\nhello\r\n7\r\n, world\r\n0\r\nX-Trailer: yes\r\n\r\n"
    )
    for chunks in ([raw], bytewise(raw)):
        response = parse(*chunks).response()
        assert response is not None and response.body == b"hello, world"


def test_interim_100_continue_is_skipped() -> None:
    raw = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n"
    response = parse(raw).response()
    assert response is not None and response.status == 204 and response.body == b""


def test_body_until_close_needs_eof() -> None:
    parser = parse(b"HTTP/1.0 200 OK\r\n\r\npartial", b" body")
    assert parser.response() is None
    parser.feed_eof()
    response = parser.response()
    assert response is not None and response.body == b"partial body"
    assert not response.keep_alive  # HTTP/1.0 without keep-alive


def test_head_response_has_no_body_despite_content_length() -> None:
    response = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", head=True).response()
    assert response is not None and response.body == b""


def test_connection_close_header_ends_keep_alive() -> None:
    response = parse(
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    ).response()
    assert response is not None and not response.keep_alive


def test_bytes_after_the_response_are_left_over() -> None:
    parser = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA")
    assert parser.response() is not None
    assert parser.leftover == b"EXTRA"


@pytest.mark.parametrize(
    ("raw", "complaint"),
    [
        (b"HTTP/2 200 OK\r\n\r\n", "not an HTTP/1.x status line"),
        (b"HTTP/1.1 2x0 OK\r\n\r\n", "bad status code"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", "conflicting"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "bad Content-Length"),
        (b"HTTP/1.1 200 OK\r\nX: a\r\n  folded\r\n\r\n", "folding"),
        (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "malformed header"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "bad chunk size"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabXY", "not followed by CRLF"),
    ],
)
def test_malformed_responses_are_the_peers_fault(raw: bytes, complaint: str) -> None:
    with pytest.raises(HttpProtocolError, match=complaint):
        parse(raw)


@pytest.mark.parametrize(
    ("raw", "complaint"),
    [
        (b"", "without answering"),
        (b"HTTP/1.1 200 OK\r\nContent-", "middle of the response headers"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", "middle of the HTTP 200 body"),
    ],
)
def test_connection_closed_early(raw: bytes, complaint: str) -> None:
    with pytest.raises(HttpProtocolError, match=complaint):
        parse(raw, eof=True)


def test_body_limit() -> None:
    parser = ResponseParser(max_body=4)
    with pytest.raises(HttpProtocolError, match="larger than 4 bytes"):
        parser.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n")


def test_non_json_body_says_so() -> None:
    response = parse(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 4\r\n\r\noops").response()
    assert response is not None
    with pytest.raises(HttpProtocolError, match="not JSON"):
        response.json()


def test_request_bytes() -> None:
    data = build_request(
        "POST", "/provision", "imprint.example:8443", body=b"{}", content_type="application/json"
    )
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /provision HTTP/1.1"
    assert b"Host: imprint.example:8443" in lines
    assert b"Content-Length: 2" in lines and b"Content-Type: application/json" in lines
    assert body == b"{}"
    with pytest.raises(ValueError):
        build_request("GET", "/a b", "h")
    with pytest.raises(ValueError):
        build_request("GET", "/", "h\r\nX-Injected: 1")


# --- a real TLS peer -------------------------------------------------------------------------


def make_cert(tmp: Path, name: str) -> tuple[Path, Path, str]:
    """A self-signed EC certificate; returns (cert file, key file, SHA-256 of its DER)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp / f"{name}.crt", tmp / f"{name}.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    der = cert.public_bytes(serialization.Encoding.DER)
    return cert_file, key_file, hashlib.sha256(der).hexdigest()


@dataclass
class Peer:
    port: int
    fingerprint: str
    received: list[bytes] = field(default_factory=list)  # application bytes, per connection
    connections: int = 0


Respond = Callable[[bytes], bytes]
StartPeer = Callable[[Respond], Awaitable[Peer]]


@pytest.fixture
async def tls_peer(tmp_path: Path) -> AsyncIterator[StartPeer]:
    """Start TLS servers that answer each complete request with `respond(request)`."""
    servers: list[asyncio.Server] = []
    cert_file, key_file, fingerprint = make_cert(tmp_path, "peer")

    async def start(respond: Respond) -> Peer:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(cert_file, key_file)
        peer = Peer(0, fingerprint)

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            peer.connections += 1
            peer.received.append(b"")
            got = bytearray()
            try:
                while chunk := await reader.read(65536):
                    got += chunk
                    peer.received[-1] += chunk
                    while b"\r\n\r\n" in got:
                        head, _, rest = bytes(got).partition(b"\r\n\r\n")
                        length = 0
                        for line in head.split(b"\r\n")[1:]:
                            if line.lower().startswith(b"content-length:"):
                                length = int(line.split(b":", 1)[1])
                        if len(rest) < length:
                            break
                        del got[: len(head) + 4 + length]
                        writer.write(respond(head + b"\r\n\r\n" + rest[:length]))
                        await writer.drain()
            except (ConnectionError, ssl.SSLError):
                pass
            finally:
                writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=ctx)
        servers.append(server)
        peer.port = server.sockets[0].getsockname()[1]
        return peer

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


def json_ok(request: bytes) -> bytes:
    body = b'{"echo": %d}' % len(request)
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
        len(body),
        body,
    )


async def test_pinned_connection_sends_and_reuses_the_connection(
    tls_peer: StartPeer,
) -> None:
    peer = await tls_peer(json_ok)
    conn = await HttpConnection.open("https", "127.0.0.1", peer.port, pin=peer.fingerprint)
    try:
        assert conn.peer_fingerprint == peer.fingerprint
        first = await conn.request("POST", "/provision", json_body={"mac": "m", "code": "c"})
        assert first.status == 200 and conn.reusable
        second = await conn.request("POST", "/provision", json_body={"n": 2})
        assert second.status == 200
    finally:
        await conn.close()
    assert peer.connections == 1  # keep-alive: both requests on one TLS connection
    sent = peer.received[0]
    assert sent.startswith(b"POST /provision HTTP/1.1\r\n")
    assert b'{"mac": "m", "code": "c"}' in sent


async def test_pin_mismatch_aborts_before_any_request_byte(
    tls_peer: StartPeer,
) -> None:
    peer = await tls_peer(json_ok)
    wrong = "0" * 64
    with pytest.raises(PinMismatch, match="does not match the advertised fingerprint") as info:
        await HttpConnection.open("https", "127.0.0.1", peer.port, pin=wrong)
    assert info.value.got == peer.fingerprint and info.value.expected == wrong
    await asyncio.sleep(0.2)  # let the server side see the abort (if its handshake finished)
    assert b"".join(peer.received) == b""  # no application byte ever reached the server


async def test_pin_is_accepted_with_colons_and_capitals(
    tls_peer: StartPeer,
) -> None:
    peer = await tls_peer(json_ok)
    shown = ":".join(peer.fingerprint[i : i + 2] for i in range(0, 64, 2)).upper()
    conn = await HttpConnection.open("https", "127.0.0.1", peer.port, pin=shown)
    await conn.close()


async def test_https_without_pin_is_refused_unless_allowed(
    tls_peer: StartPeer,
) -> None:
    peer = await tls_peer(json_ok)
    with pytest.raises(NoPin):
        await HttpConnection.open("https", "127.0.0.1", peer.port, pin=None)
    assert peer.connections == 0  # refused before connecting
    conn = await HttpConnection.open("https", "127.0.0.1", peer.port, pin=None, allow_unpinned=True)
    try:
        assert conn.peer_fingerprint == peer.fingerprint
        assert (await conn.request("GET", "/")).status == 200
    finally:
        await conn.close()


async def test_connection_close_response_is_not_reused(
    tls_peer: StartPeer,
) -> None:
    def close_after(request: bytes) -> bytes:
        return b"HTTP/1.1 409 Conflict\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}"

    peer = await tls_peer(close_after)
    conn = await HttpConnection.open("https", "127.0.0.1", peer.port, pin=peer.fingerprint)
    try:
        response = await conn.request("POST", "/provision", json_body={})
        assert response.status == 409 and not conn.reusable
    finally:
        await conn.close()


def test_fingerprint_helper_matches_openssl_der(tmp_path: Path) -> None:
    cert_file, _, expected = make_cert(tmp_path, "x")
    der = ssl.PEM_cert_to_DER_cert(cert_file.read_text())
    assert certificate_fingerprint(der) == expected


async def test_unreachable_server_is_a_connection_error() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(HttpError, match="cannot connect"):
        await HttpConnection.open("http", "127.0.0.1", port, pin=None, time_limit=2.0)
