"""What one HTTP(S) connection may cost: a cap on connections, timeouts, small buffers.

nginx's defaults are the model: a client has `[http] head_timeout_s` to finish the TLS handshake
and send its first request head (`client_header_timeout`), and an idle keep-alive connection is
closed after `[http] keepalive_timeout_s` (`keepalive_timeout`, which in aiohttp also bounds a
later request head that stops half-way). At most `max_connections` are open at once, and at
most `max_connections_per_source` from one address (nginx's `limit_conn`); one past either is
closed at once, before any request is read, and counted.

The TLS layer of asyncio keeps a 256 KiB receive buffer per connection (`SSLProtocol.max_size`);
with it an idle TLS connection cost about 280 KB here. A TLS record holds at most 16 KiB of
data, so a `TLS_READ_BUFFER` of 16 KiB reads about one record per call; measured here, 250
connections each: 40 KB per idle handshaken connection, 64 KB per connection still before its
handshake (with 32 KiB: 56 and 80 KB).

A request body gets the same `head_timeout_s` from its head, and after that must keep up an
average of `MIN_BODY_RATE` bytes a second (Apache's mod_reqtimeout `body=20,MinRate=500`; nginx's
`client_body_timeout` only bounds the gap between two reads, which a drip never exceeds): a body
dripped or never sent is cut (`body_deadline`), a slow link's upload is not.

`HttpListener` is the thin transport: it accepts, applies `ConnectionGate`, and hands each
admitted connection to aiohttp's own request handler of the app's runner. With TLS the gate
stands in front of the handshake (`_GatedTls`, asyncio's own TLS protocol), so a connection that
never starts TLS counts against the caps like any other, and its head deadline runs from accept.
"""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import ipaddress
import logging
import ssl
from typing import Any, cast

from aiohttp import web

from server.core.logs import RateLimitedLog
from server.core.metrics import Counter, Registry

log = logging.getLogger("imprint.http")

# Bytes asyncio's TLS layer reads from the socket per call (its default: 256 KiB).
TLS_READ_BUFFER = 16 * 1024


def shrink_tls_buffers() -> None:
    """Every TLS connection this process accepts from now on reads into `TLS_READ_BUFFER`."""
    asyncio.sslproto.SSLProtocol.max_size = TLS_READ_BUFFER


def source_of(peer: Any) -> str:
    """The address a connection's limit is counted against (IPv4-mapped IPv6 as IPv4)."""
    if not peer:
        return ""
    host = str(peer[0]) if isinstance(peer, tuple) else str(peer)
    try:
        addr = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return str(addr.ipv4_mapped)
    return str(addr)


# Bytes a second a request body must average once its first `head_timeout` has passed.
MIN_BODY_RATE = 500.0


def body_deadline(head_timeout: float, timed_out: Counter, min_rate: float = MIN_BODY_RATE) -> Any:
    """A middleware that closes the connection of a request whose body has not arrived by
    `head_timeout` + bytes so far / `min_rate` seconds after its head; the handler's read then
    fails as for a client that left (server/web/errors.py: 499, no traceback)."""

    @web.middleware
    async def deadline(request: web.Request, handler: Any) -> web.StreamResponse:
        body = request.content
        if body.is_eof():  # no body, or all of it came with the head
            resp: web.StreamResponse = await handler(request)
            return resp
        loop = asyncio.get_running_loop()
        start = loop.time()
        timer: asyncio.TimerHandle | None = None

        def check() -> None:
            nonlocal timer
            timer = None
            if body.is_eof():
                return
            due = start + head_timeout + body.total_bytes / min_rate
            if loop.time() < due:
                timer = loop.call_at(due, check)
                return
            timed_out.inc()
            transport = request.transport
            if transport is not None:
                transport.abort()

        timer = loop.call_at(start + head_timeout, check)
        try:
            resp = await handler(request)
            return resp
        finally:
            if timer is not None:
                timer.cancel()

    return deadline


