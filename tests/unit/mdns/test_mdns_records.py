"""DNS-SD records: RFC 6763 TXT rules, RFC 6335 service names, what answers which question."""

from __future__ import annotations

from typing import Any

import pytest

from server.mdns.names import labels_to_text, name_key, text_to_labels
from server.mdns.records import (
    HOST_TTL,
    SERVICE_TTL,
    TYPE_A,
    TYPE_AAAA,
    TYPE_ANY,
    TYPE_PTR,
    TYPE_SRV,
    TYPE_TXT,
    RecordsError,
    ServiceRecords,
    TxtData,
    build_records,
    txt_strings,
)
from server.registry.model import ProvisioningEndpoint

FP = "0123456789abcdef" * 4
EP = ProvisioningEndpoint("https", "imprint.example", 8443, "/provision", FP)


def build(**kw: Any) -> ServiceRecords:
    args: dict[str, Any] = {"hostname": "imprint", "addresses": ["198.18.77.1"]}
    args.update(kw)
    return build_records(EP, **args)


def test_txt_starts_with_txtvers_and_carries_path_and_fingerprint() -> None:
    strings = txt_strings(EP)
    assert strings[0] == b"txtvers=1"
    assert b"path=/provision" in strings
    assert b"sha256=" + FP.encode() in strings
    assert all(len(s.split(b"=")[0]) <= 9 for s in strings)
    assert sum(len(s) + 1 for s in strings) <= 200


def test_fingerprint_with_colons_and_capitals_is_normalised() -> None:
    colon = ":".join(FP[i : i + 2] for i in range(0, 64, 2)).upper()
    ep = ProvisioningEndpoint("https", "h", 443, "/p", colon)
    assert b"sha256=" + FP.encode() in txt_strings(ep)


def test_no_fingerprint_no_key() -> None:
    ep = ProvisioningEndpoint("http", "h", 80, "/p", "")
    assert not any(s.startswith(b"sha256=") for s in txt_strings(ep))


def test_bad_fingerprint_is_refused() -> None:
    with pytest.raises(RecordsError, match="64 hex"):
        txt_strings(ProvisioningEndpoint("https", "h", 443, "/p", "abc"))


def test_txt_over_200_bytes_is_refused_naming_the_path() -> None:
    ep = ProvisioningEndpoint("https", "h", 443, "/" + "p" * 120, FP)
    with pytest.raises(RecordsError, match="200") as info:
        txt_strings(ep)
    assert "path" in str(info.value)


@pytest.mark.parametrize(
    "service",
    [
        "_imprint._tcp",
        "_imprint._tcp.local",
        "_imprint._tcp.local.",
        "_a._udp",
        "_abcdefghijklmno._tcp",
    ],
)
def test_valid_service_types(service: str) -> None:
    recs = build(service=service)
    assert recs.service_type.endswith("._tcp.local.") or recs.service_type.endswith("._udp.local.")


@pytest.mark.parametrize(
    "service",
    [
        "_abcdefghijklmnop._tcp",  # 16 characters (RFC 6335: at most 15)
        "imprint._tcp",
        "_imprint._sctp",
        "_-imprint._tcp",
        "_imp--rint._tcp",
        "_123._tcp",
        "_imprint",
        "_._tcp",
    ],
)
def test_invalid_service_types(service: str) -> None:
    with pytest.raises(RecordsError):
        build(service=service)


def test_host_and_instance_validation() -> None:
    with pytest.raises(RecordsError):
        build(hostname="bad_host")
    with pytest.raises(RecordsError):
        build(hostname="a.b")
    with pytest.raises(RecordsError):
        build(instance_name="x" * 64)
    with pytest.raises(RecordsError):
        build(instance_name="tab\there")
    with pytest.raises(RecordsError):
        build(addresses=["not-an-ip"])


def test_instance_name_with_dot_and_utf8_round_trips_as_one_label() -> None:
    recs = build(instance_name="Imprint v2.0 Café")
    inst = recs.records[1].labels
    assert inst[0] == "Imprint v2.0 Café".encode()
    assert text_to_labels(labels_to_text(inst)) == inst


def test_question_table() -> None:
    recs = build(addresses=["198.18.77.1", "fd00::1", "198.18.77.1"])
    rs = recs.records

    def kinds(name: str, qtype: int) -> tuple[list[int], list[int]]:
        sel = recs.select(name, qtype)
        assert sel is not None
        return [rs[i].rtype for i in sel[0]], [rs[i].rtype for i in sel[1]]

    assert kinds("_imprint._tcp.local.", TYPE_PTR) == (
        [TYPE_PTR],
        [TYPE_SRV, TYPE_TXT, TYPE_A, TYPE_AAAA],
    )
    assert kinds("_IMPRINT._TCP.LOCAL.", TYPE_PTR)[0] == [TYPE_PTR]
    assert kinds("Imprint._imprint._tcp.local.", TYPE_SRV) == ([TYPE_SRV], [TYPE_A, TYPE_AAAA])
    assert kinds("Imprint._imprint._tcp.local.", TYPE_TXT) == ([TYPE_TXT], [])
    assert kinds("Imprint._imprint._tcp.local.", TYPE_ANY) == (
        [TYPE_SRV, TYPE_TXT],
        [TYPE_A, TYPE_AAAA],
    )
    assert kinds("imprint.local.", TYPE_A) == ([TYPE_A], [TYPE_AAAA])  # duplicate address once
    assert kinds("imprint.local.", TYPE_AAAA) == ([TYPE_AAAA], [TYPE_A])
    assert kinds("_services._dns-sd._udp.local.", TYPE_PTR) == ([TYPE_PTR], [])
    assert recs.select("_other._tcp.local.", TYPE_PTR) is None
    assert recs.select("imprint.local.", TYPE_TXT) is None


def test_ttls_follow_rfc6762_section_10() -> None:
    recs = build(addresses=["198.18.77.1"])
    ttl = {r.rtype: r.ttl for r in recs.records}
    assert ttl[TYPE_A] == ttl[TYPE_SRV] == HOST_TTL
    assert ttl[TYPE_TXT] == ttl[TYPE_PTR] == SERVICE_TTL


def test_no_ipv6_address_means_no_aaaa_question_answered() -> None:
    recs = build(addresses=["198.18.77.1"])
    assert recs.select("imprint.local.", TYPE_AAAA) is None
    assert isinstance(recs.records[2].rdata, TxtData)


def test_name_text_escapes_round_trip() -> None:
    labels = (b"a.b", b"c\\d", b"\x00\xff", b"local")
    text = labels_to_text(labels)
    assert text == "a\\.b.c\\\\d.\\000\\255.local."
    assert text_to_labels(text) == labels
    assert name_key("ImPrInT.LOCAL.") == "imprint.local."
