"""The user function of these tests, on Larder's Python SDK, run as its own process.

    LEDGER_PROTOS=<dir holding larder_sctest/ledger_pb2.py> SNAPSHOT_EVERY=5 PORT=0 \
        python -m tests.integration.sidecar_cassandra.function

It prints `listening on <port>` once serving. `Counter.Add` emits one `Added` event
carrying the command's tag; `Register` is a value entity.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import sys
from typing import Any

from google.protobuf.message import Message
from larder_sdk import (
    EventSourcedContext,
    EventSourcedEntity,
    LarderService,
    ServerSettings,
    ValueEntity,
    ValueEntityContext,
)

COUNTER_TYPE = "sc-counter"
REGISTER_TYPE = "sc-register"


def components(pb: Any, snapshot_every: int) -> list[Any]:
    counter: EventSourcedEntity[Any] = EventSourcedEntity(
        pb.DESCRIPTOR.services_by_name["Counter"],
        entity_type=COUNTER_TYPE,
        state_type=pb.CounterState,
        snapshot_every=snapshot_every,
    )

    @counter.command_handler("Add")
    def add(state: Any, command: Any, ctx: EventSourcedContext) -> Any:
        event = pb.Added(tag=command.tag, amount=command.amount)
        ctx.emit(event)
        return pb.CounterValue(value=state.value + command.amount, events=state.events + 1)

    @counter.command_handler("Get")
    def get(state: Any, command: Any, ctx: EventSourcedContext) -> Any:
        return pb.CounterValue(value=state.value, events=state.events)

    added_type: type[Message] = pb.Added  # typed, so the decorator's overload is chosen

    @counter.event_handler(added_type)
    def added(state: Any, event: Any) -> Any:
        return pb.CounterState(value=state.value + event.amount, events=state.events + 1)

    register: ValueEntity[Any] = ValueEntity(
        pb.DESCRIPTOR.services_by_name["Register"],
        entity_type=REGISTER_TYPE,
        state_type=pb.RegisterState,
    )

    @register.command_handler("Set")
    def set_text(state: Any, command: Any, ctx: ValueEntityContext[Any]) -> Any:
        if command.text == "fail":
            # A user-function failure on demand (the sharding tests compare its answers).
            ctx.fail("the register refuses the text 'fail'")
        new = pb.RegisterState(text=command.text, writes=state.writes + 1)
        ctx.update_state(new)
        return new

    @register.command_handler("Get")
    def get_text(state: Any, command: Any, ctx: ValueEntityContext[Any]) -> Any:
        return state

    @register.command_handler("Clear")
    def clear(state: Any, command: Any, ctx: ValueEntityContext[Any]) -> Any:
        ctx.delete_state()
        return pb.RegisterState()

    return [counter, register]


async def _serve() -> None:
    sys.path.insert(0, os.environ["LEDGER_PROTOS"])
    pb = importlib.import_module("larder_sctest.ledger_pb2")
    service = LarderService(
        components(pb, int(os.environ.get("SNAPSHOT_EVERY", "0"))),
        service_name="sidecar-cassandra-test",
        settings=ServerSettings(host="127.0.0.1", port=int(os.environ.get("PORT", "0"))),
    )
    serving = asyncio.create_task(service.serve())
    port = await service.wait_started()
    print(f"listening on {port}", flush=True)
    await serving


if __name__ == "__main__":
    asyncio.run(_serve())