class ConnectionGate:
    """Counts open connections, in total and per source address (pure bookkeeping)."""

    def __init__(self, max_total: int, max_per_source: int) -> None:
        if max_total < 1 or max_per_source < 1:
            raise ValueError("connection limits must be at least 1")
        self.max_total = max_total
        self.max_per_source = max_per_source
        self.open = 0
        self._per_source: dict[str, int] = {}

    def admit(self, source: str) -> str | None:
        """Count a new connection from `source`; or return why it is refused ('total'/'source')."""
        if self.open >= self.max_total:
            return "total"
        n = self._per_source.get(source, 0)
        if n >= self.max_per_source:
            return "source"
        self._per_source[source] = n + 1
        self.open += 1
        return None

    def release(self, source: str) -> None:
        n = self._per_source.get(source, 0)
        if n <= 1:
            self._per_source.pop(source, None)
        else:
            self._per_source[source] = n - 1
        self.open = max(0, self.open - 1)

    def sources(self) -> int:
        return len(self._per_source)


class _Limits:
    """What every connection's handler shares: the gate, the timeouts, the counters."""

    def __init__(
        self, gate: ConnectionGate, head_timeout: float, metrics: Registry, log_every: float
    ) -> None:
        self.gate = gate
        self.head_timeout = head_timeout
        self.refused = metrics.counter(
            "imprint_http_connections_refused_total",
            "HTTP connections closed on arrival: over [http] max_connections (total) or "
            "max_connections_per_source (source)",
            ("reason",),
        )
        self.timed_out = metrics.counter(
            "imprint_http_head_timeouts_total",
            "Connections closed because no complete request head came within [http] head_timeout_s",
        )
        metrics.gauge("imprint_http_connections", "Open HTTP connections").set_function(
            lambda: {(): float(gate.open)}
        )
        self.notes = RateLimitedLog(log, every=log_every)

    def admit(self, transport: asyncio.BaseTransport) -> str | None:
        """The source of a new connection if the gate admits it; else count, log, abort."""
        source = source_of(transport.get_extra_info("peername"))
        refused = self.gate.admit(source)
        if refused is None:
            return source
        self.refused.inc(refused)
        total = refused == "total"
        self.notes.warning(
            refused,
            "HTTP connection from %s refused: %d open %s ([http] %s)",
            source,
            self.gate.max_total if total else self.gate.max_per_source,
            "in all" if total else "from this address",
            "max_connections" if total else "max_connections_per_source",
        )
        cast(asyncio.Transport, transport).abort()
        return None


class _GatedTls(asyncio.sslproto.SSLProtocol):
    """asyncio's TLS protocol, admitted by the gate on accept, before the handshake starts.

    The handshake starts with the client's first bytes, not on accept: until then OpenSSL holds
    no read buffer for the connection (measured here: 9 KB per silent connection instead of 23
    KB). A connection not handshaken `head_timeout` after accept is closed and counted as a head
    timeout; the request handler it feeds gets what is left of that deadline for its first head.
    """

    def __init__(
        self, loop: asyncio.AbstractEventLoop, handler: _GatedHandler, context: ssl.SSLContext
    ) -> None:
        # No waiter (asyncio's own accept path awaits one only to log a failed handshake at
        # debug level); the stubs want a Future and an int timeout, the code takes None and a
        # float.
        super().__init__(
            loop, handler, context, None,  # type: ignore[arg-type]
            server_side=True,
            ssl_handshake_timeout=handler.limits.head_timeout,  # type: ignore[arg-type]
        )  # fmt: skip
        self._handler = handler
        self._source: str | None = None
        self._silent = False  # admitted, no byte received yet: the handshake has not started
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        source = self._handler.limits.admit(transport)
        if source is None:
            return  # aborted: connection_lost follows, with no place to give back
        self._source = source
        self._handler.accepted(source)
        self._transport = transport
        self._silent = True
        self._deadline = asyncio.get_running_loop().call_later(
            self._handler.limits.head_timeout, self._handshake_deadline
        )

    def buffer_updated(self, nbytes: int) -> None:
        if self._silent:  # the ClientHello begins: now the handshake (and its buffers)
            self._silent = False
            # SSLProtocol's own buffer_updated does the same write first (its attributes are
            # not in the typing stubs).
            self._incoming.write(self._ssl_buffer_view[:nbytes])  # type: ignore[attr-defined]
            self._start_handshake()
            return
        super().buffer_updated(nbytes)

    def _handshake_deadline(self) -> None:
        self._deadline = None
        transport = self._transport
        if self._handler.transport is None and transport is not None:  # never handshaken
            self._handler.limits.timed_out.inc()
            cast(asyncio.Transport, transport).abort()

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        handler = self._handler
        # Also for a refused connection: SSLProtocol makes its app transport when it is made,
        # and only this marks it closed.
        super().connection_lost(exc)
        if self._source is not None:
            # A connection that never finished its handshake never reached the handler, which
            # would otherwise give its place back.
            handler.release()


