"""The DNS-SD records Imprint advertises (RFC 6763), built from the ProvisioningEndpoint. Pure.

One service instance: PTR `<service>.local.` -> `<instance>.<service>.local.`, SRV instance ->
`<host>.local.`:port, TXT instance (`txtvers=1` first), A/AAAA for `<host>.local.`, plus the
service-type enumeration PTR (RFC 6763 §9). Everything here is public: nothing secret goes into an
mDNS answer.
"""

from __future__ import annotations

import ipaddress
import re
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from server.mdns.names import (
    Labels,
    NameSyntaxError,
    canonical_wire_name,
    check_labels,
    labels_to_text,
    name_key,
    wire_name,
)
from server.registry.model import ProvisioningEndpoint

TYPE_A = 1
TYPE_PTR = 12
TYPE_TXT = 16
TYPE_AAAA = 28
TYPE_SRV = 33
TYPE_ANY = 255
CLASS_IN = 1
CLASS_ANY = 255

# RFC 6762 §10: 120 s for records whose name or rdata is a host name (A, AAAA, SRV), 75 minutes
# for the others (PTR, TXT).
HOST_TTL = 120
SERVICE_TTL = 4500

LOCAL: Labels = (b"local",)
SERVICE_ENUMERATION: Labels = (b"_services", b"_dns-sd", b"_udp", b"local")  # RFC 6763 §9

TXT_MAX_TOTAL = 200  # RFC 6763 §6.2: keep the whole TXT rdata within 200 bytes
TXT_MAX_KEY = 9  # RFC 6763 §6.4: keys of at most 9 characters

_SERVICE_NAME = re.compile(r"^[A-Za-z0-9](?:-?[A-Za-z0-9])*$")  # RFC 6335 §5.1, no "--"
_HOST_LABEL = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class RecordsError(ValueError):
    """Our own configuration cannot make valid DNS-SD records; the message names what to fix."""


@dataclass(frozen=True, slots=True)
class PtrData:
    target: Labels


@dataclass(frozen=True, slots=True)
class SrvData:
    priority: int
    weight: int
    port: int
    target: Labels


@dataclass(frozen=True, slots=True)
class TxtData:
    strings: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class AddressData:
    packed: bytes  # 4 bytes (A) or 16 bytes (AAAA)


RData = PtrData | SrvData | TxtData | AddressData


def canonical_rdata(rdata: RData) -> bytes:
    """Uncompressed rdata with names lower-cased: the form known answers are compared in."""
    if isinstance(rdata, PtrData):
        return canonical_wire_name(rdata.target)
    if isinstance(rdata, SrvData):
        head = struct.pack("!HHH", rdata.priority, rdata.weight, rdata.port)
        return head + canonical_wire_name(rdata.target)
    if isinstance(rdata, TxtData):
        return b"".join(bytes((len(s),)) + s for s in rdata.strings)
    return rdata.packed


def rdata_wire(rdata: RData) -> bytes:
    """Uncompressed rdata as sent (names keep their case)."""
    if isinstance(rdata, PtrData):
        return wire_name(rdata.target)
    if isinstance(rdata, SrvData):
        return struct.pack("!HHH", rdata.priority, rdata.weight, rdata.port) + wire_name(
            rdata.target
        )
    return canonical_rdata(rdata)


@dataclass(frozen=True, slots=True)
class Record:
    """One resource record of ours; `key` is (folded name, type, canonical rdata)."""

    labels: Labels
    rtype: int
    ttl: int
    unique: bool  # unique records get the cache-flush bit in mDNS answers (RFC 6762 §10.2)
    rdata: RData
    name: str = field(init=False)
    key: tuple[str, int, bytes] = field(init=False)

    def __post_init__(self) -> None:
        text = labels_to_text(self.labels)
        object.__setattr__(self, "name", text)
        object.__setattr__(self, "key", (name_key(text), self.rtype, canonical_rdata(self.rdata)))


Selection = tuple[tuple[int, ...], tuple[int, ...]]  # (answer indices, additional indices)


