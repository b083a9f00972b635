"""Device CSV files: the template, validated upload, and formula-safe export. Pure: bytes in, rows out.

Upload accepts UTF-8 with or without BOM, comma or semicolon, CRLF or LF, quoted fields. Every row
is checked before anything is stored, and every bad row is reported (row, column, value, what to
fix), so an admin fixes the file once instead of once per error.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass

from server.core.mac import MacError, normalize_mac
from server.registry.service import MAX_LOCATION, ExportRow, ImportRow

TEMPLATE_HEADER = ("MAC ID", "Location")
EXPORT_HEADER = ("MAC ID", "Location", "Verification code", "Code expires (UTC)", "State")
TEMPLATE = "MAC ID,Location\r\n"
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_MAX_ERRORS = 1000


@dataclass(frozen=True, slots=True)
class RowError:
    row: int
    column: str
    value: str
    message: str

    def as_dict(self) -> dict[str, object]:
        return {
            "row": self.row,
            "column": self.column,
            "value": self.value,
            "message": self.message,
        }


class CsvError(ValueError):
    """The file as a whole cannot be read (encoding, header); `errors` holds per-row faults."""

    def __init__(self, message: str, errors: list[RowError] | None = None) -> None:
        super().__init__(message)
        self.errors = errors or []


def escape_cell(value: str) -> str:
    """Defuse spreadsheet formula injection: prefix a leading = + - @ TAB CR with a quote."""
    return "'" + value if value.startswith(_FORMULA_START) else value


def unescape_cell(value: str) -> str:
    """Undo `escape_cell` so an exported file can be uploaded again unchanged."""
    if len(value) >= 2 and value[0] == "'" and value[1] in "=+-@\t\r":
        return value[1:]
    return value


def _decode(data: bytes) -> str:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise CsvError(
            f"the file is not UTF-8 (bad byte at line {line}); save it as 'CSV UTF-8' and upload again"
        ) from None
    if "\x00" in text:
        raise CsvError(
            "the file contains NUL bytes; it looks like a binary or UTF-16 file, "
            "save it as 'CSV UTF-8'"
        )
    return text


def _dialect(header_line: str) -> str:
    # A header of the template is two names: whichever separator it uses is the file's.
    if header_line.count(";") > header_line.count(","):
        return ";"
    return ","


def parse_upload(data: bytes) -> list[ImportRow]:
    """Parse and validate an upload; return the rows, or raise CsvError listing every bad row."""
    text = _decode(data)
    first_line = text.split("\n", 1)[0]
    if not first_line.strip():
        raise CsvError("the file is empty; start from the template (header 'MAC ID,Location')")
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=_dialect(first_line), strict=True)
    try:
        header = next(reader)
    except csv.Error as e:
        raise CsvError(f"line 1: {e}") from None
    names = [h.strip().lower() for h in header]
    try:
        mac_col = names.index("mac id")
    except ValueError:
        raise CsvError(
            f"the header has no 'MAC ID' column (found {', '.join(repr(h) for h in header)}); "
            "start from the template: MAC ID,Location"
        ) from None
    loc_col = names.index("location") if "location" in names else None
    rows: list[ImportRow] = []
    errors: list[RowError] = []
    first_seen: dict[str, int] = {}
    try:
        for fields in reader:
            rowno = reader.line_num
            if not fields or all(not f.strip() for f in fields):
                continue  # blank line
            raw_mac = fields[mac_col].strip() if mac_col < len(fields) else ""
            location = (
                unescape_cell(fields[loc_col].strip())
                if loc_col is not None and loc_col < len(fields)
                else ""
            )
            ok = True
            try:
                mac = normalize_mac(raw_mac)
            except MacError as e:
                errors.append(RowError(rowno, "MAC ID", raw_mac, str(e)))
                ok = False
            else:
                prev = first_seen.get(mac)
                if prev is not None:
                    errors.append(
                        RowError(
                            rowno, "MAC ID", raw_mac, f"duplicate of row {prev}; keep one of them"
                        )
                    )
                    ok = False
                else:
                    first_seen[mac] = rowno
            if len(location) > MAX_LOCATION:
                errors.append(
                    RowError(
                        rowno,
                        "Location",
                        location[:40] + "...",
                        f"location is {len(location)} characters; the limit is {MAX_LOCATION}",
                    )
                )
                ok = False
            elif any(ord(c) < 32 for c in location):
                errors.append(
                    RowError(
                        rowno,
                        "Location",
                        location,
                        "remove control characters (tabs, line breaks) from the location",
                    )
                )
                ok = False
            if ok:
                rows.append(ImportRow(rowno, mac, location))
            if len(errors) >= _MAX_ERRORS:
                break
    except csv.Error as e:
        errors.append(RowError(reader.line_num, "", "", f"the CSV structure is broken here: {e}"))
    if errors:
        more = " (showing the first 1000)" if len(errors) >= _MAX_ERRORS else ""
        raise CsvError(f"{len(errors)} bad row(s){more}; nothing was stored", errors)
    if not rows:
        raise CsvError("the file has a header but no device rows")
    return rows


def write_export(rows: Iterable[ExportRow]) -> str:
    """The export file: one row per device, formula-safe, re-uploadable (extra columns ignored)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow(EXPORT_HEADER)
    w.writerows((r.mac, escape_cell(r.location), r.code, r.expires_at, r.state) for r in rows)
    return buf.getvalue()