class _GatedHandler(web.RequestHandler):
    """aiohttp's request handler, admitted by the gate and given a deadline for its first head.

    Without TLS it asks the gate itself; under `_GatedTls` it was admitted on accept."""

    def __init__(self, manager: web.Server, *, limits: _Limits, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self.limits = limits
        self._source: str | None = None
        self._accepted_at: float | None = None
        self._head_timer: asyncio.TimerHandle | None = None

    def accepted(self, source: str) -> None:
        """Admitted on accept by the TLS layer; the head deadline runs from now."""
        self._source = source
        self._accepted_at = asyncio.get_running_loop().time()

    def release(self) -> None:
        if self._source is not None:
            self.limits.gate.release(self._source)
            self._source = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        loop = asyncio.get_running_loop()
        if self._accepted_at is None:
            source = self.limits.admit(transport)
            if source is None:
                return
            self._source = source
            self._accepted_at = loop.time()
        super().connection_made(transport)
        left = self._accepted_at + self.limits.head_timeout - loop.time()
        self._head_timer = loop.call_later(max(0.0, left), self._head_deadline)

    def _head_deadline(self) -> None:
        self._head_timer = None
        # aiohttp counts a request once its head has been parsed.
        if self._request_count == 0 and self.transport is not None:
            self.limits.timed_out.inc()
            self.force_close()

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        self.release()
        super().connection_lost(exc)


class HttpListener:
    """The listening socket of the HTTP(S) site; connections go to the runner's aiohttp server."""

    def __init__(
        self,
        runner: web.AppRunner,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext | None,
        max_connections: int,
        max_connections_per_source: int,
        head_timeout: float,
        keepalive_timeout: float,
        metrics: Registry,
        log_every: float = 10.0,
    ) -> None:
        self._runner = runner
        self.host = host
        self.port = port
        self._ssl = ssl_context
        self._limits = _Limits(
            ConnectionGate(max_connections, max_connections_per_source),
            head_timeout,
            metrics,
            log_every,
        )
        self._handler_kwargs: dict[str, Any] = {
            "keepalive_timeout": keepalive_timeout,
            "access_log": None,
        }
        self._server: asyncio.Server | None = None

    @property
    def gate(self) -> ConnectionGate:
        return self._limits.gate

    @property
    def name(self) -> str:
        scheme = "https" if self._ssl else "http"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}"

    def _handler(self) -> _GatedHandler:
        server = self._runner.server
        assert server is not None, "the runner is set up before the listener starts"
        loop = asyncio.get_running_loop()
        return _GatedHandler(server, limits=self._limits, loop=loop, **self._handler_kwargs)

    def _tls(self) -> _GatedTls:
        assert self._ssl is not None
        return _GatedTls(asyncio.get_running_loop(), self._handler(), self._ssl)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        factory: Any = self._handler
        if self._ssl is not None:
            shrink_tls_buffers()
            factory = self._tls  # TLS over a plain listener: the gate goes before the handshake
        self._server = await loop.create_server(
            factory, self.host, self.port, backlog=512, reuse_address=True
        )
        socks = self._server.sockets
        if socks and self.port == 0:
            self.port = socks[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop accepting; open connections are the runner's to finish (runner.cleanup())."""
        if self._server is not None:
            self._server.close()
            self._server = None