@dataclass(frozen=True, slots=True, eq=False)
class ServiceRecords:
    """Our records and, per (folded name, qtype), which of them answer and which go additional."""

    service_type: str  # "_imprint._tcp.local."
    instance: str  # "Imprint._imprint._tcp.local."
    host: str  # "imprint.local."
    records: tuple[Record, ...]
    table: Mapping[tuple[str, int], Selection]

    def select(self, name: str, qtype: int) -> Selection | None:
        """Records answering a question for `name` (any case) and `qtype`, or None."""
        return self.table.get((name_key(name), qtype))

    @property
    def max_ttl(self) -> int:
        return max(r.ttl for r in self.records)

    @property
    def service_set(self) -> tuple[Record, ...]:
        """PTR, SRV and TXT of our instance (what a goodbye withdraws)."""
        return self.records[:3]


def service_labels(service: str) -> Labels:
    """Validate `_name._tcp` (".local." implied, accepted) and return its labels without local."""
    text = service.strip().removesuffix(".").removesuffix(".local")
    parts = text.split(".")
    if len(parts) != 2 or parts[1] not in ("_tcp", "_udp") or not parts[0].startswith("_"):
        raise RecordsError(
            f"[mdns] service {service!r} must look like '_name._tcp' or '_name._udp' "
            "(the '.local.' suffix is implied)"
        )
    name = parts[0][1:]
    # RFC 6335 §5.1: 1-15 characters, letters, digits and hyphens, at least one letter, no
    # hyphen at either end and no two hyphens in a row.
    if not (1 <= len(name) <= 15) or not _SERVICE_NAME.match(name) or name.isdigit():
        raise RecordsError(
            f"[mdns] service name {name!r} must be 1-15 letters, digits and single hyphens, "
            "with at least one letter, not starting or ending with '-' (RFC 6335 §5.1)"
        )
    return (parts[0].encode("ascii"), parts[1].encode("ascii"))


def host_labels(hostname: str) -> Labels:
    """Validate a host name (`imprint`, `imprint.local` or `imprint.local.`) -> labels."""
    text = hostname.strip().removesuffix(".").removesuffix(".local")
    if not _HOST_LABEL.match(text):
        raise RecordsError(
            f"[mdns] hostname {hostname!r} must be one label of 1-63 letters, digits and '-', "
            "not starting or ending with '-' ('.local.' is implied)"
        )
    return (text.encode("ascii"), *LOCAL)


def instance_label(instance_name: str) -> bytes:
    """Validate a service instance name (RFC 6763 §4.1.1) -> its UTF-8 label."""
    raw = instance_name.encode("utf-8")
    if not 1 <= len(raw) <= 63:
        raise RecordsError(
            f"[mdns] instance_name {instance_name!r} must be 1-63 bytes of UTF-8, "
            f"got {len(raw)} (RFC 6763 §4.1.1)"
        )
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in instance_name):
        raise RecordsError(
            f"[mdns] instance_name {instance_name!r} must not contain control characters "
            "(RFC 6763 §4.1.1)"
        )
    return raw


def txt_strings(endpoint: ProvisioningEndpoint) -> tuple[bytes, ...]:
    """TXT strings for `endpoint`: txtvers first (RFC 6763 §6.7), then scheme, path, sha256."""
    pairs: list[tuple[str, str]] = [("txtvers", "1"), ("scheme", endpoint.scheme)]
    pairs.append(("path", endpoint.path or "/"))
    fingerprint = endpoint.fingerprint_sha256.replace(":", "").strip().lower()
    if fingerprint:
        if not _HEX64.match(fingerprint):
            raise RecordsError(
                f"TLS fingerprint {endpoint.fingerprint_sha256!r} is not 64 hex digits of SHA-256"
            )
        pairs.append(("sha256", fingerprint))
    out: list[bytes] = []
    for key, value in pairs:
        assert len(key) <= TXT_MAX_KEY
        item = f"{key}={value}".encode()
        if len(item) > 255:
            raise RecordsError(f"TXT item {key!r} is {len(item)} bytes, more than 255")
        out.append(item)
    total = sum(len(s) + 1 for s in out)
    if total > TXT_MAX_TOTAL:
        raise RecordsError(
            f"the TXT record would be {total} bytes, more than {TXT_MAX_TOTAL} "
            f"(RFC 6763 §6.2): shorten the provisioning path {endpoint.path!r}"
        )
    return tuple(out)


