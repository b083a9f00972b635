"""The event-loop lag probe sees a callback that holds the loop, and nothing when none does."""

from __future__ import annotations

import asyncio
import time

import pytest

from server.core import looplag
from server.core.metrics import Registry


def _over(metrics: Registry, bound: float) -> float:
    """Samples of imprint_event_loop_lag_seconds above `bound` (from the rendered text)."""
    total = below = 0.0
    for line in metrics.render().splitlines():
        if line.startswith("imprint_event_loop_lag_seconds_count"):
            total = float(line.split()[-1])
        if line.startswith(f'imprint_event_loop_lag_seconds_bucket{{le="{bound}"}}'):
            below = float(line.split()[-1])
    return total - below


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
