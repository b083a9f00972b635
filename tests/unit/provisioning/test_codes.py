"""Verification codes: alphabet, entry normalisation, and the keyed digest/seal scheme."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidTag

from server.provisioning.codes import (
    ALPHABET,
    CodeFormatError,
    CodeVault,
    format_code,
    generate_code,
    load_or_create_key,
    normalize_code,
)


def test_alphabet_has_no_vowels_or_digits() -> None:
    assert ALPHABET == "BCDFGHJKLMNPQRSTVWXZ"
    assert not set(ALPHABET) & set("AEIOUY0123456789")


def test_generated_codes_use_only_the_alphabet_and_vary() -> None:
    codes = {generate_code() for _ in range(2000)}
    assert len(codes) == 2000  # 20^8 space: a collision here means a broken generator
    assert all(len(c) == 8 and set(c) <= set(ALPHABET) for c in codes)
    seen = set("".join(codes))
    assert seen == set(ALPHABET)


def test_generation_uses_the_given_random_source() -> None:
    assert generate_code(lambda n: 0) == "BBBBBBBB"
    assert generate_code(lambda n: n - 1) == "ZZZZZZZZ"
    assert generate_code(lambda n: 1) == "CBBBBBBB"  # base-20 digits, least significant first


def test_each_position_is_uniform_over_the_alphabet() -> None:
    from collections import Counter

    counts = [Counter[str]() for _ in range(8)]
    for _ in range(20_000):
        for i, ch in enumerate(generate_code()):
            counts[i][ch] += 1
    for c in counts:  # 1,000 expected per letter; 5 sigma is about 150
        assert set(c) == set(ALPHABET) and min(c.values()) > 800 and max(c.values()) < 1200


def test_display_and_entry_forms() -> None:
    assert format_code("BCDFGHJK") == "BCDF-GHJK"
    for typed in ("BCDF-GHJK", "bcdf-ghjk", " bcdf ghjk ", "bc-df-gh-jk", "BCDFGHJK"):
        assert normalize_code(typed) == "BCDFGHJK"


@pytest.mark.parametrize(
    ("typed", "msg"),
    [
        ("BCDF-GHJ", "8 letters"),
        ("BCDF-GHJA", "only the letters"),
        ("BCDF-GHJ1", "only the letters"),
        ("", "8 letters"),
    ],
)
def test_bad_entry_says_what_to_fix(typed: str, msg: str) -> None:
    with pytest.raises(CodeFormatError, match=msg):
        normalize_code(typed)


def test_digest_is_bound_to_the_mac_and_the_key() -> None:
    v1, v2 = CodeVault(b"k" * 32), CodeVault(b"j" * 32)
    d = v1.digest("02:00:5e:00:01:01", "BCDFGHJK")
    assert v1.matches("02:00:5e:00:01:01", "BCDFGHJK", d)
    assert not v1.matches("02:00:5e:00:01:02", "BCDFGHJK", d)
    assert not v1.matches("02:00:5e:00:01:01", "BCDFGHJL", d)
    assert not v2.matches("02:00:5e:00:01:01", "BCDFGHJK", d)
    assert b"BCDFGHJK" not in d


def test_seal_round_trips_only_for_the_same_mac() -> None:
    v = CodeVault(b"k" * 32)
    sealed = v.seal("02:00:5e:00:01:01", "BCDFGHJK")
    assert b"BCDFGHJK" not in sealed
    assert v.unseal("02:00:5e:00:01:01", sealed) == "BCDFGHJK"
    with pytest.raises(InvalidTag):
        v.unseal("02:00:5e:00:01:02", sealed)


def test_key_file_is_created_private_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "codes.key"
    k1 = load_or_create_key(path)
    assert len(k1) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_key(path) == k1


def test_short_key_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "codes.key"
    path.write_bytes(b"short")
    with pytest.raises(ValueError, match="shorter than 32 bytes"):
        load_or_create_key(path)