def build_records(
    endpoint: ProvisioningEndpoint,
    *,
    hostname: str,
    addresses: Iterable[str | ipaddress.IPv4Address | ipaddress.IPv6Address],
    service: str = "_imprint._tcp",
    instance_name: str = "Imprint",
) -> ServiceRecords:
    """Build our records, or raise RecordsError naming the setting to fix."""
    svc = (*service_labels(service), *LOCAL)
    inst = (instance_label(instance_name), *svc)
    host = host_labels(hostname)
    try:
        check_labels(inst)
    except NameSyntaxError as e:
        raise RecordsError(f"[mdns] instance_name {instance_name!r}: {e}") from e
    if not 0 < endpoint.port < 65536:
        raise RecordsError(f"provisioning port {endpoint.port} is not a TCP port")

    v4: list[Record] = []
    v6: list[Record] = []
    seen: set[bytes] = set()
    for value in addresses:
        try:
            addr = ipaddress.ip_address(value)
        except ValueError as e:
            raise RecordsError(f"[mdns] address {value!r} is not an IP address") from e
        if addr.packed in seen:
            continue
        seen.add(addr.packed)
        if addr.version == 4:
            v4.append(Record(host, TYPE_A, HOST_TTL, True, AddressData(addr.packed)))
        else:
            v6.append(Record(host, TYPE_AAAA, HOST_TTL, True, AddressData(addr.packed)))

    # Order fixes the indices used below: 0 PTR, 1 SRV, 2 TXT, 3 enumeration PTR, then A, AAAA.
    records: list[Record] = [
        Record(svc, TYPE_PTR, SERVICE_TTL, False, PtrData(inst)),  # shared: no cache-flush
        Record(inst, TYPE_SRV, HOST_TTL, True, SrvData(0, 0, endpoint.port, host)),
        Record(inst, TYPE_TXT, SERVICE_TTL, True, TxtData(txt_strings(endpoint))),
        Record(SERVICE_ENUMERATION, TYPE_PTR, SERVICE_TTL, False, PtrData(svc)),
        *v4,
        *v6,
    ]
    a_idx = tuple(range(4, 4 + len(v4)))
    aaaa_idx = tuple(range(4 + len(v4), 4 + len(v4) + len(v6)))
    addr_idx = a_idx + aaaa_idx

    svc_k = name_key(labels_to_text(svc))
    inst_k = name_key(labels_to_text(inst))
    host_k = name_key(labels_to_text(host))
    enum_k = name_key(labels_to_text(SERVICE_ENUMERATION))
    # Additional records follow RFC 6763 §12: PTR -> SRV, TXT, addresses; SRV -> addresses;
    # and RFC 6762 §6.2: A -> AAAA and AAAA -> A.
    table: dict[tuple[str, int], Selection] = {
        (svc_k, TYPE_PTR): ((0,), (1, 2, *addr_idx)),
        (svc_k, TYPE_ANY): ((0,), (1, 2, *addr_idx)),
        (enum_k, TYPE_PTR): ((3,), ()),
        (enum_k, TYPE_ANY): ((3,), ()),
        (inst_k, TYPE_SRV): ((1,), addr_idx),
        (inst_k, TYPE_TXT): ((2,), ()),
        (inst_k, TYPE_ANY): ((1, 2), addr_idx),
    }
    if addr_idx:
        table[(host_k, TYPE_ANY)] = (addr_idx, ())
    if a_idx:
        table[(host_k, TYPE_A)] = (a_idx, aaaa_idx)
    if aaaa_idx:
        table[(host_k, TYPE_AAAA)] = (aaaa_idx, a_idx)
    return ServiceRecords(
        service_type=labels_to_text(svc),
        instance=labels_to_text(inst),
        host=labels_to_text(host),
        records=tuple(records),
        table=table,
    )
