"""Per-source token buckets: burst, refill, clock steps, bounded memory."""

from __future__ import annotations

import pytest

from server.core.ratelimit import TokenBuckets


def test_burst_then_refill_at_rate() -> None:
    b = TokenBuckets(rate=2.0, burst=3)
    assert [b.allow("a", 10.0) for _ in range(4)] == [True, True, True, False]
    assert b.allow("a", 10.4) is False  # 0.8 token
    assert b.allow("a", 10.5) is True  # 1.0 token
    assert b.allow("a", 100.0) and b.allow("a", 100.0) and b.allow("a", 100.0)
    assert b.allow("a", 100.0) is False  # refill caps at the burst


def test_clock_stepping_back_neither_mints_nor_takes_tokens() -> None:
    b = TokenBuckets(rate=1.0, burst=1)
    assert b.allow("a", 50.0)
    assert b.allow("a", 10.0) is False
    assert b.allow("a", 50.9) is False
    assert b.allow("a", 51.0) is True


def test_state_is_bounded_and_evicts_least_recently_used() -> None:
    b = TokenBuckets(rate=0.001, burst=1, max_keys=3)
    for key in ("a", "b", "c"):
        assert b.allow(key, 0.0)
    assert b.allow("a", 0.0) is False  # touches a: b is now the oldest
    assert b.allow("d", 0.0)  # evicts b
    assert len(b) == 3
    assert b.allow("a", 0.0) is False  # a kept its empty bucket
    assert b.allow("b", 0.0) is True  # b was forgotten: full bucket again


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError):
        TokenBuckets(rate=0, burst=1)
    with pytest.raises(ValueError):
        TokenBuckets(rate=1, burst=0.5)
