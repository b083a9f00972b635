"""How late the event loop runs its callbacks: the stall that DHCP, mDNS and HTTP all share.

One task sleeps `interval` seconds at a time and notes how much later than asked it woke; that
delay is the time some other callback held the loop. The figures go to `/metrics`:

- `imprint_event_loop_lag_seconds` (histogram): every wake-up's delay;
- `imprint_event_loop_lag_max_seconds` (gauge): the worst delay since start;
- `imprint_event_loop_busy_lag_seconds` (histogram): of each delay, at most the CPU time the
  loop's thread used meanwhile: `min(delay, thread CPU since the last wake-up)`. A delay spent
  running our own callbacks is counted whole; a delay spent waiting for a CPU (a busy host, a
  noisy neighbour, a paused VM) is not. On a shared machine the first histogram says how late
  Imprint answered, this one how much of that was Imprint's own work.

At the default 25 ms interval the probe wakes 40 times a second (a few microseconds each), and
a stall shorter than the interval can hide between two wake-ups only if it ends before the next
one is due, so stalls over 25 ms are always seen.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

from server.core.metrics import Registry

INTERVAL_S = 0.025
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class LoopLag:
    """Records each wake-up's delay; `run` is the probe task's body."""

    def __init__(self, metrics: Registry, interval: float = INTERVAL_S) -> None:
        if interval <= 0:
            raise ValueError(f"interval must be positive, got {interval}")
        self.interval = interval
        self.worst = 0.0
        self._hist = metrics.histogram(
            "imprint_event_loop_lag_seconds",
            "How much later than scheduled the event loop ran a timer (time another callback "
            f"held the loop), sampled every {interval * 1000:g} ms",
            buckets=BUCKETS,
        )
        gauge = metrics.gauge(
            "imprint_event_loop_lag_max_seconds", "The worst event-loop lag since start"
        )
        gauge.set_function(lambda: {(): self.worst})
        self._busy = metrics.histogram(
            "imprint_event_loop_busy_lag_seconds",
            "Of each event-loop lag, at most the CPU time the loop's thread used meanwhile: the "
            "part of the lag that was Imprint's own work, not waiting for a CPU",
            buckets=BUCKETS,
        )

    def observe(self, lag: float, cpu: float | None = None) -> None:
        """One wake-up `lag` seconds late, the loop's thread having used `cpu` seconds of CPU
        since the previous one (None: not known, the whole lag counts as busy)."""
        lag = max(lag, 0.0)
        self._hist.observe(lag)
        self._busy.observe(lag if cpu is None else min(lag, max(cpu, 0.0)))
        if lag > self.worst:
            self.worst = lag

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        cpu = time.thread_time()
        while True:
            due = loop.time() + self.interval
            await asyncio.sleep(self.interval)
            now_cpu = time.thread_time()
            self.observe(loop.time() - due, now_cpu - cpu)
            cpu = now_cpu


@contextlib.asynccontextmanager
async def running(metrics: Registry, interval: float = INTERVAL_S) -> AsyncIterator[LoopLag]:
    """The probe as a task for as long as the block runs."""
    lag = LoopLag(metrics, interval)
    task = asyncio.create_task(lag.run(), name="imprint-loop-lag")
    try:
        yield lag
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
