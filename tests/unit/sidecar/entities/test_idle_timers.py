"""Passivation of idle entities through one heap of deadlines per component type."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Callable

import pytest
from larder_sidecar.entities.command import EntityKey
from larder_sidecar.entities.idle_timers import IdleTimers
from larder_sidecar.journal.memory import MemoryJournal
from larder_sidecar.model import Method

from .fakes import emit_one, make_host


async def until(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition never held"
        await asyncio.sleep(0.01)


class Sleeper:
    """Idle until `busy_until` (loop time); records when it was asked."""

    def __init__(self, busy_until: float = 0.0, fail: bool = False) -> None:
        self.busy_until = busy_until
        self.fail = fail
        self.asked: list[float] = []
        self.passivated = False

    def idle_due(self, now: float) -> float | None:
        self.asked.append(now)
        if self.fail:
            raise RuntimeError("a bug")
        if now < self.busy_until:
            return self.busy_until
        self.passivated = True
        return None


async def test_an_entity_that_worked_meanwhile_is_asked_again_at_its_new_deadline() -> None:
    timers = IdleTimers()
    now = asyncio.get_running_loop().time()
    early, late = Sleeper(), Sleeper(busy_until=now + 0.2)
    timers.schedule(late, now + 0.05)
    timers.schedule(early, now + 0.01)
    await until(lambda: late.passivated)
    assert early.passivated
    assert len(late.asked) == 2
    assert late.asked[1] >= now + 0.2
    assert len(timers) == 0


async def test_one_failing_entity_does_not_stop_the_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    timers = IdleTimers()
    now = asyncio.get_running_loop().time()
    bad, good, later = Sleeper(fail=True), Sleeper(), Sleeper()
    timers.schedule(bad, now)
    timers.schedule(good, now)
    timers.schedule(later, now + 0.05)
    with caplog.at_level(logging.ERROR):
        await until(lambda: later.passivated)
    assert good.passivated
    assert "passivating an idle entity failed" in caplog.text


async def test_an_entry_due_within_the_timer_granularity_is_due() -> None:
    # uvloop may run a timer set for `when` while loop.time() reads a little less.
    timers = IdleTimers()
    sleeper = Sleeper()
    timers.schedule(sleeper, asyncio.get_running_loop().time() + 0.001)
    timers._due()
    assert sleeper.passivated


async def test_an_entity_gone_before_its_deadline_is_not_kept_for_it() -> None:
    timers = IdleTimers()
    now = asyncio.get_running_loop().time()
    gone = Sleeper()
    timers.schedule(gone, now + 0.02)
    del gone
    gc.collect()
    kept = Sleeper()
    timers.schedule(kept, now + 0.03)
    await until(lambda: kept.passivated)
    assert len(timers) == 0


async def test_an_entity_passivates_its_timeout_after_its_last_command(method: Method) -> None:
    host, _stub = make_host(MemoryJournal(), emit_one, passivation=1.0)
    key = EntityKey("svc", "a")
    loop = asyncio.get_running_loop()
    await host.enqueue(method, "a", b"", ())
    await asyncio.sleep(0.6)
    await host.enqueue(method, "a", b"", ())
    last = loop.time()
    # Past the first command's deadline, before the second's.
    await asyncio.sleep(max(0.0, last + 0.5 - loop.time()))
    assert host.state(key) is not None
    await until(lambda: host.state(key) is None)
    assert loop.time() >= last + 1.0 - 0.01  # the loop's timers count milliseconds
    await host.shutdown()
