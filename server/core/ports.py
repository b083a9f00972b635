"""Exclusive UDP ports: bind without sharing, and on a taken port say who holds it.

DHCP (67) and mDNS (5353) sockets are bound without SO_REUSEADDR/SO_REUSEPORT: with them, a
second `imprint serve` (or another DHCP server that sets them too) binds the same port without
an error and silently receives the datagrams meant for the first, as Kea and dnsmasq do not
allow. Sockets of one server on different links do not clash: each is bound to its interface
(SO_BINDTODEVICE), and the kernel keeps their ports apart per device.

`holder` reads /proc/net/udp{,6} for the sockets bound to the port and /proc/<pid>/fd for the
process that owns one (all processes as root; one's own otherwise). Best effort: None when it
cannot tell.
"""

from __future__ import annotations

import errno
import os
import socket
from pathlib import Path

PROC = Path("/proc")


def _inodes(port: int, proc: Path) -> set[str]:
    found: set[str] = set()
    for table in ("net/udp", "net/udp6"):
        try:
            lines = (proc / table).read_text(encoding="ascii").splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10:
                continue
            local = fields[1]
            try:
                if int(local.rsplit(":", 1)[1], 16) == port:
                    found.add(fields[9])
            except (IndexError, ValueError):
                continue
    found.discard("0")
    return found


def holder(port: int, proc: Path = PROC) -> str | None:
    """'pid 1234 (dnsmasq)' for a process with a UDP socket on `port`, or None."""
    inodes = _inodes(port, proc)
    if not inodes:
        return None
    wanted = {f"socket:[{i}]" for i in inodes}
    try:
        pids = [p for p in os.listdir(proc) if p.isdigit()]
    except OSError:
        return None
    for pid in sorted(pids, key=int):
        fd_dir = proc / pid / "fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:  # gone, or another user's (not root)
            continue
        for fd in fds:
            try:
                if os.readlink(fd_dir / fd) in wanted:
                    name = (proc / pid / "comm").read_text(encoding="utf-8", errors="replace")
                    return f"pid {pid} ({name.strip()})"
            except OSError:
                continue
    return "a process this user cannot see (run as root to name it)"


def bind_exclusive(sock: socket.socket, address: tuple[str, int], what: str, key: str) -> None:
    """`sock.bind(address)`; a taken port raises OSError(EADDRINUSE) that names the port, who
    holds it when that can be found, and the config key that moves ours."""
    try:
        sock.bind(address)
    except OSError as e:
        if e.errno != errno.EADDRINUSE:
            raise
        host, port = address[0], address[1]
        who = holder(port)
        raise OSError(
            errno.EADDRINUSE,
            f"{what}: UDP port {port} on {host or '*'} is already in use"
            + (f" by {who}" if who else "")
            + f": stop that server, or give this one another port ({key})",
        ) from None
