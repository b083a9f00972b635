"""HTTP connection limits on real loopback sockets (issue 17, defect 5).

Before, a half-sent request head or an idle keep-alive connection was held for aiohttp's default
of an hour and any number of connections was accepted; now `HttpListener` closes a head that
does not arrive within `head_timeout`, an idle connection after `keepalive_timeout`, and
refuses connections past the total and per-source caps, counting each."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from server.app import build_app, ssl_context
from server.config import ConfigError, load_settings
from server.core.metrics import Registry
from server.core.tls import ensure_self_signed
from server.web.keys import SERVICES
from server.web.limits import ConnectionGate, HttpListener, source_of
from tests.helpers.app import lab_settings

REQUEST = b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\n"


@contextlib.asynccontextmanager
async def _listening(
    head_timeout: float, keepalive_timeout: float, tls: ssl.SSLContext | None = None
) -> AsyncIterator[tuple[HttpListener, Registry]]:
    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="hi")

    app = web.Application()
    app.router.add_get("/hello", hello)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    metrics = Registry()
    listener = HttpListener(
        runner,
        "127.0.0.1",
        0,
        ssl_context=tls,
        max_connections=3,
        max_connections_per_source=2,
        head_timeout=head_timeout,
        keepalive_timeout=keepalive_timeout,
        metrics=metrics,
    )
    await listener.start()
    try:
        yield listener, metrics
    finally:
        await listener.stop()
        await runner.cleanup()


@pytest.fixture
async def served() -> AsyncIterator[tuple[HttpListener, Registry]]:
    async with _listening(head_timeout=0.5, keepalive_timeout=0.8) as both:
        yield both


async def _connect(
    listener: HttpListener, source: str = "127.0.0.1"
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", listener.port, local_addr=(source, 0))


async def _closed_within(reader: asyncio.StreamReader, seconds: float) -> bytes:
    """What the server sent before closing; fails if it is still open after `seconds`."""
    return await asyncio.wait_for(reader.read(), seconds)


async def _get(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
    writer.write(REQUEST)
    await writer.drain()
    return await asyncio.wait_for(reader.readuntil(b"hi"), 5)


async def test_a_half_sent_head_is_closed_after_the_head_timeout(
    served: tuple[HttpListener, Registry],
) -> None:
    listener, metrics = served
    reader, writer = await _connect(listener)
    writer.write(b"GET /hello HTTP/1.1\r\nHost: t\r\n")  # never finished
    await writer.drain()
    assert await _closed_within(reader, 5) == b""
    assert metrics.get("imprint_http_head_timeouts_total").total() == 1  # type: ignore[union-attr]
    writer.close()


async def test_an_idle_keepalive_connection_is_closed_after_its_timeout(
    served: tuple[HttpListener, Registry],
) -> None:
    listener, _ = served
    reader, writer = await _connect(listener)
    assert (await _get(reader, writer)).startswith(b"HTTP/1.1 200")
    await asyncio.sleep(0.6)  # past the head timeout: a served connection is not cut by it
    assert (await _get(reader, writer)).startswith(b"HTTP/1.1 200")
    assert await _closed_within(reader, 5) == b""
    writer.close()
    await asyncio.sleep(0.05)
    assert listener.gate.open == 0


async def _drip_until_closed(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes, every: float
) -> float:
    """Send `data` one byte every `every` seconds until the server closes; seconds it took."""
    started = time.monotonic()
    closed = asyncio.ensure_future(reader.read())
    for i in range(len(data)):
        done, _ = await asyncio.wait({closed}, timeout=every)
        if done:
            break
        with contextlib.suppress(ConnectionError):
            writer.write(data[i : i + 1])
            await writer.drain()
    assert await asyncio.wait_for(closed, 5) == b"", "the dripped connection was not closed"
    return time.monotonic() - started


async def test_a_head_dripped_one_byte_a_second_is_still_closed_at_the_head_timeout() -> None:
    # The classic slowloris: every byte is activity, but the head timeout is a deadline for the
    # whole head, not an idle timer that each byte resets.
    async with _listening(head_timeout=2.0, keepalive_timeout=30.0) as (listener, metrics):
        reader, writer = await _connect(listener)
        took = await _drip_until_closed(reader, writer, REQUEST[:8], every=1.0)
        assert took >= 2.0 - 0.3
        timeouts = metrics.get("imprint_http_head_timeouts_total")
        assert timeouts is not None and timeouts.total() == 1  # type: ignore[attr-defined]
        writer.close()
        await asyncio.sleep(0.05)
        assert listener.gate.open == 0


async def test_a_later_head_dripped_one_byte_a_second_is_closed_at_the_keepalive_timeout() -> None:
    async with _listening(head_timeout=30.0, keepalive_timeout=2.0) as (listener, _):
        reader, writer = await _connect(listener)
        assert (await _get(reader, writer)).startswith(b"HTTP/1.1 200")
        took = await _drip_until_closed(reader, writer, REQUEST[:8], every=1.0)
        assert took >= 2.0 - 0.3
        writer.close()
        await asyncio.sleep(0.05)
        assert listener.gate.open == 0


async def test_connections_past_the_per_source_cap_are_refused(
    served: tuple[HttpListener, Registry],
) -> None:
    listener, metrics = served
    first = [await _connect(listener) for _ in range(2)]
    extra_r, extra_w = await _connect(listener)
    assert await _closed_within(extra_r, 5) == b""
    refused = metrics.get("imprint_http_connections_refused_total")
    assert refused is not None and refused.value("source") == 1  # type: ignore[union-attr]
    for r, w in first:  # the admitted ones still work
        assert (await _get(r, w)).startswith(b"HTTP/1.1 200")
    # Another address is counted on its own.
    other_r, other_w = await _connect(listener, "127.0.0.2")
    assert (await _get(other_r, other_w)).startswith(b"HTTP/1.1 200")
    for _, w in [*first, (extra_r, extra_w), (other_r, other_w)]:
        w.close()


async def test_connections_past_the_total_cap_are_refused_and_a_closed_one_frees_its_place(
    served: tuple[HttpListener, Registry],
) -> None:
    listener, metrics = served
    held = [await _connect(listener, src) for src in ("127.0.0.1", "127.0.0.1", "127.0.0.2")]
    for r, w in held:
        assert (await _get(r, w)).startswith(b"HTTP/1.1 200")
    r4, w4 = await _connect(listener, "127.0.0.3")
    assert await _closed_within(r4, 5) == b""
    refused = metrics.get("imprint_http_connections_refused_total")
    assert refused is not None and refused.value("total") == 1  # type: ignore[union-attr]
    held[0][1].close()
    await asyncio.sleep(0.1)
    r5, w5 = await _connect(listener, "127.0.0.3")
    assert (await _get(r5, w5)).startswith(b"HTTP/1.1 200")
    for _, w in [*held[1:], (r4, w4), (r5, w5)]:
        w.close()


def test_the_gate_counts_and_releases() -> None:
    gate = ConnectionGate(3, 2)
    assert [gate.admit("a"), gate.admit("a"), gate.admit("a")] == [None, None, "source"]
    assert gate.admit("b") is None and gate.admit("c") == "total"
    gate.release("a")
    assert gate.admit("c") is None and gate.open == 3 and gate.sources() == 3
    assert source_of(("::ffff:198.18.0.1", 1, 0, 0)) == "198.18.0.1"
    assert source_of(None) == ""


def test_the_defaults_are_at_most_nginx_s_and_caps_must_agree(tmp_path: object) -> None:
    h = load_settings(None).http
    assert h.head_timeout_s <= 60 and h.keepalive_timeout_s <= 60
    assert h.max_connections_per_source <= h.max_connections
    cfg = tmp_path / "c.toml"  # type: ignore[operator]
    cfg.write_text("[http]\nmax_connections = 10\nmax_connections_per_source = 20\n")
    with pytest.raises(ConfigError, match="max_connections_per_source"):
        load_settings(cfg)


# ---- request bodies: the real app behind the real listener, as `imprint serve` runs it ------


@contextlib.asynccontextmanager
async def _real_app(tmp_path: Path, head_timeout: float) -> AsyncIterator[tuple[int, Registry]]:
    base = lab_settings(tmp_path)
    http = base.http.model_copy(update={"head_timeout_s": head_timeout})
    settings = base.model_copy(update={"http": http})
    app = build_app(settings)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    metrics = app[SERVICES].metrics
    listener = HttpListener(
        runner,
        "127.0.0.1",
        0,
        ssl_context=None,
        max_connections=16,
        max_connections_per_source=16,
        head_timeout=head_timeout,
        keepalive_timeout=30.0,
        metrics=metrics,
    )
    await listener.start()
    try:
        yield listener.port, metrics
    finally:
        await listener.stop()
        await runner.cleanup()


def _form_head(length: int) -> bytes:
    return (
        b"POST /ui/login HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\n"
        b"Content-Length: %d\r\n\r\n" % length
    )


async def test_a_body_dripped_one_byte_a_second_is_closed_after_the_head_timeout(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Before, the handler read the body for as long as bytes kept coming (or forever, for a
    # body that never came): a slowloris on the body held its connection without end.
    async with _real_app(tmp_path, head_timeout=1.0) as (port, metrics):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(_form_head(1000))
        await writer.drain()
        took = await _drip_until_closed(reader, writer, b"username=x" * 2, every=0.5)
        assert took >= 1.0 - 0.3
        timeouts = metrics.get("imprint_http_body_timeouts_total")
        assert timeouts is not None and timeouts.total() == 1  # type: ignore[attr-defined]
        writer.close()
    assert "unhandled error" not in caplog.text and not [r for r in caplog.records if r.exc_info]


async def test_a_slow_but_steady_body_is_read_whole(tmp_path: Path) -> None:
    # Past the head timeout a body is kept while it averages MIN_BODY_RATE bytes a second.
    body = b"username=x&password=" + b"y" * 1480  # 1500 bytes at ~1000 a second
    async with _real_app(tmp_path, head_timeout=0.5) as (port, metrics):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(_form_head(len(body)))
        for i in range(0, len(body), 100):
            writer.write(body[i : i + 100])
            await writer.drain()
            await asyncio.sleep(0.1)
        answer = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert answer.startswith(b"HTTP/1.1 "), answer
        assert not answer.startswith(b"HTTP/1.1 499"), answer
        timeouts = metrics.get("imprint_http_body_timeouts_total")
        assert timeouts is None or timeouts.total() == 0  # type: ignore[attr-defined]
        writer.close()


def _tls_handshake(port: int) -> None:
    """A blocking TLS client's handshake (closed whatever happens)."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        _client_tls().wrap_socket(raw, server_hostname="127.0.0.1").close()
    finally:
        raw.close()


