"""Claiming our unique names on the link (RFC 6762 §8, §9). Pure: packets and records in, out.

Imprint owns two unique names: the service instance (`Imprint._imprint._tcp.local.`, SRV and
TXT) and the host (`imprint.local.`, A and AAAA). Before it may use them it probes (§8.1: three
queries 250 ms apart, the first asking for unicast replies, our proposed records in the authority
section); a response from another host holding either name with other data is a conflict, and so
is one after start-up (§9). On a conflict the name that clashed is renamed, `Imprint (2)`,
`imprint-2` (§9 "choose a new name"), the records are rebuilt and probing starts again.

Simultaneous probes (§8.2 tie-breaking) are not compared: a host probing for the same name at
the very same moment is not detected; its answers after it claims the name are.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

from server.mdns.codec import FLAG_QR, KnownAnswer, encode_probe, encode_response
from server.mdns.names import name_key
from server.mdns.records import TYPE_A, TYPE_AAAA, TYPE_SRV, TYPE_TXT, ServiceRecords

PROBES = 3
PROBE_INTERVAL = 0.25  # s, §8.1
ANNOUNCEMENTS = 2  # §8.3: at least two, one second apart
ANNOUNCE_INTERVAL = 1.0
MAX_RENAMES = 15  # §8.1: after 15 conflicts in 10 s, wait 5 s; we stop renaming and say so

Build = Callable[[str, str], ServiceRecords]  # (instance name, host label) -> records

_NUMBERED_INSTANCE = re.compile(r"^(.*) \((\d+)\)$")
_NUMBERED_HOST = re.compile(r"^(.*)-(\d+)$")


def next_instance_name(name: str) -> str:
    """`Imprint` -> `Imprint (2)` -> `Imprint (3)` (RFC 6763 §4.1.1 style)."""
    m = _NUMBERED_INSTANCE.match(name)
    if m:
        return f"{m.group(1)} ({int(m.group(2)) + 1})"
    return f"{name} (2)"


def next_host_name(label: str, original: str) -> str:
    """`imprint` -> `imprint-2` -> `imprint-3`; numbers only what we appended ourselves."""
    if label != original:
        m = _NUMBERED_HOST.match(label)
        if m:
            return f"{m.group(1)}-{int(m.group(2)) + 1}"
    return f"{label}-2"


class Prober:
    """Holds our current names and records; tells a conflict from a peer's records."""

    def __init__(self, instance: str, host: str, build: Build) -> None:
        self.instance = instance
        self.host = host
        self._original_host = host
        self._build = build
        self.records = build(instance, host)
        self.renames = 0

    def probe(self, first: bool) -> bytes:
        """One probe query for both names; the first asks for unicast replies (§8.1)."""
        r = self.records
        unique = [rec for rec in r.records if rec.unique]
        return encode_probe([r.instance, r.host], unique, qu=first)

    def announcement(self) -> bytes:
        """Every record of ours as an unsolicited multicast response (§8.3)."""
        return encode_response(self.records.records)

    def goodbye(self) -> bytes:
        """Every record of ours with TTL 0 (§10.1), for the group when we announced."""
        return encode_response(self.records.records, ttl=0)

    def conflicts(self, flags: int, records: Iterable[KnownAnswer]) -> tuple[bool, bool]:
        """(instance clash, host clash) in a peer's message; only responses count (QR=1)."""
        if not flags & FLAG_QR:
            return False, False
        r = self.records
        ours = {rec.key for rec in r.records}
        inst, host = name_key(r.instance), name_key(r.host)
        clash_inst = clash_host = False
        for ka in records:
            if ka.key in ours:
                continue  # the same record: a cache echoing us, not a conflict (§9)
            if ka.name == inst and ka.rtype in (TYPE_SRV, TYPE_TXT):
                clash_inst = True
            elif ka.name == host and ka.rtype in (TYPE_A, TYPE_AAAA):
                clash_host = True
        return clash_inst, clash_host

    def rename(self, instance: bool, host: bool) -> bool:
        """Pick the next name for what clashed and rebuild; False once MAX_RENAMES is reached."""
        if self.renames >= MAX_RENAMES:
            return False
        if instance:
            self.instance = next_instance_name(self.instance)
        if host:
            self.host = next_host_name(self.host, self._original_host)
        self.records = self._build(self.instance, self.host)
        self.renames += 1
        return True
