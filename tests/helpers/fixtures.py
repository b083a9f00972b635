"""Load the packet captures under tests/fixtures (format and provenance: tests/fixtures/README.md).

The captures were made from real clients (dhcpcd, udhcpc, perfdhcp, dig, python-zeroconf) and are
kept in the repository, so every test that uses them runs in a plain clone.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
FIXTURES = REPO_ROOT / "tests" / "fixtures"
_HEADER = re.compile(r"^#\s*from\s+(\S+):(\d+)\s+len\s+(\d+)\s*$")


def fixture_path(relpath: str) -> Path:
    """Path of tests/fixtures/<relpath>; a missing capture is an error, never a skip."""
    path = FIXTURES / relpath
    if not path.is_file():
        raise FileNotFoundError(f"packet capture {path} is missing from the repository")
    return path


def parse_hex_fixture(text: str) -> list[tuple[str, bytes]]:
    """Parse `# from ADDR:PORT len N` + hex lines into [("ADDR:PORT", payload), ...]."""
    packets: list[tuple[str, bytes]] = []
    src: str | None = None
    length = 0
    hexbuf: list[str] = []

    def flush() -> None:
        if src is None:
            return
        payload = bytes.fromhex("".join(hexbuf))
        if len(payload) != length:
            raise ValueError(
                f"packet from {src}: header says {length} octets, hex has {len(payload)}"
            )
        packets.append((src, payload))

    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        m = _HEADER.match(line)
        if m:
            flush()
            src, length, hexbuf = f"{m.group(1)}:{m.group(2)}", int(m.group(3)), []
        elif line.startswith("#"):
            continue
        elif src is None:
            raise ValueError(f"line {lineno}: hex before the first '# from' header")
        else:
            hexbuf.append(line.replace(" ", ""))
    flush()
    return packets


def load_hex_fixture(relpath: str) -> list[tuple[str, bytes]]:
    """Packets of tests/fixtures/<relpath> as (source "ADDR:PORT", payload) pairs."""
    return parse_hex_fixture(fixture_path(relpath).read_text(encoding="ascii"))


def load_packets(relpath: str) -> list[tuple[str, int, bytes]]:
    """Packets of tests/fixtures/<relpath> as (source address, source port, payload)."""
    return [(*split_src(src), payload) for src, payload in load_hex_fixture(relpath)]


def split_src(src: str) -> tuple[str, int]:
    """ "198.18.77.11:68" -> ("198.18.77.11", 68)."""
    host, _, port = src.rpartition(":")
    return host, int(port)


def scapy_dhcp(
    msg_type: str,
    *,
    mac: str = "02:00:5e:00:01:01",
    xid: int = 0x1234,
    ciaddr: str = "0.0.0.0",
    giaddr: str = "0.0.0.0",
    flags: int = 0,
    hops: int = 0,
    op: int = 1,
    options: Sequence[tuple[Any, ...]] = (),
) -> bytes:
    """A DHCP message built by scapy, an encoder independent of ours (message-type option first)."""
    from scapy.layers.dhcp import BOOTP, DHCP

    pkt = BOOTP(
        op=op,
        xid=xid,
        flags=flags,
        hops=hops,
        ciaddr=ciaddr,
        giaddr=giaddr,
        chaddr=bytes.fromhex(mac.replace(":", "")),
    ) / DHCP(options=[("message-type", msg_type), *options, "end"])
    return bytes(pkt)
