"""The emulated device's mDNS / DNS-SD queries and its reading of the answers. Pure.

Built and parsed with dnslib; names are kept as tuples of raw labels so that instance names
with dots or spaces (RFC 6763 §4.3) survive. Imports nothing from server/.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from dnslib import QTYPE, DNSError, DNSHeader, DNSLabel, DNSQuestion, DNSRecord
from dnslib.buffer import BufferError as DnsBufferError

from device_emulator.provisioning import (
    ProvisioningInfo,
    fingerprint_from_url,
    looks_like_url,
    normalize_fingerprint,
    split_url,
)

MDNS_GROUP = "224.0.0.251"
MDNS_PORT = 5353
DEFAULT_SERVICE = "_imprint._tcp.local"
QU_BIT = 0x8000  # RFC 6762 §5.4: top bit of qclass asks for a unicast response
CACHE_FLUSH = 0x8000  # RFC 6762 §10.2: top bit of rrclass in responses
CLASS_IN = 1
PTR, SRV, TXT, A, AAAA = QTYPE.PTR, QTYPE.SRV, QTYPE.TXT, QTYPE.A, QTYPE.AAAA
LEGACY_TTL_MAX = 10  # RFC 6762 §6.7

FINGERPRINT_KEYS = ("fp", "sha256", "fingerprint")  # tolerated until the encoding is fixed

Name = tuple[bytes, ...]


class MdnsDecodeError(ValueError):
    """A datagram is not a DNS message the device can read."""


def to_name(value: str | Name) -> Name:
    """A dotted name (no escapes; service and host names have none) as a label tuple."""
    if isinstance(value, tuple):
        return value
    return tuple(part.encode("utf-8") for part in value.rstrip(".").split(".") if part)


def name_key(name: Name) -> Name:
    """Names compare case-insensitively (RFC 6762 §16 for ASCII letters)."""
    return tuple(label.lower() for label in name)


def name_text(name: Name) -> str:
    """A label tuple as text, escaping dots and backslashes inside labels (RFC 6763 §4.3)."""
    return ".".join(
        label.decode("utf-8", errors="replace").replace("\\", "\\\\").replace(".", "\\.")
        for label in name
    )


def build_query(questions: Sequence[tuple[str | Name, int]], *, query_id: int, qu: bool) -> bytes:
    """A DNS query: QR 0, opcode 0, RD 0; qclass IN with the QU bit when `qu` (RFC 6762 §5.4).

    Multicast queries carry ID 0 (RFC 6762 §18.1); a legacy unicast querier picks a non-zero
    ID so it can match the reply (§6.7). The caller chooses, the codec only checks the range.
    """
    if not 0 <= query_id <= 0xFFFF:
        raise ValueError(f"query id {query_id} does not fit in 16 bits")
    if not questions:
        raise ValueError("a query needs at least one question")
    record = DNSRecord(DNSHeader(id=query_id, qr=0, opcode=0, aa=0, tc=0, rd=0, ra=0))
    for qname, qtype in questions:
        record.add_question(
            DNSQuestion(DNSLabel(to_name(qname)), qtype, CLASS_IN | (QU_BIT if qu else 0))
        )
    return bytes(record.pack())


@dataclass(frozen=True, slots=True)
class Record:
    """One resource record from a response, in the form the device uses."""

    name: Name
    rtype: int
    rclass: int  # without the cache-flush bit
    cache_flush: bool
    ttl: int
    # PTR: target name; SRV: (priority, weight, port, target); TXT: tuple of strings;
    # A/AAAA: address text.
    value: Any

    @property
    def key(self) -> Name:
        """Case-insensitive form of the owner name."""
        return name_key(self.name)


@dataclass(frozen=True, slots=True)
class Response:
    """A decoded DNS response: header bits, questions, and answer + additional records."""

    query_id: int
    qr: bool
    opcode: int
    rcode: int
    questions: tuple[tuple[Name, int, int], ...]  # (name, qtype, qclass)
    answers: tuple[Record, ...]
    additionals: tuple[Record, ...]

    @property
    def records(self) -> tuple[Record, ...]:
        """Answers then additionals."""
        return self.answers + self.additionals


def _record(rr: Any) -> Record | None:
    rtype = int(rr.rtype)
    value: Any
    if rtype == PTR:
        value = tuple(rr.rdata.label.label)
    elif rtype == SRV:
        value = (
            int(rr.rdata.priority),
            int(rr.rdata.weight),
            int(rr.rdata.port),
            tuple(rr.rdata.target.label),
        )
    elif rtype == TXT:
        value = tuple(bytes(s) for s in rr.rdata.data)
    elif rtype == A:
        value = str(ipaddress.IPv4Address(bytes(rr.rdata.data)))
    elif rtype == AAAA:
        value = str(ipaddress.IPv6Address(bytes(rr.rdata.data)))
    else:
        return None  # records the device does not use (NSEC, OPT, ...)
    return Record(
        name=tuple(rr.rname.label),
        rtype=rtype,
        rclass=int(rr.rclass) & ~CACHE_FLUSH,
        cache_flush=bool(int(rr.rclass) & CACHE_FLUSH),
        ttl=int(rr.ttl),
        value=value,
    )


def parse_response(data: bytes) -> Response:
    """Decode a DNS message, or raise MdnsDecodeError (dnslib refuses looping and forward
    compression pointers, which is what the device needs)."""
    try:
        msg = DNSRecord.parse(data)
        answers = tuple(r for r in (_record(rr) for rr in msg.rr) if r is not None)
        additionals = tuple(r for r in (_record(rr) for rr in msg.ar) if r is not None)
    except (DNSError, DnsBufferError, ValueError, IndexError, AttributeError, TypeError) as exc:
        # dnslib raises DNSError for most faults, and its buffer may surface others.
        raise MdnsDecodeError(f"not a DNS message: {exc}") from None
    return Response(
        query_id=int(msg.header.id),
        qr=bool(msg.header.qr),
        opcode=int(msg.header.opcode),
        rcode=int(msg.header.rcode),
        questions=tuple((tuple(q.qname.label), int(q.qtype), int(q.qclass)) for q in msg.questions),
        answers=answers,
        additionals=additionals,
    )


def legacy_problems(response: Response, asked: Iterable[tuple[str | Name, int]]) -> list[str]:
    """What a legacy unicast response does against RFC 6762 §6.7 (noted, not fatal)."""
    problems: list[str] = []
    got = {(name_key(n), t) for n, t, _ in response.questions}
    for qname, qtype in asked:
        if (name_key(to_name(qname)), qtype) not in got:
            problems.append(
                f"legacy unicast response does not repeat the question "
                f"{name_text(to_name(qname))} type {qtype} (RFC 6762 §6.7)"
            )
    for record in response.records:
        if record.ttl > LEGACY_TTL_MAX:
            problems.append(
                f"legacy unicast response has TTL {record.ttl} > 10 on "
                f"{name_text(record.name)} (RFC 6762 §6.7)"
            )
        if record.cache_flush:
            problems.append(
                f"legacy unicast response sets the cache-flush bit on {name_text(record.name)} "
                "(RFC 6762 §6.7)"
            )
    return problems


def parse_txt(strings: Iterable[bytes]) -> dict[str, str | None]:
    """DNS-SD TXT strings as a dict (RFC 6763 §6.3-6.5): keys as sent, the first of
    case-insensitively equal keys wins, a key without `=` is a boolean (None), strings that
    start with `=` are ignored."""
    out: dict[str, str | None] = {}
    seen: set[str] = set()
    for raw in strings:
        if not raw or raw.startswith(b"="):
            continue
        key_raw, eq, value = raw.partition(b"=")
        key = key_raw.decode("ascii", errors="replace")
        if key.lower() in seen:
            continue
        seen.add(key.lower())
        out[key] = value.decode("utf-8", errors="replace") if eq else None
    return out


def _txt_get(txt: dict[str, str | None], *keys: str) -> str | None:
    lowered = {k.lower(): v for k, v in txt.items()}
    for key in keys:
        value = lowered.get(key)
        if value:
            return value
    return None


@dataclass(frozen=True, slots=True)
class ServiceInfo:
    """One DNS-SD service instance as the device resolved it."""

    instance: str  # full instance name, e.g. `Imprint._imprint._tcp.local`
    host: str  # SRV target
    port: int
    addresses: tuple[str, ...]
    txt: dict[str, str | None]
    url: str
    fingerprint: str | None
    problems: tuple[str, ...] = field(default=())

    def provisioning(self) -> ProvisioningInfo:
        """The same facts in the shape DHCP discovery returns."""
        scheme, host, port, path, problems = split_url(self.url)
        return ProvisioningInfo(
            source="mdns",
            url=self.url,
            scheme=scheme,
            host=host,
            port=port,
            path=path,
            fingerprint=self.fingerprint,
            vendor_profiles=("dns-sd",),
            urls=(self.url,),
            problems=self.problems + tuple(problems),
        )

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready form."""
        return {
            "instance": self.instance,
            "host": self.host,
            "port": self.port,
            "addresses": list(self.addresses),
            "txt": dict(self.txt),
            "url": self.url,
            "fingerprint": self.fingerprint,
            "problems": list(self.problems),
        }


