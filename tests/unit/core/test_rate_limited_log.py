"""RateLimitedLog: a burst per key, then one line per interval, and the held-back count said."""

from __future__ import annotations

import logging

import pytest

from server.core.logs import RateLimitedLog


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "t.rl"]


def test_a_flood_is_cut_to_the_burst_then_one_per_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = _Clock()
    notes = RateLimitedLog(logging.getLogger("t.rl"), every=2.0, burst=3, clock=clock)
    with caplog.at_level(logging.INFO, logger="t.rl"):
        sent = [notes.info("k", "line %d", i) for i in range(1000)]
        assert sent.count(True) == 3 and notes.held("k") == 997
        clock.now += 1.0  # half a token: still held
        assert notes.info("k", "line %d", 1000) is False
        clock.now += 1.0
        assert notes.info("k", "line %d", 1001) is True
    lines = _lines(caplog)
    assert lines[:3] == ["line 0", "line 1", "line 2"]
    assert lines[3] == "line 1001 (and 998 more like this not logged: over 3 per 2 s)"
    assert notes.held("k") == 0


def test_keys_are_limited_apart(caplog: pytest.LogCaptureFixture) -> None:
    notes = RateLimitedLog(logging.getLogger("t.rl"), every=60.0, burst=1, clock=_Clock())
    with caplog.at_level(logging.INFO, logger="t.rl"):
        assert notes.warning("a", "a1") and notes.warning("b", "b1")
        assert not notes.warning("a", "a2")
    assert _lines(caplog) == ["a1", "b1"]


def test_a_disabled_level_costs_nothing_and_holds_nothing(caplog: pytest.LogCaptureFixture) -> None:
    notes = RateLimitedLog(logging.getLogger("t.rl"), every=1.0, burst=1, clock=_Clock())
    with caplog.at_level(logging.WARNING, logger="t.rl"):
        assert notes.info("k", "x") is False
    assert notes.held("k") == 0 and _lines(caplog) == []


def test_bad_limits_are_refused() -> None:
    with pytest.raises(ValueError, match="burst"):
        RateLimitedLog(logging.getLogger("t.rl"), every=1.0, burst=0)
