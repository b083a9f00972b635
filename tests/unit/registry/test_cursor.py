"""Device-list cursors: opaque, round-trip exactly, and refuse anything the server did not make."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.registry.model import CursorError, decode_cursor, encode_cursor

MACS = st.lists(st.integers(0, 255), min_size=6, max_size=6).map(
    lambda b: ":".join(f"{x:02x}" for x in b)
)


@given(MACS, st.booleans())
def test_a_cursor_round_trips(mac: str, before: bool) -> None:
    cursor = encode_cursor(mac, before=before)
    assert decode_cursor(cursor) == (before, mac)
    assert cursor.isascii() and "=" not in cursor and "/" not in cursor and "+" not in cursor
    assert mac not in cursor  # opaque: a client cannot build one by hand and rely on it


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "zz",
        "a",
        "=" * 8,
        "x" * 65,
        "é",
        "YTow",
        "Yzow MjowMDo1ZTowMDowMTowMQ",
        "YTpBQTpCQjpDQzpERDpFRTpGRg",
    ],
)
def test_anything_else_is_refused_with_what_to_do(bad: str) -> None:
    with pytest.raises(CursorError, match="not one this server gave.*next_cursor"):
        decode_cursor(bad)


@given(st.text(max_size=80))
def test_no_text_crashes_the_decoder(text: str) -> None:
    try:
        before, mac = decode_cursor(text)
    except CursorError:
        return
    # Only a well-formed cursor decodes, and what it gives is a MAC that encodes back to it.
    assert len(mac) == 17 and decode_cursor(encode_cursor(mac, before=before)) == (before, mac)
