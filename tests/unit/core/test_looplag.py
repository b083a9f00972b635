"""The event-loop lag probe sees a callback that holds the loop, and nothing when none does."""

from __future__ import annotations

import asyncio
import time

import pytest

from server.core import looplag
from server.core.metrics import Registry


def _over(metrics: Registry, bound: float, name: str = "imprint_event_loop_lag_seconds") -> float:
    """Samples of histogram `name` above `bound` (from the rendered text)."""
    total = below = 0.0
    for line in metrics.render().splitlines():
        if line.startswith(f"{name}_count"):
            total = float(line.split()[-1])
        if line.startswith(f'{name}_bucket{{le="{bound}"}}'):
            below = float(line.split()[-1])
    return total - below


BUSY = "imprint_event_loop_busy_lag_seconds"


async def test_a_callback_burning_cpu_is_busy_lag_and_one_that_waits_is_not() -> None:
    metrics = Registry()
    async with looplag.running(metrics, interval=0.01):
        await asyncio.sleep(0.05)
        spin_until = time.thread_time() + 0.12
        while time.thread_time() < spin_until:  # our own work, as a slow decoder would do
            pass
        await asyncio.sleep(0.05)
    assert _over(metrics, 0.05) >= 1 and _over(metrics, 0.05, BUSY) >= 1
    metrics = Registry()
    async with looplag.running(metrics, interval=0.01):
        await asyncio.sleep(0.05)
        # The thread holds the loop but uses no CPU: what a host too busy to schedule us
        # looks like from inside. Late, but not our work.
        time.sleep(0.12)  # noqa: ASYNC251
        await asyncio.sleep(0.05)
    assert _over(metrics, 0.05) >= 1 and _over(metrics, 0.05, BUSY) == 0


async def test_a_blocking_callback_is_measured() -> None:
    metrics = Registry()
    async with looplag.running(metrics, interval=0.01) as lag:
        await asyncio.sleep(0.05)
        time.sleep(0.12)  # noqa: ASYNC251 - holding the loop, as a slow decoder would
        await asyncio.sleep(0.05)
    assert lag.worst >= 0.1
    assert _over(metrics, 0.05) >= 1
    assert "imprint_event_loop_lag_max_seconds 0.1" in metrics.render()


async def test_an_idle_loop_is_sampled_every_interval() -> None:
    metrics = Registry()
    async with looplag.running(metrics, interval=0.01) as lag:
        await asyncio.sleep(0.2)
    count = [
        ln
        for ln in metrics.render().splitlines()
        if ln.startswith("imprint_event_loop_lag_seconds_count")
    ]
    assert 10 <= float(count[0].split()[-1]) <= 20
    assert lag.worst < 0.5  # nothing held the loop (generous: the machine is shared)


def test_interval_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        looplag.LoopLag(Registry(), interval=0)
