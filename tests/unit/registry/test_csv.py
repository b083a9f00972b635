"""CSV upload dialects, per-row errors, formula-injection escaping and export round trips."""

from __future__ import annotations

import pytest

from server.registry.csvio import CsvError, escape_cell, parse_upload, unescape_cell, write_export
from server.registry.service import ExportRow


def macs(data: bytes) -> list[tuple[int, str, str]]:
    return [(r.row, r.mac, r.location) for r in parse_upload(data)]


EXPECTED = [(2, "02:00:5e:00:01:01", "Room 1"), (3, "02:00:5e:00:01:02", "Lobby, east")]


@pytest.mark.parametrize(
    "data",
    [
        b'MAC ID,Location\n02:00:5E:00:01:01,Room 1\n02-00-5e-00-01-02,"Lobby, east"\n',
        b'MAC ID,Location\r\n02:00:5E:00:01:01,Room 1\r\n0200.5e00.0102,"Lobby, east"\r\n',
        b'\xef\xbb\xbfMAC ID,Location\r\n02005E000101,Room 1\r\n02:00:5e:00:01:02,"Lobby, east"\r\n',
        b"MAC ID;Location\n02:00:5E:00:01:01;Room 1\n02:00:5e:00:01:02;Lobby, east\n",
        b'"MAC ID";"Location"\r\n"02:00:5E:00:01:01";"Room 1"\r\n"02:00:5e:00:01:02";"Lobby, east"\r\n',
        b'mac id , location \n 02:00:5E:00:01:01 , Room 1 \n\n02:00:5e:00:01:02,"Lobby, east"\n',
    ],
    ids=[
        "comma-lf",
        "comma-crlf-bom-free",
        "bom",
        "semicolon",
        "quoted-semicolon",
        "spaces-blank-line",
    ],
)
def test_dialects_parse_to_the_same_rows(data: bytes) -> None:
    rows = macs(data)
    assert [(m, loc) for _, m, loc in rows] == [(m, loc) for _, m, loc in EXPECTED]


def test_every_bad_row_is_reported_with_row_column_value_and_fix() -> None:
    data = (
        b"MAC ID,Location\n"
        b"02:00:5e:00:01:01,ok\n"
        b"zz:00:5e:00:01:02,bad hex\n"
        b"ff:ff:ff:ff:ff:ff,broadcast\n"
        b"02:00:5e:00:01:01,duplicate\n"
        b"01:00:5e:00:00:01,multicast\n"
        b"02:00:5e:00:01:09," + b"x" * 201 + b"\n"
    )
    with pytest.raises(CsvError) as exc:
        parse_upload(data)
    errs = [(e.row, e.column) for e in exc.value.errors]
    assert errs == [(3, "MAC ID"), (4, "MAC ID"), (5, "MAC ID"), (6, "MAC ID"), (7, "Location")]
    by_row = {e.row: e for e in exc.value.errors}
    assert by_row[3].value == "zz:00:5e:00:01:02" and "hex digit" in by_row[3].message
    assert "broadcast" in by_row[4].message
    assert "duplicate of row 2" in by_row[5].message
    assert "multicast" in by_row[6].message
    assert "limit is 200" in by_row[7].message
    assert "nothing was stored" in str(exc.value)


def test_duplicates_in_other_spellings_are_caught() -> None:
    with pytest.raises(CsvError) as exc:
        parse_upload(b"MAC ID,Location\n02:00:5e:00:01:01,a\n02005E000101,b\n")
    assert exc.value.errors[0].row == 3


@pytest.mark.parametrize(
    ("data", "msg"),
    [
        (b"", "empty"),
        (b"Serial,Where\n1,2\n", "no 'MAC ID' column"),
        (b"MAC ID,Location\n", "no device rows"),
        (b"MAC ID,Location\n\xff\xfe02:00\n", "not UTF-8"),
        ("MAC ID,Location\n".encode("utf-16"), "not UTF-8"),
    ],
)
def test_whole_file_problems_are_named(data: bytes, msg: str) -> None:
    with pytest.raises(CsvError, match=msg):
        parse_upload(data)


def test_location_is_optional_column() -> None:
    assert macs(b"MAC ID\n02:00:5e:00:01:01\n") == [(2, "02:00:5e:00:01:01", "")]


@pytest.mark.parametrize("danger", ["=1+1", "+1", "-1", "@SUM(A1)", "\tx", "\rx"])
def test_formula_cells_are_escaped_and_round_trip(danger: str) -> None:
    assert escape_cell(danger) == "'" + danger
    assert unescape_cell(escape_cell(danger)) == danger


def test_safe_cells_are_left_alone() -> None:
    for safe in ("Room 1", "'quoted", "a=b", ""):
        assert escape_cell(safe) == safe
        assert unescape_cell(safe) == safe


def test_export_has_the_contract_header_and_is_formula_safe() -> None:
    text = write_export(
        [
            ExportRow(
                "02:00:5e:00:01:01",
                '=HYPERLINK("http://x")',
                "BCDF-GHJK",
                "2026-11-28T00:00:00Z",
                "awaiting_activation",
            ),
            ExportRow("02:00:5e:00:01:02", "Lobby", "", "", "awaiting_sign_in"),
        ]
    )
    lines = text.split("\r\n")
    assert lines[0] == "MAC ID,Location,Verification code,Code expires (UTC),State"
    assert lines[1].startswith("02:00:5e:00:01:01,\"'=HYPERLINK(")
    assert lines[2] == "02:00:5e:00:01:02,Lobby,,,awaiting_sign_in"


def test_an_export_can_be_uploaded_again() -> None:
    text = write_export(
        [ExportRow("02:00:5e:00:01:01", "-2nd floor", "BCDF-GHJK", "x", "awaiting_activation")]
    )
    assert macs(text.encode()) == [(2, "02:00:5e:00:01:01", "-2nd floor")]


def test_hundred_thousand_rows_parse() -> None:
    lines = ["MAC ID,Location"] + [
        f"02:00:{i >> 24 & 255:02x}:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:{i & 255:02x},Room {i}"
        for i in range(100_000)
    ]
    rows = parse_upload("\n".join(lines).encode())
    assert len(rows) == 100_000 and rows[-1].location == "Room 99999"
