"""What every reliability probe (bench/reliability/, tests/e2e) reports, and the readings it is made of.

A probe runs hostile traffic (or a crash) against a real `imprint serve` and ends with one
`ProbeResult`. Its JSON keys are the same for every probe (`KEYS`), so the suite's report is one
table; keys a probe has no reading for are `null`, and probe-specific figures go in `extra`
(merged into the JSON object). The readings:

- `sent`: hostile packets, requests or connections sent; `valid_sent` / `valid_answered`: the
  well-formed traffic sent beside them and how much of it got its answer;
- `worst_stall_ms`: from the server's own loop-lag histogram (`imprint_event_loop_lag_seconds`,
  a sample every 25 ms), the upper edge of the highest bucket that grew during the probe, so
  "50" means no callback held the loop longer than 50 ms (within one bucket); `stalls_over_50ms`
  counts the samples above 50 ms; `worst_busy_stall_ms` is the same read of
  `imprint_event_loop_busy_lag_seconds`, the part of each lag the loop's thread spent on CPU:
  on a shared machine a lag can be time spent waiting for a core, which this one leaves out;
- `healthz_p50_ms`: the median time of `GET /healthz`, asked every 100 ms during the probe;
- `rss_before_kb` / `rss_after_kb`: the server's VmRSS before the probe and after it;
- `crashes`: server processes that exited when they should not have; `tracebacks`: tracebacks
  in the server's log.
"""

from __future__ import annotations

import math
import statistics
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

KEYS = (
    "probe",
    "sent",
    "valid_sent",
    "valid_answered",
    "valid_answered_pct",
    "worst_stall_ms",
    "stalls_over_50ms",
    "worst_busy_stall_ms",
    "healthz_p50_ms",
    "rss_before_kb",
    "rss_after_kb",
    "crashes",
    "tracebacks",
)

# The targets.
VALID_ANSWERED_MIN_PCT = 99.0
WORST_STALL_MAX_MS = 50.0
HEALTHZ_P50_MAX_MS = 100.0

LAG_HISTOGRAM = "imprint_event_loop_lag_seconds"
BUSY_HISTOGRAM = "imprint_event_loop_busy_lag_seconds"
LAG_LARGEST_BUCKET_S = 5.0  # server/core/looplag.py BUCKETS[-1]
TRACEBACK = "Traceback (most recent call last)"


@dataclass
class ProbeResult:
    probe: str
    sent: int = 0
    valid_sent: int | None = None
    valid_answered: int | None = None
    worst_stall_ms: float | None = None
    stalls_over_50ms: int | None = None
    worst_busy_stall_ms: float | None = None
    healthz_p50_ms: float | None = None
    rss_before_kb: int | None = None
    rss_after_kb: int | None = None
    crashes: int = 0
    tracebacks: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def valid_answered_pct(self) -> float | None:
        if not self.valid_sent or self.valid_answered is None:
            return None
        return round(100.0 * self.valid_answered / self.valid_sent, 2)

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {k: getattr(self, k) for k in KEYS}
        for key in ("worst_stall_ms", "worst_busy_stall_ms"):
            if out[key] == math.inf:  # past the histogram's largest bucket
                out[key] = f">{LAG_LARGEST_BUCKET_S * 1000:g}"
        out.update(self.extra)
        return out

    def misses(self) -> list[str]:
        """The targets this result does not meet, in words (empty when it meets them all)."""
        out = []
        pct = self.valid_answered_pct
        if pct is not None and pct < VALID_ANSWERED_MIN_PCT:
            out.append(f"valid answered {pct} % < {VALID_ANSWERED_MIN_PCT} %")
        if self.worst_stall_ms is not None and self.worst_stall_ms > WORST_STALL_MAX_MS:
            out.append(f"worst stall {self.worst_stall_ms:g} ms > {WORST_STALL_MAX_MS:g} ms")
        if self.healthz_p50_ms is not None and self.healthz_p50_ms >= HEALTHZ_P50_MAX_MS:
            out.append(f"/healthz p50 {self.healthz_p50_ms} ms >= {HEALTHZ_P50_MAX_MS:g} ms")
        if self.crashes:
            out.append(f"{self.crashes} crashes")
        if self.tracebacks:
            out.append(f"{self.tracebacks} tracebacks in the log")
        return out


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def table(results: list[ProbeResult]) -> str:
    """A Markdown table of the results, one row per probe."""
    head = [k for k in KEYS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        row = r.as_json()
        lines.append("| " + " | ".join(_cell(row[k]) for k in head) + " |")
    return "\n".join(lines)


def rss_kb(pid: int) -> int | None:
    """VmRSS of a live process in KiB; None once it is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return None


def count_tracebacks(log_text: str) -> int:
    """Tracebacks in a server log, human or JSON (a JSON line's `exc` holds the same words)."""
    return log_text.count(TRACEBACK)


# A histogram's cumulative bucket counts: upper edge in seconds (math.inf for +Inf) -> count.
Buckets = dict[float, float]


def lag_buckets(
    samples: Mapping[tuple[str, frozenset[tuple[str, str]]], float], histogram: str = LAG_HISTOGRAM
) -> Buckets:
    """A loop-lag histogram's buckets out of parsed /metrics samples."""
    out: Buckets = {}
    for (name, labels), value in samples.items():
        if name != histogram + "_bucket":
            continue
        le = dict(labels).get("le")
        if le is not None:
            out[math.inf if le == "+Inf" else float(le)] = value
    if not out:
        raise ValueError(f"no {histogram} histogram in /metrics")
    return out


def stall_between(before: Buckets, after: Buckets) -> tuple[float, int]:
    """(worst stall in ms, samples over 50 ms) among the wake-ups between two scrapes.

    The worst stall is the upper edge of the highest bucket whose count grew; a growth only in
    +Inf is reported as infinity (longer than the largest bucket).
    """
    edges = sorted(after)
    worst = 0.0
    previous_growth = 0.0
    for edge in edges:
        growth = after[edge] - before.get(edge, 0.0)
        if growth > previous_growth:  # samples that landed in (previous edge, edge]
            worst = edge
        previous_growth = growth
    over = (after[math.inf] - before.get(math.inf, 0.0)) - (
        after.get(WORST_STALL_MAX_MS / 1000, 0.0) - before.get(WORST_STALL_MAX_MS / 1000, 0.0)
    )
    return worst * 1000.0, int(over)


class HealthzSampler:
    """Asks `/healthz` every `interval` seconds in a thread, for as long as the block runs.

    `get` makes one request and returns its HTTP status (raising on a transport failure); a
    failed or non-200 request counts as a miss, and its time is still recorded.
    """

    def __init__(self, get: Callable[[], int], interval: float = 0.1) -> None:
        self._get = get
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="healthz-sampler", daemon=True)
        self.times_ms: list[float] = []
        self.misses = 0

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.perf_counter()
            try:
                ok = self._get() == 200
            except Exception:  # noqa: BLE001 - a refused or timed-out request is a reading
                ok = False
            self.times_ms.append((time.perf_counter() - started) * 1000.0)
            if not ok:
                self.misses += 1
            self._stop.wait(max(0.0, self._interval - (time.perf_counter() - started)))

    @property
    def p50_ms(self) -> float | None:
        return round(statistics.median(self.times_ms), 2) if self.times_ms else None

    def __enter__(self) -> HealthzSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
