"""A second server cannot take the DHCP or mDNS port of a running one (issue 17, defect 4).

Before, both sockets set SO_REUSEADDR (and mDNS SO_REUSEPORT): a second `imprint serve` with an
empty store bound the same ports, started, and received the datagrams meant for the first,
with nothing in either log. Now the second refuses to start and names the port and its holder.
Real processes on loopback ports."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from server.core.ports import bind_exclusive, holder
from tests.helpers.proc import free_port, serve, wait_ready
from tests.helpers.server import imprint_argv, wait_until

TIMEOUT = 60


def config(tmp_path: Path, name: str, dhcp_port: int, mdns_port: int, *, mdns: bool) -> Path:
    http_port = free_port()
    path = tmp_path / f"{name}.toml"
    path.write_text(
        f"""
[store]
path = "{name}/imprint.db"
[http]
host = "127.0.0.1"
port = {http_port}
public_url = "http://127.0.0.1:{http_port}"
[tls]
enabled = false
[dhcp]
enabled = true
mode = "inform"
host = "127.0.0.1"
port = {dhcp_port}
server_ip = "127.0.0.1"
[mdns]
enabled = {"true" if mdns else "false"}
host = "127.0.0.1"
port = {mdns_port}
static_neighbours = {{ "127.0.0.1" = "02:00:5e:00:0e:01" }}
"""
    )
    return path


@pytest.fixture
def first(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], int, int]]:
    dhcp_port, mdns_port = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_DGRAM)
    cfg = config(tmp_path, "first", dhcp_port, mdns_port, mdns=True)
    log = tmp_path / "first.log"
    proc = serve(cfg, log)
    try:
        http_port = int(cfg.read_text().split("port = ")[1].split()[0])
        wait_ready(proc, http_port, log)
        yield proc, dhcp_port, mdns_port
    finally:
        proc.terminate()
        proc.wait(30)


def second(tmp_path: Path, dhcp_port: int, mdns_port: int, *, mdns: bool) -> str:
    """Start a second server on the same ports; it must exit by itself. Its output."""
    cfg = config(tmp_path, "second", dhcp_port, mdns_port, mdns=mdns)
    done = subprocess.run(
        [*imprint_argv(), "serve", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env={k: v for k, v in os.environ.items() if not k.startswith("IMPRINT_")},
    )
    assert done.returncode != 0, "the second server started on a taken port"
    return done.stdout + done.stderr


def test_a_second_server_on_the_dhcp_port_refuses_and_names_the_holder(
    tmp_path: Path, first: tuple[subprocess.Popen[str], int, int]
) -> None:
    proc, dhcp_port, mdns_port = first
    out = second(tmp_path, dhcp_port, free_port(socket.SOCK_DGRAM), mdns=False)
    assert f"DHCP: UDP port {dhcp_port} on 127.0.0.1 is already in use" in out, out
    assert f"by pid {proc.pid} (imprint)" in out, out
    assert "[dhcp] port" in out and "Traceback" not in out
    assert proc.poll() is None  # the first one runs on


def test_a_second_server_on_the_mdns_port_refuses_and_names_the_holder(
    tmp_path: Path, first: tuple[subprocess.Popen[str], int, int]
) -> None:
    proc, _, mdns_port = first
    out = second(tmp_path, free_port(socket.SOCK_DGRAM), mdns_port, mdns=True)
    assert f"mDNS: UDP port {mdns_port} on 127.0.0.1 is already in use" in out, out
    assert f"by pid {proc.pid} (imprint)" in out and "share_port" in out, out
    assert proc.poll() is None


def test_a_holder_that_allows_sharing_does_not_let_us_share(tmp_path: Path) -> None:
    """Another DHCP server that sets SO_REUSEADDR itself (as Imprint did) still blocks us."""
    other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    other.bind(("127.0.0.1", 0))
    port = other.getsockname()[1]
    ours = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        assert holder(port) == f"pid {os.getpid()} ({Path('/proc/self/comm').read_text().strip()})"
        with pytest.raises(OSError, match=f"UDP port {port} on 127.0.0.1 is already in use by pid"):
            bind_exclusive(ours, ("127.0.0.1", port), "DHCP", "[dhcp] port")
    finally:
        ours.close()
        other.close()
    # Once it is gone, the port is ours.
    again = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        wait_until(lambda: holder(port) is None, 5, "the port to be free")
        bind_exclusive(again, ("127.0.0.1", port), "DHCP", "[dhcp] port")
    finally:
        again.close()


def test_share_port_binds_beside_a_responder_that_allows_it(tmp_path: Path) -> None:
    """[mdns] share_port = true: beside an Avahi-like socket (SO_REUSEADDR), the bind works."""
    from server.mdns.transport import _open_socket

    avahi = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    avahi.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    avahi.bind(("127.0.0.1", 0))
    port = avahi.getsockname()[1]
    try:
        with pytest.raises(OSError, match="already in use"):
            _open_socket("127.0.0.1", port, None, join_group=False).close()
        shared = _open_socket("127.0.0.1", port, None, join_group=False, share_port=True)
        shared.close()
    finally:
        avahi.close()