@dataclass
class RecordSet:
    """Everything learned so far from responses, keyed case-insensitively."""

    ptr: dict[Name, list[Name]] = field(default_factory=dict)
    srv: dict[Name, tuple[int, int, int, Name]] = field(default_factory=dict)
    txt: dict[Name, tuple[bytes, ...]] = field(default_factory=dict)
    addresses: dict[Name, list[str]] = field(default_factory=dict)
    names: dict[Name, Name] = field(default_factory=dict)  # key -> name as first seen

    def add(self, response: Response) -> None:
        """Merge a response's records; a TTL of 0 removes the record (RFC 6762 §10.1)."""
        for record in response.records:
            if record.rclass != CLASS_IN:
                continue
            key = record.key
            self.names.setdefault(key, record.name)
            goodbye = record.ttl == 0
            if record.rtype == PTR:
                targets = self.ptr.setdefault(key, [])
                target = record.value
                if goodbye:
                    targets[:] = [t for t in targets if name_key(t) != name_key(target)]
                elif all(name_key(t) != name_key(target) for t in targets):
                    targets.append(target)
            elif record.rtype == SRV:
                if goodbye:
                    self.srv.pop(key, None)
                else:
                    self.srv[key] = record.value
            elif record.rtype == TXT:
                if goodbye:
                    self.txt.pop(key, None)
                else:
                    self.txt[key] = record.value
            elif record.rtype in (A, AAAA):
                known = self.addresses.setdefault(key, [])
                if goodbye:
                    known[:] = [a for a in known if a != record.value]
                elif record.value not in known:
                    known.append(record.value)

    def instances(self, service: str | Name) -> list[Name]:
        """Instance names the PTR records for `service` point to."""
        return list(self.ptr.get(name_key(to_name(service)), []))

    def missing(self, service: str | Name) -> list[tuple[Name, int]]:
        """Questions still to ask to resolve every instance of `service` (RFC 6763 §12)."""
        instances = self.instances(service)
        if not instances:
            return [(to_name(service), PTR)]
        wanted: list[tuple[Name, int]] = []
        for instance in instances:
            key = name_key(instance)
            if key not in self.srv:
                wanted.append((instance, SRV))
            else:
                target = self.srv[key][3]
                if not self.addresses.get(name_key(target)):
                    wanted.append((target, A))
            if key not in self.txt:
                wanted.append((instance, TXT))
        return wanted

    def services(self, service: str | Name) -> list[ServiceInfo]:
        """Every fully resolved instance of `service` (SRV, TXT and an address known)."""
        out: list[ServiceInfo] = []
        for instance in self.instances(service):
            key = name_key(instance)
            srv = self.srv.get(key)
            strings = self.txt.get(key)
            if srv is None or strings is None:
                continue
            _, _, port, target = srv
            addresses = tuple(self.addresses.get(name_key(target), []))
            if not addresses:
                continue
            out.append(service_info(instance, target, port, addresses, parse_txt(strings)))
        return out


