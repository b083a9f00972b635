"""The reliability report's readings: loop-lag histogram deltas, tracebacks, targets."""

from __future__ import annotations

import json
import math

from tests.helpers.reliability import (
    ProbeResult,
    count_tracebacks,
    lag_buckets,
    stall_between,
    table,
)
from tests.helpers.server import parse_prometheus

BEFORE = """\
# TYPE imprint_event_loop_lag_seconds histogram
imprint_event_loop_lag_seconds_bucket{le="0.001"} 100
imprint_event_loop_lag_seconds_bucket{le="0.025"} 110
imprint_event_loop_lag_seconds_bucket{le="0.05"} 111
imprint_event_loop_lag_seconds_bucket{le="0.1"} 112
imprint_event_loop_lag_seconds_bucket{le="5.0"} 112
imprint_event_loop_lag_seconds_bucket{le="+Inf"} 113
"""


def _buckets(text: str) -> dict[float, float]:
    return lag_buckets(parse_prometheus(text))


def test_the_worst_stall_is_the_highest_bucket_that_grew_during_the_probe() -> None:
    # Start-up put one sample past 5 s and one in (50, 100] ms; the probe adds 30 fast wake-ups
    # and two in (25, 50] ms: its worst is 50 ms, none over 50 ms.
    after = BEFORE.replace("} 100", "} 130").replace("} 110", "} 140")
    after = after.replace("} 111", "} 143").replace("} 112", "} 144").replace("} 113", "} 145")
    worst, over = stall_between(_buckets(BEFORE), _buckets(after))
    assert (worst, over) == (50.0, 0)


def test_samples_over_50_ms_are_counted_and_past_the_last_bucket_is_infinite() -> None:
    after = BEFORE.replace('"0.1"} 112', '"0.1"} 114').replace('"5.0"} 112', '"5.0"} 114')
    after = after.replace("} 113", "} 118")
    worst, over = stall_between(_buckets(BEFORE), _buckets(after))
    assert worst == math.inf and over == 5
    row = ProbeResult("flood", worst_stall_ms=worst).as_json()
    assert row["worst_stall_ms"] == ">5000"
    json.dumps(row, allow_nan=False)  # the report stays valid JSON


def test_a_scrape_without_the_histogram_is_an_error_not_a_zero_stall() -> None:
    try:
        lag_buckets(parse_prometheus("imprint_up 1\n"))
    except ValueError as exc:
        assert "imprint_event_loop_lag_seconds" in str(exc)
    else:
        raise AssertionError("expected ValueError")


def test_tracebacks_are_counted_in_human_and_json_logs() -> None:
    human = "ERROR x\nTraceback (most recent call last):\n  File ...\nValueError: y\n"
    js = json.dumps({"msg": "x", "exc": "Traceback (most recent call last):\n  File ..."})
    assert count_tracebacks(human + js + "\nINFO fine\n") == 2


def test_misses_name_each_target_not_met_and_the_table_has_a_row_per_probe() -> None:
    good = ProbeResult(
        "dhcp-flood",
        sent=10,
        valid_sent=100,
        valid_answered=100,
        worst_stall_ms=25.0,
        healthz_p50_ms=3.0,
    )
    bad = ProbeResult(
        "mdns-flood",
        sent=10,
        valid_sent=100,
        valid_answered=97,
        worst_stall_ms=100.0,
        healthz_p50_ms=150.0,
        crashes=1,
        tracebacks=2,
    )
    assert good.misses() == []
    assert len(bad.misses()) == 5 and "97.0 %" in bad.misses()[0]
    lines = table([good, bad]).splitlines()
    assert len(lines) == 4 and lines[2].startswith("| dhcp-flood | 10 | 100 | 100 | 100 | 25 |")
