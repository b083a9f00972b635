"""The trace list: MACs whose DHCP decisions the running server logs at INFO with full detail.

It is a text file in the state directory (next to the store), one MAC per line, so the CLI
(`imprint trace MAC`, `imprint trace MAC --off`) and the server need no other channel: the
server looks at the file's size and modification time every second (`TraceWatcher`) and takes
the new list from the next datagram on, without DEBUG for everything. The CLI writes the file
whole (a temporary file renamed over it), so the server never reads half a list.
"""

from __future__ import annotations

import os
from pathlib import Path

from server.core.mac import MacError, normalize_mac

TRACE_FILE_NAME = "imprint-dhcp-trace.txt"
_HEADER = "# MACs whose DHCP decisions are logged at INFO (imprint trace MAC [--off])\n"


def trace_file(state_dir: Path) -> Path:
    return state_dir / TRACE_FILE_NAME


def parse_trace(text: str) -> tuple[frozenset[str], list[str]]:
    """The normalised MACs in `text` and one message per line that is not a MAC (pure).

    Blank lines and `#` comments are skipped."""
    macs: set[str] = set()
    bad: list[str] = []
    for n, line in enumerate(text.splitlines(), 1):
        item = line.split("#", 1)[0].strip()
        if not item:
            continue
        try:
            macs.add(normalize_mac(item))
        except MacError as e:
            bad.append(f"line {n}: {e}")
    return frozenset(macs), bad


def read_trace(path: Path) -> tuple[frozenset[str], list[str]]:
    """The list in `path` (empty when there is no file) and the lines that are not MACs."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return frozenset(), []
    return parse_trace(text)


def write_trace(path: Path, macs: frozenset[str]) -> None:
    """Replace the list in `path` with `macs` in one rename (a reader sees old or new)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(_HEADER + "".join(f"{m}\n" for m in sorted(macs)), encoding="utf-8")
    os.replace(tmp, path)


class TraceWatcher:
    """Re-reads the trace file when its size or modification time changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int] | None = None

    def poll(self) -> tuple[frozenset[str], list[str]] | None:
        """The list and its bad lines when the file changed (or went away) since the last
        call; None when it did not."""
        try:
            st = os.stat(self.path)
            stamp: tuple[int, int] | None = (st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            stamp = None
        if stamp == self._stamp:
            return None
        self._stamp = stamp
        return read_trace(self.path) if stamp is not None else (frozenset(), [])
