"""In-process cost of one event-sourced command that emits one event.

Per command: parse the `EventSourcedStreamIn` bytes the sidecar sent, decode the
command payload, run the command handler and the event handler, build the reply
(event, reply payload, snapshot every 100 events) and serialize it -- everything the
user function does except gRPC's own transport work.

    .venv/bin/python bench/sdk_command.py [--commands N] [--rounds R]

Target: <= 50 us/command (process CPU time; wall-clock is printed too).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from larder_protocol import compile_protos

_PROTOS = Path(__file__).resolve().parent.parent / "tests" / "unit" / "sdk" / "protos"


def _load_counter_protos(out_dir: str) -> Any:
    compile_protos([_PROTOS / "larder_sdktest" / "counter.proto"], out_dir, include=[_PROTOS])
    sys.path.insert(0, out_dir)
    return importlib.import_module("larder_sdktest.counter_pb2")


async def _run(counter_pb2: Any, commands: int, rounds: int) -> tuple[list[float], list[float]]:
    """Per-command cost of each round, as (wall-clock, process CPU) microseconds."""
    from google.protobuf.empty_pb2 import Empty  # noqa: PLC0415 -- after the protos compile
    from google.protobuf.message import Message  # noqa: PLC0415
    from larder_sdk import EventSourcedContext, EventSourcedEntity  # noqa: PLC0415
    from larder_sdk import _protocol as proto  # noqa: PLC0415
    from larder_sdk._eventsourced_instance import EventSourcedInstance  # noqa: PLC0415

    entity: EventSourcedEntity[Any] = EventSourcedEntity(
        counter_pb2.DESCRIPTOR.services_by_name["CounterService"],
        entity_type="counter",
        state_type=counter_pb2.CounterState,
        snapshot_every=100,
    )

    @entity.command_handler
    def increase(state: Any, command: Any, ctx: EventSourcedContext) -> Any:
        ctx.emit(counter_pb2.ValueIncreased(value=command.value))
        return Empty()

    value_increased: type[Message] = counter_pb2.ValueIncreased

    @entity.event_handler(value_increased)
    def increased(state: Any, event: Any) -> Any:
        state.value += event.value
        state.changes += 1
        return state

    instance = EventSourcedInstance(entity, "c-1")
    wire = proto.eventsourced.EventSourcedStreamIn(
        command=proto.entity.Command(
            entity_id="c-1",
            id=1,
            name="Increase",
            payload=proto.pack(counter_pb2.IncreaseValue(counter_id="c-1", value=1)),
        )
    ).SerializeToString()
    parse = proto.eventsourced.EventSourcedStreamIn.FromString
    wall: list[float] = []
    cpu: list[float] = []
    for _ in range(rounds):
        start, start_cpu = time.perf_counter(), time.process_time()
        for _ in range(commands):
            out = await instance.handle_command(parse(wire).command)
            out.SerializeToString()
        cpu.append((time.process_time() - start_cpu) / commands * 1e6)
        wall.append((time.perf_counter() - start) / commands * 1e6)
    assert instance.state.value == commands * rounds, "every command must have applied"
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commands", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="larder-bench-") as out_dir:
        counter_pb2 = _load_counter_protos(out_dir)
        wall, cpu = asyncio.run(_run(counter_pb2, args.commands, args.rounds))
    # CPU time is the steadier number on a shared machine; wall-clock is shown as well.
    print(
        f"sdk_command: {min(cpu):.1f} us/command CPU best, "
        f"{sorted(cpu)[len(cpu) // 2]:.1f} median; {min(wall):.1f} us wall best "
        f"({args.rounds} rounds x {args.commands} commands, Python {sys.version.split()[0]})"
    )


if __name__ == "__main__":
    main()
