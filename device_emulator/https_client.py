"""The emulated device's HTTP/1.1 client over TLS with certificate pinning. Standard library only.

Why not aiohttp: the emulator imports scapy (GPL-2.0-only), and aiohttp (Apache-2.0) cannot be
combined with GPL-2.0-only code, so this client is asyncio streams + `ssl` and nothing else.

Pinning is trust on first use of the fingerprint the network advertised (DHCP option 43
sub-option 6, option 225, or the mDNS TXT record): the TLS chain is not verified, instead the
SHA-256 of the server's DER certificate must equal the pin before a single request byte is sent.

The response parser (`ResponseParser`) is sans-I/O: bytes in, an `HttpResponse` out.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import hashlib
import json
import ssl
from dataclasses import dataclass
from typing import Any

from device_emulator.provisioning import normalize_fingerprint

__all__ = [
    "Dialer",
    "HttpClient",
    "HttpConnection",
    "HttpError",
    "HttpProtocolError",
    "HttpResponse",
    "NoPin",
    "PinMismatch",
    "ResponseParser",
    "ResumingContext",
    "TlsSessions",
    "build_request",
    "certificate_fingerprint",
    "unverified_context",
]

MAX_HEAD = 64 * 1024
MAX_BODY = 4 * 1024 * 1024
_NO_BODY_STATUS = (204, 304)


class HttpError(Exception):
    """The exchange with the server did not complete; the message says what went wrong."""


class HttpProtocolError(HttpError):
    """The server's bytes are not a valid HTTP/1.1 response (the peer's fault)."""


class PinMismatch(HttpError):
    """The server's certificate is not the one the network advertised; nothing was sent."""

    def __init__(self, expected: str, got: str) -> None:
        super().__init__(
            "the server's certificate does not match the advertised fingerprint "
            f"(advertised sha256 {expected}, server presented sha256 {got}); "
            "the code was not sent"
        )
        self.expected = expected
        self.got = got


class NoPin(HttpError):
    """HTTPS without a pin was asked for and not explicitly allowed."""


def certificate_fingerprint(der: bytes) -> str:
    """SHA-256 of a DER certificate as 64 lowercase hex digits."""
    return hashlib.sha256(der).hexdigest()


# The TLS session a connection being opened in this task offers to resume (see ResumingContext).
_OFFER: contextvars.ContextVar[ssl.SSLSession | None] = contextvars.ContextVar(
    "imprint_tls_offer", default=None
)


