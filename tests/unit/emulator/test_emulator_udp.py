"""device_emulator.udp: the one `recv(wait)` every emulator transport answers, over real
loopback sockets and a real asyncio queue."""

from __future__ import annotations

import asyncio
import errno
import socket

import pytest

from device_emulator.udp import QueueReceiver, SocketReceiver, bound_udp_socket


class _Datagrams(SocketReceiver[tuple[bytes, tuple[str, int]]]):
    async def _receive(self) -> tuple[bytes, tuple[str, int]]:
        return await self._datagram()


class _Letters(QueueReceiver[str]):
    def put(self, item: str) -> None:
        self._queue.put_nowait(item)


async def test_socket_receiver_returns_the_datagram_and_its_source() -> None:
    receiver = _Datagrams(bound_udp_socket(("127.0.0.1", 0)))
    port = receiver._sock.getsockname()[1]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        sender.bind(("127.0.0.1", 0))
        sender.sendto(b"hello", ("127.0.0.1", port))
        assert await receiver.recv(2.0) == (b"hello", sender.getsockname())
    receiver.close()


async def test_socket_receiver_gives_none_after_the_wait_and_at_once_for_no_wait() -> None:
    receiver = _Datagrams(bound_udp_socket(("127.0.0.1", 0)))
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await receiver.recv(0.2) is None
    assert 0.15 <= loop.time() - started < 2.0
    started = loop.time()
    assert await receiver.recv(0) is None
    assert await receiver.recv(-1) is None
    assert loop.time() - started < 0.1
    receiver.close()


async def test_queue_receiver_hands_out_what_is_queued_even_without_waiting() -> None:
    letters = _Letters()
    letters.put("a")
    letters.put("b")
    assert await letters.recv(0) == "a"
    assert await letters.recv(0) == "b"
    assert await letters.recv(0) is None
    assert await letters.recv(0.05) is None


async def test_queue_receiver_wakes_for_an_item_that_arrives_while_it_waits() -> None:
    letters = _Letters()
    asyncio.get_running_loop().call_later(0.05, letters.put, "late")
    assert await letters.recv(2.0) == "late"


def test_bound_socket_applies_the_options_before_binding_and_is_non_blocking() -> None:
    seen: list[int] = []

    def configure(sock: socket.socket) -> None:
        seen.append(sock.getsockname()[1])  # 0: not bound yet
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)

    sock = bound_udp_socket(("127.0.0.1", 0), configure=configure)
    try:
        assert seen == [0]
        assert sock.getsockname()[1] != 0
        assert sock.getblocking() is False
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST) == 1
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) == 1
    finally:
        sock.close()
    plain = bound_udp_socket(("127.0.0.1", 0), reuse_address=False)
    try:
        assert plain.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) == 0
    finally:
        plain.close()


def test_bound_socket_that_cannot_bind_is_closed_and_the_error_raised() -> None:
    made: list[socket.socket] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        with pytest.raises(OSError) as raised:
            bound_udp_socket(taken.getsockname(), reuse_address=False, configure=made.append)
    assert raised.value.errno == errno.EADDRINUSE
    assert len(made) == 1 and made[0].fileno() == -1  # closed, not leaked
