"""Claiming our names (RFC 6762 §8-9): probe packets, conflict detection, renaming. Pure."""

from __future__ import annotations

import dnslib
from scapy.layers.dns import DNS

from server.mdns.codec import decode_records, encode_response
from server.mdns.probe import Prober, next_host_name, next_instance_name
from server.mdns.records import ServiceRecords, build_records
from server.registry.model import ProvisioningEndpoint

ENDPOINT = ProvisioningEndpoint("https", "198.18.77.1", 8443, "/provision", "ab" * 32)


def build(instance: str, host: str) -> ServiceRecords:
    return build_records(ENDPOINT, hostname=host, addresses=["198.18.77.1"], instance_name=instance)


def peer_response(instance: str = "Imprint", host: str = "other", port: int = 9999) -> bytes:
    """What another responder answers for its own records (dnslib, not our encoder)."""
    d = dnslib.DNSRecord(dnslib.DNSHeader(qr=1, aa=1))
    name = f"{instance}._imprint._tcp.local."
    d.add_answer(dnslib.RR(name, dnslib.QTYPE.SRV, rdata=dnslib.SRV(0, 0, port, f"{host}.local.")))
    d.add_answer(dnslib.RR(name, dnslib.QTYPE.TXT, rdata=dnslib.TXT(["txtvers=1"])))
    d.add_ar(dnslib.RR(f"{host}.local.", dnslib.QTYPE.A, rdata=dnslib.A("198.18.77.11")))
    return bytes(d.pack())


def test_names_are_numbered_as_rfc_6763_and_6762_suggest() -> None:
    assert next_instance_name("Imprint") == "Imprint (2)"
    assert next_instance_name("Imprint (2)") == "Imprint (3)"
    assert next_instance_name("Imprint (9)") == "Imprint (10)"
    assert next_host_name("imprint", "imprint") == "imprint-2"
    assert next_host_name("imprint-2", "imprint") == "imprint-3"
    # A configured name that ends in digits is not ours to count up.
    assert next_host_name("lab-7", "lab-7") == "lab-7-2"


def test_probe_asks_any_for_both_names_with_qu_first_and_our_records_as_authority() -> None:
    p = Prober("Imprint", "imprint", build)
    first, later = DNS(p.probe(first=True)), DNS(p.probe(first=False))
    assert first.qr == 0 and first.id == 0
    assert [(q.qname, q.qtype, q.unicastresponse) for q in first.qd] == [
        (b"Imprint._imprint._tcp.local.", 255, 1),
        (b"imprint.local.", 255, 1),
    ]
    assert [q.unicastresponse for q in later.qd] == [0, 0]
    assert sorted(rr.type for rr in first.ns) == [1, 16, 33]  # A, TXT, SRV: the unique ones
    assert all(rr.cacheflush == 0 for rr in first.ns)  # §10.2: no cache-flush in a probe


def test_a_peer_answering_with_our_instance_name_is_a_conflict_and_we_rename() -> None:
    p = Prober("Imprint", "imprint", build)
    flags, records = decode_records(peer_response())
    assert p.conflicts(flags, records) == (True, False)
    assert p.rename(True, False)
    assert (p.instance, p.host) == ("Imprint (2)", "imprint")
    assert p.records.instance == "Imprint (2)._imprint._tcp.local."
    # The same peer holds nothing of ours any more.
    assert p.conflicts(flags, records) == (False, False)


def test_a_peer_with_our_host_name_renames_the_host() -> None:
    p = Prober("Imprint", "imprint", build)
    flags, records = decode_records(peer_response(instance="Printer", host="imprint"))
    assert p.conflicts(flags, records) == (False, True)
    p.rename(False, True)
    assert (p.instance, p.host, p.records.host) == ("Imprint", "imprint-2", "imprint-2.local.")


def test_our_own_records_echoed_and_queries_are_not_conflicts() -> None:
    p = Prober("Imprint", "imprint", build)
    ours = encode_response(p.records.records)
    assert p.conflicts(*decode_records(ours)) == (False, False)
    # A probe (a query) from a peer is not a response: §8.2 tie-breaking is not done.
    flags, records = decode_records(Prober("Imprint", "other", build).probe(first=True))
    assert p.conflicts(flags, records) == (False, False)


def test_renaming_stops_after_fifteen_conflicts() -> None:
    p = Prober("Imprint", "imprint", build)
    for _ in range(15):
        assert p.rename(True, False)
    assert not p.rename(True, False)
    assert p.instance == "Imprint (16)"


def test_announcement_and_goodbye_carry_every_record() -> None:
    p = Prober("Imprint", "imprint", build)
    hello, bye = DNS(p.announcement()), DNS(p.goodbye())
    assert hello.qr == 1 and hello.ancount == len(p.records.records)
    assert all(rr.ttl > 0 for rr in hello.an)
    assert bye.ancount == len(p.records.records) and all(rr.ttl == 0 for rr in bye.an)
