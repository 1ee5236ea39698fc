"""The operator's own periodic work: runs on schedule, survives failures, stops when told."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from larder_operator.resync import Periodic, for_each


async def test_ticks_repeat_and_a_failing_tick_does_not_end_the_task(caplog: Any) -> None:
    ticks = 0
    third = asyncio.Event()

    async def tick() -> None:
        nonlocal ticks
        ticks += 1
        if ticks == 1:
            raise RuntimeError("boom")
        if ticks == 3:
            third.set()

    periodic = Periodic("test resync", 0.01, tick)
    periodic.start()
    await asyncio.wait_for(third.wait(), timeout=5)
    await periodic.stop()
    assert "test resync failed; it runs again in 0.01 s" in caplog.text
    assert "boom" in caplog.text
    # Stopped by its owner: not reported as an unexpected end.
    assert "cancelled by someone other than its owner" not in caplog.text


async def test_stop_before_start_and_twice_is_harmless() -> None:
    async def tick() -> None:
        return None

    periodic = Periodic("idle", 60, tick)
    await periodic.stop()
    periodic.start()
    with pytest.raises(RuntimeError, match="already running"):
        periodic.start()
    await periodic.stop()
    await periodic.stop()


async def test_for_each_bounds_concurrency_and_isolates_failures(caplog: Any) -> None:
    running = 0
    peak = 0
    done: list[int] = []

    async def action(item: int) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.01)
        running -= 1
        if item == 3:
            raise ValueError("item three")
        done.append(item)

    await for_each(range(10), action, limit=3)
    assert peak == 3
    assert sorted(done) == [0, 1, 2, 4, 5, 6, 7, 8, 9]
    assert "periodic work on 3 failed" in caplog.text
