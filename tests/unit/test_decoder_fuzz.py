"""Every decoder of untrusted input, fuzzed at CI size: only its documented error, sane results.

The targets, errors and seeds are tests/helpers/fuzztargets.py, the same as the million-input
bench (bench/reliability/fuzz.py). DHCP decode and the mDNS query decoders have their own
fuzz tests (tests/unit/dhcp/test_dhcp_fuzz.py, tests/unit/mdns/test_mdns_codec.py); these
cover the rest. Inputs: random bytes, and seeds with bytes replaced, inserted, deleted,
format pieces inserted, and the end cut off.
"""

from __future__ import annotations

import ipaddress
import json
from datetime import datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.core.mac import normalize_mac
from server.dhcp.probe import ServerAnswer
from server.mdns.codec import decode_records, encode_response
from server.mdns.frames import MDNS_PORT, FrameDatagram
from server.mdns.records import build_records
from server.registry.csvio import CsvError, parse_upload
from server.registry.model import decode_cursor, encode_cursor, parse_iso
from server.registry.service import ImportRow
from tests.helpers.fuzztargets import ENDPOINT, TARGETS, Target

FUZZED = [
    "mdns-records",
    "mdns-frame",
    "netlink",
    "json",
    "form",
    "csv",
    "cursor",
    "mac",
    "iso",
    "dhcp-offer",
]


@st.composite
def inputs(draw: st.DrawFn, target: Target) -> bytes:
    if draw(st.integers(0, 4)) == 0:
        return draw(st.binary(max_size=min(target.max_len, 600)))
    data = bytearray(draw(st.sampled_from(target.seeds())))
    for _ in range(draw(st.integers(1, 6))):
        at = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from("ridtc" if target.tokens else "ridc"))
        if op == "r" and at < len(data):
            data[at] = draw(st.integers(0, 255))
        elif op == "i":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif op == "d":
            del data[at : at + draw(st.integers(1, 16))]
        elif op == "t":
            data[at:at] = draw(st.sampled_from(target.tokens))
        elif op == "c":
            del data[at:]
    return bytes(data[: target.max_len])


def check_sane(name: str, data: bytes, result: object) -> None:
    """What a decoder returned is what its callers rely on."""
    if name == "mdns-frame":
        assert isinstance(result, FrameDatagram)
        assert result.dst_port == MDNS_PORT and result.version in (4, 6)
        assert (
            result.payload in data and ipaddress.ip_address(result.src_ip).version == result.version
        )
    elif name == "netlink":
        assert isinstance(result, tuple)
        neighbours, _done = result
        for n in neighbours:
            assert len(bytes.fromhex(n.mac.replace(":", ""))) == 6
            ipaddress.ip_address(n.ip)
    elif name == "json":
        # Compared as text: NaN (which json.loads accepts) is not equal to itself.
        assert json.dumps(result) == json.dumps(json.loads(data.decode("utf-8")))
    elif name == "form":
        assert isinstance(result, dict)
    elif name == "csv":
        assert isinstance(result, list) and result
        assert all(normalize_mac(row.mac) == row.mac for row in result)
        assert len({row.mac for row in result}) == len(result)
    elif name == "mac":
        assert isinstance(result, str) and normalize_mac(result) == result
    elif name == "cursor":
        assert isinstance(result, tuple)
        before, mac = result
        # base64 decoding skips characters outside its alphabet, so compare what they name.
        assert decode_cursor(encode_cursor(mac, before=before)) == result
    elif name == "iso":
        assert isinstance(result, datetime)
        assert parse_iso(result.strftime("%Y-%m-%dT%H:%M:%SZ")) == result
    elif name == "dhcp-offer":
        assert result is None or isinstance(result, ServerAnswer)
        if result is not None:
            ipaddress.IPv4Address(result.offered)
    elif name == "mdns-records":
        assert isinstance(result, tuple)
        _flags, records = result
        assert all(r.name.endswith(".") for r in records)


# aiohttp's request.post() leaves the temporary file of a file part unclosed when a later part
# fails to parse; it is closed when collected, with a ResourceWarning (not the decoder's error).
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("name", FUZZED)
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_decoder_raises_only_its_own_error(name: str, data: st.DataObject) -> None:
    target = TARGETS[name]
    raw = data.draw(inputs(target))
    try:
        result = target.call(raw)
    except target.allowed:
        return
    check_sane(name, raw, result)


def test_every_seed_decodes() -> None:
    """The seeds are valid inputs, so mutations start from the decoders' deep paths."""
    for name in FUZZED:
        target = TARGETS[name]
        for seed in target.seeds():
            assert len(seed) <= target.max_len
            try:
                result = target.call(seed)
            except target.allowed:
                continue
            check_sane(name, seed, result)


@settings(max_examples=200, deadline=None)
@given(
    rows=st.lists(
        st.tuples(
            st.binary(min_size=6, max_size=6).map(lambda b: bytes([b[0] & 0xFE | 0x02]) + b[1:]),
            st.text(st.characters(codec="utf-8", exclude_characters="\r\n\x00"), max_size=30),
        ),
        min_size=1,
        max_size=8,
        unique_by=lambda r: r[0],
    ),
    sep=st.sampled_from([",", ";"]),
)
def test_csv_rows_written_out_read_back(rows: list[tuple[bytes, str]], sep: str) -> None:
    def quote(cell: str) -> str:
        return '"' + cell.replace('"', '""') + '"'

    text = f"MAC ID{sep}Location\r\n" + "".join(
        f"{mac.hex(':')}{sep}{quote(loc)}\r\n" for mac, loc in rows
    )
    try:
        parsed = parse_upload(text.encode())
    except CsvError as e:  # only a location the import refuses (formula, length, ...)
        assert e.errors and all(err.column == "Location" for err in e.errors)
        return
    expected = [ImportRow(i + 2, mac.hex(":"), loc.strip()) for i, (mac, loc) in enumerate(rows)]
    assert [(r.mac, r.location) for r in parsed] == [(r.mac, r.location) for r in expected]


def test_mdns_response_records_read_back() -> None:
    records = build_records(
        ENDPOINT, hostname="imprint", addresses=["198.18.77.1", "fd00::1"], service="_imprint._tcp"
    )
    _flags, decoded = decode_records(encode_response(records.records))
    # Names come back case-folded (the key they are compared by).
    assert {(r.name, r.rtype) for r in decoded} == {
        (r.name.lower(), r.rtype) for r in records.records
    }