class ResumingContext(ssl.SSLContext):
    """A client context whose connections can resume a TLS session (RFC 8446 §2.2).

    asyncio's SSL transport calls `wrap_bio` without a session, so the session to offer travels
    in a context variable set by the task that opens the connection (`Dialer.open`); the
    transport makes its SSL object inside that task's context.
    """

    def wrap_bio(
        self,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
        server_side: bool = False,
        server_hostname: str | bytes | None = None,
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLObject:
        offer = session if session is not None else _OFFER.get()
        if offer is not None and server_side:
            offer = None
        return super().wrap_bio(incoming, outgoing, server_side, server_hostname, offer)


class TlsSessions:
    """TLS sessions to resume, by server and certificate pin.

    A session is only offered to the origin it was made with and only under the same pin, and
    the pin is checked on every connection, resumed or not (a resumed session carries the
    certificate the full handshake saw). One device keeps its own; a fleet may share one
    between its devices (`shared`), which real devices would not do, to take the full
    handshake's cost off the server where the bench is about the server's other work.
    """

    def __init__(self) -> None:
        self._sessions: dict[tuple[str, int, str | None], ssl.SSLSession] = {}
        self.offered = 0
        self.resumed = 0

    def get(self, host: str, port: int, pin: str | None) -> ssl.SSLSession | None:
        return self._sessions.get((host.lower(), port, pin))

    def put(self, host: str, port: int, pin: str | None, session: ssl.SSLSession) -> None:
        self._sessions[(host.lower(), port, pin)] = session


def unverified_context() -> ssl.SSLContext:
    """A client context that accepts any chain: the pin check after the handshake replaces it."""
    ctx = ResumingContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    # Order matters: check_hostname must be off before verify_mode can be CERT_NONE.
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


@dataclass(frozen=True, slots=True)
class HttpResponse:
    """One complete response: status, headers in arrival order (names lowercased), body."""

    status: int
    reason: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    version: str = "HTTP/1.1"

    def header(self, name: str) -> str | None:
        """The last value of header `name` (case-insensitive), or None."""
        key = name.lower()
        found = None
        for k, v in self.headers:
            if k == key:
                found = v
        return found

    @property
    def keep_alive(self) -> bool:
        """Whether the connection may carry another request (RFC 9112 §9.3)."""
        tokens = {t.strip().lower() for t in (self.header("connection") or "").split(",")}
        if self.version == "HTTP/1.0":
            return "keep-alive" in tokens
        return "close" not in tokens

    def json(self) -> Any:
        """The body parsed as JSON; HttpProtocolError when it is not JSON."""
        try:
            return json.loads(self.body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            ctype = self.header("content-type") or "no content type"
            raise HttpProtocolError(
                f"HTTP {self.status} response body is not JSON ({ctype}): {self.body[:80]!r}"
            ) from exc


class ResponseParser:
    """Incremental HTTP/1.1 response parser (RFC 9112): feed bytes, then take the response.

    Handles Content-Length, chunked transfer coding (trailers skipped), bodies delimited by
    the connection closing, interim 1xx responses (skipped), and 204/304 without a body.
    """

    def __init__(self, *, head_request: bool = False, max_body: int = MAX_BODY) -> None:
        self._buf = bytearray()
        self._head_request = head_request
        self._max_body = max_body
        self._status = 0
        self._reason = ""
        self._version = ""
        self._headers: list[tuple[str, str]] = []
        self._body = bytearray()
        self._phase = (
            "head"  # head, length, chunk-size, chunk-data, chunk-crlf, trailer, close, done
        )
        self._remaining = 0
        self._eof = False
        self._result: HttpResponse | None = None

    @property
    def done(self) -> bool:
        """True once a complete response has been read."""
        return self._result is not None

    def feed(self, data: bytes) -> None:
        """Take more bytes from the connection."""
        if self._result is not None:
            if data:
                self._buf += data  # pipelined garbage or the next response: left for `leftover`
            return
        self._buf += data
        self._advance()

    def feed_eof(self) -> None:
        """The peer closed the connection."""
        self._eof = True
        if self._result is None:
            self._advance()
        if self._result is None:
            raise HttpProtocolError(self._truncated())

    def response(self) -> HttpResponse | None:
        """The complete response, or None while more bytes are needed."""
        return self._result

    @property
    def leftover(self) -> bytes:
        """Bytes received after the end of the response."""
        return bytes(self._buf)

    def _truncated(self) -> str:
        if self._phase == "head":
            if not self._buf and not self._status:
                return "the server closed the connection without answering"
            return "the server closed the connection in the middle of the response headers"
        return f"the server closed the connection in the middle of the HTTP {self._status} body"

    def _advance(self) -> None:
        while self._result is None:
            before = (self._phase, len(self._buf))
            if self._phase == "head":
                self._parse_head()
            elif self._phase == "length":
                take = min(self._remaining, len(self._buf))
                self._append(self._buf[:take])
                del self._buf[:take]
                self._remaining -= take
                if self._remaining == 0:
                    self._finish()
            elif self._phase == "chunk-size":
                line = self._line(MAX_HEAD)
                if line is not None:
                    size_text = line.split(b";", 1)[0].strip()  # chunk extensions ignored
                    try:
                        size = int(size_text, 16)
                    except ValueError:
                        raise HttpProtocolError(f"bad chunk size {size_text[:20]!r}") from None
                    if size < 0:
                        raise HttpProtocolError("negative chunk size")
                    self._remaining = size
                    self._phase = "chunk-data" if size else "trailer"
            elif self._phase == "chunk-data":
                take = min(self._remaining, len(self._buf))
                self._append(self._buf[:take])
                del self._buf[:take]
                self._remaining -= take
                if self._remaining == 0:
                    self._phase = "chunk-crlf"
            elif self._phase == "chunk-crlf":
                if len(self._buf) >= 2:
                    if self._buf[:2] != b"\r\n":
                        raise HttpProtocolError("chunk data is not followed by CRLF")
                    del self._buf[:2]
                    self._phase = "chunk-size"
            elif self._phase == "trailer":
                line = self._line(MAX_HEAD)
                if line is not None and line == b"":
                    self._finish()
            elif self._phase == "close":
                self._append(self._buf)
                self._buf.clear()
                if self._eof:
                    self._finish()
            if self._result is None and (self._phase, len(self._buf)) == before:
                return  # needs more bytes

    def _append(self, data: bytes | bytearray) -> None:
        if len(self._body) + len(data) > self._max_body:
            raise HttpProtocolError(f"response body larger than {self._max_body} bytes")
        self._body += data

    def _line(self, limit: int) -> bytes | None:
        end = self._buf.find(b"\r\n")
        if end < 0:
            if len(self._buf) > limit:
                raise HttpProtocolError("line too long")
            return None
        line = bytes(self._buf[:end])
        del self._buf[: end + 2]
        return line

    def _parse_head(self) -> None:
        end = self._buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buf) > MAX_HEAD:
                raise HttpProtocolError(f"response headers larger than {MAX_HEAD} bytes")
            return
        head = bytes(self._buf[:end])
        del self._buf[: end + 4]
        try:
            text = head.decode("latin-1")
        except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes every byte
            raise HttpProtocolError("undecodable response head") from None
        status_line, *lines = text.split("\r\n")
        parts = status_line.split(" ", 2)
        if len(parts) < 2 or parts[0] not in ("HTTP/1.1", "HTTP/1.0"):
            raise HttpProtocolError(f"not an HTTP/1.x status line: {status_line[:60]!r}")
        if not (len(parts[1]) == 3 and parts[1].isdigit()):
            raise HttpProtocolError(f"bad status code {parts[1][:10]!r}")
        headers: list[tuple[str, str]] = []
        for line in lines:
            if line[:1] in (" ", "\t"):
                # RFC 9112 §5.2: obsolete line folding; a client may reject the message.
                raise HttpProtocolError("obsolete header line folding")
            name, sep, value = line.partition(":")
            if not sep or not name or name != name.strip():
                raise HttpProtocolError(f"malformed header line {line[:60]!r}")
            headers.append((name.lower(), value.strip(" \t")))
        status = int(parts[1])
        if 100 <= status < 200:
            return  # interim response (e.g. 100 Continue): the real one follows
        self._version, self._status = parts[0], status
        self._reason = parts[2] if len(parts) > 2 else ""
        self._headers = headers
        self._choose_framing()

    def _choose_framing(self) -> None:
        # RFC 9112 §6.3: the order in which the message body length is decided.
        if self._head_request or self._status in _NO_BODY_STATUS:
            self._finish()
            return
        codings = [v for k, v in self._headers if k == "transfer-encoding"]
        if codings:
            last = ",".join(codings).split(",")[-1].strip().lower()
            if last != "chunked":
                self._phase = "close"
                return
            self._phase = "chunk-size"
            return
        lengths = {v.strip() for k, v in self._headers if k == "content-length"}
        if lengths:
            if len(lengths) != 1:
                raise HttpProtocolError(f"conflicting Content-Length values {sorted(lengths)}")
            value = lengths.pop()
            if not value.isdigit():
                raise HttpProtocolError(f"bad Content-Length {value[:20]!r}")
            self._remaining = int(value)
            if self._remaining > self._max_body:
                raise HttpProtocolError(f"response body larger than {self._max_body} bytes")
            self._phase = "length"
            if self._remaining == 0:
                self._finish()
            return
        self._phase = "close"

    def _finish(self) -> None:
        self._phase = "done"
        self._result = HttpResponse(
            status=self._status,
            reason=self._reason,
            headers=tuple(self._headers),
            body=bytes(self._body),
            version=self._version,
        )


def build_request(
    method: str,
    target: str,
    host: str,
    *,
    body: bytes | None = None,
    content_type: str | None = None,
    headers: tuple[tuple[str, str], ...] = (),
    keep_alive: bool = True,
) -> bytes:
    """The bytes of one HTTP/1.1 request (RFC 9112 §3): request line, Host, framing, body."""
    if not target.startswith("/"):
        raise ValueError(f"request target {target!r} must start with '/'")
    for text in (method, target, host):
        if not text or any(c in text for c in "\r\n \t"):
            raise ValueError(f"{text!r} is empty or contains whitespace or a line break")
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}"]
    if body is not None:
        if content_type:
            lines.append(f"Content-Type: {content_type}")
        lines.append(f"Content-Length: {len(body)}")
    lines.append("Accept: application/json")
    lines.append(f"Connection: {'keep-alive' if keep_alive else 'close'}")
    for name, value in headers:
        if any(c in name + value for c in "\r\n"):
            raise ValueError(f"header {name!r} contains a line break")
        lines.append(f"{name}: {value}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


def _host_header(scheme: str, host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    default = 443 if scheme == "https" else 80
    return shown if port == default else f"{shown}:{port}"


class HttpConnection:
    """One HTTP/1.1 connection (TLS with a pin, or plain); requests are sent one at a time."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        scheme: str,
        host: str,
        port: int,
        peer_fingerprint: str | None,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self.scheme = scheme
        self.host = host
        self.port = port
        self.peer_fingerprint = peer_fingerprint
        self.reusable = True
        self.requests = 0
        self.answered_any_byte = False  # the current exchange got at least one byte back

    @property
    def tls_session(self) -> ssl.SSLSession | None:
        """The TLS session (with the server's tickets once a response was read), or None."""
        ssl_object = self._writer.get_extra_info("ssl_object")
        return None if ssl_object is None else ssl_object.session

    @property
    def session_reused(self) -> bool:
        """True when the TLS handshake resumed a session instead of a full handshake."""
        ssl_object = self._writer.get_extra_info("ssl_object")
        return bool(ssl_object is not None and ssl_object.session_reused)

    @classmethod
    async def open(
        cls,
        scheme: str,
        host: str,
        port: int,
        *,
        pin: str | None,
        allow_unpinned: bool = False,
        context: ssl.SSLContext | None = None,
        local_address: str | None = None,
        time_limit: float = 10.0,
    ) -> HttpConnection:
        """Connect; for https, check the certificate against `pin` before returning.

        Raises PinMismatch (connection aborted, nothing sent), NoPin (https, no pin, not
        allowed), or HttpError when the server cannot be reached in `time_limit` seconds.
        """
        if scheme not in ("https", "http"):
            raise HttpError(f"cannot provision over {scheme!r}: only https and http are supported")
        expected = None
        if scheme == "https":
            if pin is not None:
                expected = normalize_fingerprint(pin)
                if expected is None:
                    raise HttpError(f"pin {pin!r} is not a SHA-256 fingerprint (64 hex digits)")
            elif not allow_unpinned:
                raise NoPin(
                    "no certificate fingerprint to pin for an https server; refusing to send "
                    "the code over a connection nobody vouched for"
                )
        ssl_ctx = (context or unverified_context()) if scheme == "https" else None
        try:
            async with asyncio.timeout(time_limit):
                reader, writer = await asyncio.open_connection(
                    host,
                    port,
                    ssl=ssl_ctx,
                    local_addr=(local_address, 0) if local_address else None,
                    server_hostname=host if ssl_ctx is not None else None,
                )
        except TimeoutError:
            raise HttpError(
                f"{scheme}://{host}:{port} did not answer within {time_limit} s"
            ) from None
        except ssl.SSLError as exc:
            raise HttpError(f"TLS handshake with {host}:{port} failed: {exc}") from None
        except OSError as exc:
            raise HttpError(f"cannot connect to {host}:{port}: {exc.strerror or exc}") from None
        fingerprint = None
        if ssl_ctx is not None:
            ssl_object = writer.get_extra_info("ssl_object")
            der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
            if not der:
                writer.transport.abort()
                raise HttpError(f"{host}:{port} presented no certificate")
            fingerprint = certificate_fingerprint(der)
            if expected is not None and fingerprint != expected:
                # Abort, not close: no close_notify, no chance for the peer to read anything.
                writer.transport.abort()
                raise PinMismatch(expected, fingerprint)
        return cls(
            reader, writer, scheme=scheme, host=host, port=port, peer_fingerprint=fingerprint
        )

    async def request(
        self,
        method: str,
        target: str,
        *,
        json_body: Any = None,
        time_limit: float = 10.0,
        keep_alive: bool = True,
    ) -> HttpResponse:
        """Send one request (with a JSON body, if given) and read its response."""
        body = None if json_body is None else json.dumps(json_body).encode("utf-8")
        return await self.send(
            method,
            target,
            body=body,
            content_type="application/json" if body is not None else None,
            time_limit=time_limit,
            keep_alive=keep_alive,
        )

    async def send(
        self,
        method: str,
        target: str,
        *,
        body: bytes | None = None,
        content_type: str | None = None,
        headers: tuple[tuple[str, str], ...] = (),
        time_limit: float = 10.0,
        keep_alive: bool = True,
    ) -> HttpResponse:
        """Send one request with a raw body and extra headers; read its response within
        `time_limit` seconds. A failed exchange aborts the connection."""
        if not self.reusable:
            raise HttpError("this connection cannot carry another request")
        data = build_request(
            method,
            target,
            _host_header(self.scheme, self.host, self.port),
            body=body,
            content_type=content_type,
            headers=headers,
            keep_alive=keep_alive,
        )
        parser = ResponseParser(head_request=method == "HEAD")
        self.reusable = False  # until this exchange has completed cleanly
        self.requests += 1
        self.answered_any_byte = False
        try:
            async with asyncio.timeout(time_limit):
                self._writer.write(data)
                await self._writer.drain()
                while not parser.done:
                    chunk = await self._reader.read(65536)
                    if not chunk:
                        parser.feed_eof()
                        break
                    self.answered_any_byte = True
                    parser.feed(chunk)
        except TimeoutError:
            self.abort()
            raise HttpError(
                f"no complete response from {self.host}:{self.port} within {time_limit} s"
            ) from None
        except (ConnectionError, ssl.SSLError, OSError) as exc:
            self.abort()
            raise HttpError(f"connection to {self.host}:{self.port} failed: {exc}") from None
        except HttpProtocolError:
            self.abort()
            raise
        response = parser.response()
        assert response is not None
        self.reusable = keep_alive and response.keep_alive and not parser.leftover
        return response

    def abort(self) -> None:
        """Drop the connection at once."""
        self.reusable = False
        self._writer.transport.abort()

    async def close(self) -> None:
        """Close politely (TLS close_notify), bounded in time."""
        self.reusable = False
        self._writer.close()
        with contextlib.suppress(OSError, ssl.SSLError, TimeoutError):
            async with asyncio.timeout(2.0):
                await self._writer.wait_closed()


@dataclass(frozen=True, slots=True)
class Dialer:
    """How the device connects to the server it provisions with: the certificate pin (or leave
    to go without one over https), the TLS context, the source address, the time limit for
    connecting and for each exchange, and where TLS sessions are kept for resumption. The same
    for the provisioning POST and for sign-in."""

    pin: str | None = None
    allow_unpinned: bool = False
    context: ssl.SSLContext | None = None
    local_address: str | None = None
    time_limit: float = 10.0
    sessions: TlsSessions | None = None

    async def open(self, scheme: str, host: str, port: int) -> HttpConnection:
        """HttpConnection.open with these settings (resuming a kept TLS session if any)."""
        offer = None
        if scheme == "https" and self.sessions is not None:
            offer = self.sessions.get(host, port, self.pin)
        token = _OFFER.set(offer)
        try:
            conn = await HttpConnection.open(
                scheme,
                host,
                port,
                pin=self.pin,
                allow_unpinned=self.allow_unpinned,
                context=self.context,
                local_address=self.local_address,
                time_limit=self.time_limit,
            )
        finally:
            _OFFER.reset(token)
        if offer is not None and self.sessions is not None:
            self.sessions.offered += 1
            if conn.session_reused:
                self.sessions.resumed += 1
        return conn

    def keep_session(self, conn: HttpConnection) -> None:
        """Remember the connection's TLS session (after a response: TLS 1.3 sends its tickets
        after the handshake) for the next connection to this server under this pin."""
        if self.sessions is not None and conn.scheme == "https":
            session = conn.tls_session
            if session is not None and session.has_ticket:
                self.sessions.put(conn.host, conn.port, self.pin, session)


class HttpClient:
    """One device's HTTPS client for everything it asks the server: the code POST, the RFC 8414
    metadata, the device authorization and the token polls.

    It keeps one connection open (HTTP/1.1 keep-alive) and sends the next request on it while
    the server keeps it open; a new connection resumes the TLS session of the one before (or of
    another device of the fleet, see TlsSessions). Every connection, new or resumed, is checked
    against the pin before a request byte is sent. A request that found a kept connection
    closed by the server (no answer at all) is sent again once on a new connection, unless the
    caller says it must not be (`resend=False`: e.g. a refresh token, which rotates on use).
    """

    def __init__(self, dialer: Dialer, *, keep_alive: bool = True) -> None:
        self.dialer = dialer
        self.keep_alive = keep_alive
        self._conn: HttpConnection | None = None
        self.requests = 0
        self.connections = 0

    async def send(
        self,
        scheme: str,
        host: str,
        port: int,
        method: str,
        target: str,
        *,
        body: bytes | None = None,
        content_type: str | None = None,
        headers: tuple[tuple[str, str], ...] = (),
        resend: bool = True,
    ) -> HttpResponse:
        """One exchange; raises PinMismatch, NoPin, HttpProtocolError or HttpError."""
        conn = self._conn
        if conn is not None and not (
            conn.reusable and (conn.scheme, conn.host, conn.port) == (scheme, host, port)
        ):
            await self.close()
            conn = None
        reused = conn is not None
        if conn is None:
            conn = await self._dial(scheme, host, port)
        self.requests += 1
        try:
            response = await conn.send(
                method,
                target,
                body=body,
                content_type=content_type,
                headers=headers,
                time_limit=self.dialer.time_limit,
                keep_alive=self.keep_alive,
            )
        except HttpError:
            self._conn = None
            if not (reused and resend and not conn.answered_any_byte):
                raise
            conn = await self._dial(scheme, host, port)  # the server closed the idle one
            response = await conn.send(
                method,
                target,
                body=body,
                content_type=content_type,
                headers=headers,
                time_limit=self.dialer.time_limit,
                keep_alive=self.keep_alive,
            )
        self.dialer.keep_session(conn)
        if conn.reusable:
            self._conn = conn
        else:
            self._conn = None
            await conn.close()
        return response

    async def _dial(self, scheme: str, host: str, port: int) -> HttpConnection:
        conn = await self.dialer.open(scheme, host, port)
        self.connections += 1
        self._conn = conn
        return conn

    async def close(self) -> None:
        """Close the kept connection, if any."""
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()
