"""The driver connection class that runs its I/O on the sidecar's loop: the parts that
need no server (the journal's integration tests run it against a real Cassandra)."""

from __future__ import annotations

import asyncio
import threading

import pytest
from larder_sidecar.journal.cassandra_loop import LoopConnection, LoopNotBound


def test_the_unbound_class_refuses_to_connect() -> None:
    with pytest.raises(LoopNotBound, match="for_running_loop"):
        LoopConnection.initialize_reactor()


async def test_each_journal_gets_a_class_bound_to_its_own_loop() -> None:
    first = LoopConnection.for_running_loop()
    second = LoopConnection.for_running_loop()
    assert first is not second
    assert first.on_loop_thread()
    assert not LoopConnection.on_loop_thread()
    first.initialize_reactor()


async def test_opening_a_connection_on_the_loop_thread_is_refused_not_deadlocked() -> None:
    bound = LoopConnection.for_running_loop()
    with pytest.raises(RuntimeError, match="from the event loop thread"):
        bound.factory(("127.0.0.1", 9), 1.0)


async def test_a_timer_fires_on_the_loop_and_a_cancelled_one_does_not() -> None:
    bound = LoopConnection.for_running_loop()
    fired: list[str] = []
    bound.create_timer(0.01, lambda: fired.append("kept"))
    bound.create_timer(0.01, lambda: fired.append("cancelled")).cancel()
    await asyncio.sleep(0.05)
    assert fired == ["kept"]


async def test_a_timer_armed_from_another_thread_runs_on_the_loop() -> None:
    bound = LoopConnection.for_running_loop()
    ran_on: list[int] = []
    await asyncio.to_thread(bound.create_timer, 0.01, lambda: ran_on.append(threading.get_ident()))
    await asyncio.sleep(0.05)
    assert ran_on == [threading.get_ident()]