def _client_tls() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the test's own self-signed certificate
    return ctx


async def test_tls_connections_that_never_handshake_count_against_the_caps(
    tmp_path: Path,
) -> None:
    """Before, the gate stood after the TLS handshake: 300 connections from one address that
    never sent a ClientHello were all held (cap 256) and none was refused."""
    cert = ensure_self_signed(tmp_path, ["127.0.0.1"])
    writers: list[asyncio.StreamWriter] = []
    try:
        async with _listening(1.0, 5.0, tls=ssl_context(cert)) as (listener, metrics):
            silent = [await _connect(listener) for _ in range(2)]  # the per-source cap
            writers += [w for _r, w in silent]
            await asyncio.sleep(0.1)
            assert listener.gate.open == 2
            # A third from the same address is refused before its handshake can start.
            with pytest.raises(OSError):  # ssl.SSLError, a reset or EOF: all OSErrors
                await asyncio.to_thread(_tls_handshake, listener.port)
            refused = metrics.get("imprint_http_connections_refused_total")
            assert refused is not None and refused.value("source") == 1  # type: ignore[attr-defined]
            # The silent ones are closed at the head timeout, counted from accept, and give
            # their places back: a real client then gets its answer over TLS.
            started = time.monotonic()
            for reader, _writer in silent:
                assert await _closed_within(reader, 5.0) == b""
            assert 0.7 <= time.monotonic() - started + 0.1 < 5.0
            timed_out = metrics.get("imprint_http_head_timeouts_total")
            assert timed_out is not None and timed_out.value() == 2  # type: ignore[attr-defined]
            await asyncio.sleep(0.1)
            assert listener.gate.open == 0
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", listener.port, ssl=_client_tls()
            )
            try:
                assert (await _get(reader, writer)).endswith(b"hi")
            finally:
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()
            # The server's side goes too (its TLS shutdown) before the listener stops.
            for _ in range(50):
                if listener.gate.open == 0:
                    break
                await asyncio.sleep(0.05)
            assert listener.gate.open == 0
    finally:
        for w in writers:
            w.close()
            with contextlib.suppress(Exception):
                await w.wait_closed()
