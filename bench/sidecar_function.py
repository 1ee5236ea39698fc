"""The benchmark's user function: one event-sourced counter on `larder_sdk`.

`Increase` emits one `ValueIncreased` and replies `Empty`; no snapshots, so every
command costs the same. `Echo.Say`, a stateless action, answers its request. Run by
`bench/sidecar_command.py` as its own process:

    PORT=8080 python bench/sidecar_function.py <dir with the compiled larder/bench protos>
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import uvloop
from google.protobuf.empty_pb2 import Empty
from google.protobuf.message import Message
from larder_sdk import Action, ActionContext, EventSourcedContext, EventSourcedEntity, LarderService


def main() -> None:
    sys.path.insert(0, sys.argv[1])
    pb: Any = importlib.import_module("larder.bench.counter_pb2")  # compiled at run time

    counter = EventSourcedEntity(
        pb.DESCRIPTOR.services_by_name["Counter"],
        entity_type="counter",
        state_type=pb.CounterState,
        snapshot_every=0,
        events=[pb.ValueIncreased],
    )

    @counter.command_handler
    def increase(state: Any, command: Any, ctx: EventSourcedContext) -> Empty:
        ctx.emit(pb.ValueIncreased(value=command.value))
        return Empty()

    value_increased: type[Message] = pb.ValueIncreased

    @counter.event_handler(value_increased)
    def increased(state: Any, event: Any) -> Any:
        state.value += event.value
        return state

    echo = Action(pb.DESCRIPTOR.services_by_name["Echo"])

    @echo.command_handler
    def say(command: Any, ctx: ActionContext) -> Any:
        return command

    # Shut down promptly when the benchmark stops it (it sends SIGTERM, no sidecar stop).
    uvloop.run(LarderService([counter, echo], service_name="bench", shutdown_wait=0.5).serve())


if __name__ == "__main__":
    main()
