"""Event-sourced entities through the real sidecar: commands, journal, snapshots, failures."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from larder_sidecar.app import Sidecar
from larder_sidecar.journal.base import persistence_id
from larder_sidecar.journal.memory import MemoryJournal

from .conftest import Client, SidecarFactory
from .user_function import UserFunction


async def test_commands_persist_events_and_reply(
    user_function: UserFunction, start_sidecar: SidecarFactory, connect: Callable[[Sidecar], Client]
) -> None:
    journal = MemoryJournal()
    client = connect(await start_sidecar(user_function, journal=journal))
    assert await client.add("a", 2) == 2
    assert await client.add("a", 3) == 5
    assert await client.add("b", 10) == 10
    assert await client.get("a") == 5
    recovery = await journal.load(persistence_id("counter", "a"))
    assert recovery.last_sequence_nr == 2
    # One stream per entity: a single Init each.
    assert sorted(i.entity_id for i in user_function.record.inits) == ["a", "b"]


async def test_commands_for_one_entity_run_in_order(
    user_function: UserFunction, start_sidecar: SidecarFactory, connect: Callable[[Sidecar], Client]
) -> None:
    client = connect(await start_sidecar(user_function))
    results = await asyncio.gather(*(client.add("x", 1) for _ in range(20)))
    assert sorted(results) == list(range(1, 21))
    assert await client.get("x") == 20