def service_info(
    instance: Name, target: Name, port: int, addresses: tuple[str, ...], txt: dict[str, str | None]
) -> ServiceInfo:
    """Assemble what the device would fetch: TXT `url` if given, else
    `<scheme>://<first address>:<port><path>` from TXT `scheme` (default https) and `path`.

    The address, not the .local host name, goes into the URL: a device that has just
    resolved it should not need a second mDNS lookup to connect.
    """
    problems: list[str] = []
    txtvers = _txt_get(txt, "txtvers")
    if txtvers is None:
        problems.append("TXT has no txtvers key")
    elif next(iter(txt)).lower() != "txtvers":
        problems.append("txtvers is not the first TXT key (RFC 6763 §6.7)")
    given_url = _txt_get(txt, "url")
    if given_url and looks_like_url(given_url):
        url = given_url
    else:
        scheme = _txt_get(txt, "scheme", "proto") or "https"
        path = _txt_get(txt, "path") or "/"
        if not path.startswith("/"):
            problems.append(f"TXT path {path!r} does not start with '/'")
            path = "/" + path
        address = addresses[0]
        host = f"[{address}]" if ":" in address else address
        url = f"{scheme}://{host}:{port}{path}"
    fingerprint = None
    fp_text = _txt_get(txt, *FINGERPRINT_KEYS)
    if fp_text is not None:
        fingerprint = normalize_fingerprint(fp_text)
        if fingerprint is None:
            problems.append(f"TXT fingerprint {fp_text!r} is not a SHA-256 value")
    fingerprint = fingerprint or fingerprint_from_url(url)
    return ServiceInfo(
        instance=name_text(instance),
        host=name_text(target),
        port=port,
        addresses=addresses,
        txt=txt,
        url=url,
        fingerprint=fingerprint,
        problems=tuple(problems),
    )


def reject_reason(
    response: Response,
    source: tuple[str, int],
    *,
    expected_source: tuple[str, int] | None,
    query_ids: set[int] | None,
) -> str | None:
    """Why the device drops this datagram, or None to keep it.

    RFC 6762 §18.2/§18.3/§18.11: only responses (QR 1) with opcode 0 and rcode 0 count. §6:
    multicast responses come from port 5353; in the loopback lab the responder's address:port
    stands in for that. §6.7: a legacy unicast reply echoes our query ID; for multicast and QU
    queries the ID is ignored (§18.1).
    """
    if not response.qr:
        return "query, not a response"
    if response.opcode != 0:
        return f"opcode {response.opcode} is not 0"
    if response.rcode != 0:
        return f"rcode {response.rcode} is not 0"
    if expected_source is not None:
        if (source[0], source[1]) != expected_source:
            return f"from {source[0]}:{source[1]}, not the queried responder"
    elif source[1] != MDNS_PORT:
        return f"source port {source[1]} is not 5353"
    if query_ids is not None and response.query_id not in query_ids:
        return f"id {response.query_id} matches no query sent"
    return None
