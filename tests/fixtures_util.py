"""Load the captured packets under shared/fixtures (format: see shared/fixtures/README.md).

shared/ is found at $IMPRINT_SHARED_DIR, else next to the repository (`../shared` from the repo
root). Tests that need it are skipped, with the path tried, when it is absent.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
_HEADER = re.compile(r"^#\s*from\s+(\S+):(\d+)\s+len\s+(\d+)\s*$")


def shared_dir() -> Path:
    """The shared/ directory (may not exist)."""
    env = os.environ.get("IMPRINT_SHARED_DIR")
    return Path(env) if env else REPO_ROOT.parent / "shared"


def fixture_path(relpath: str) -> Path:
    """Path of shared/fixtures/<relpath>; skips the calling test if it is missing."""
    path = shared_dir() / "fixtures" / relpath
    if not path.is_file():
        pytest.skip(f"fixture {path} not found (set IMPRINT_SHARED_DIR to the shared/ directory)")
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
    """Packets of shared/fixtures/<relpath> as (source "ADDR:PORT", payload) pairs."""
    return parse_hex_fixture(fixture_path(relpath).read_text(encoding="ascii"))


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
