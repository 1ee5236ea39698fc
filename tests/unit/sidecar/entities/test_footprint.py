"""What an active entity keeps between commands: thousands are alive at once
(docs/performance.md, *Per-entity memory*)."""

from __future__ import annotations

import asyncio
import gc
import weakref

import pytest
from larder_sidecar.entities.command import EntityKey
from larder_sidecar.entities.lifecycle import Event, IllegalTransition, Lifecycle, State
from larder_sidecar.journal.memory import MemoryJournal
from larder_sidecar.model import Method

from .fakes import emit_one, make_host


async def test_an_idle_entity_keeps_nothing_of_its_last_command(method: Method) -> None:
    host, _stub = make_host(MemoryJournal(), emit_one)
    future = host.enqueue(method, "a", b"", ())
    outcome = await future
    assert outcome.kind == "reply"
    await asyncio.sleep(0)  # the entity's loop is back waiting for a command
    assert host.state(EntityKey("svc", "a")) is State.ACTIVE
    gone = weakref.ref(future)
    del future, outcome
    gc.collect()
    # The command's future holds its outcome, which holds the reply message.
    assert gone() is None
    await host.shutdown()


async def test_an_entity_keeps_no_instance_dict(method: Method) -> None:
    host, _stub = make_host(MemoryJournal(), emit_one)
    await host.enqueue(method, "a", b"", ())
    (entity,) = host._entities.values()
    assert not hasattr(entity, "__dict__")
    assert not hasattr(entity.records, "__dict__")
    await host.shutdown()


def test_an_illegal_move_names_the_entity_by_its_key() -> None:
    lifecycle = Lifecycle(EntityKey("svc", "e"))
    with pytest.raises(IllegalTransition, match="entity svc/e: 'handle' is not legal"):
        lifecycle.fire(Event.HANDLE)
