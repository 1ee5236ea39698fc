"""The eventing tests' user function, on our SDK: a counter that fails non-positive
amounts (a user failure) and remembers every record's tag."""

from __future__ import annotations

import asyncio
import importlib
import json
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from larder_protocol import compile_protos
from larder_sdk import EventSourcedContext, EventSourcedEntity, LarderService, ServerSettings

PROTOS = Path(__file__).parent / "protos"
TEMPLATE = PROTOS / "eventingtest" / "counter.proto.in"


@dataclass(frozen=True)
class CounterProtos:
    pb: ModuleType
    topic_in: str
    topic_out: str
    topic_more: str
    """The second subscription (AddMore)."""


def compile_counter(out: Path) -> CounterProtos:
    """Compile the counter proto with this session's own topic names."""
    suffix = uuid.uuid4().hex[:8]
    source = out / "src" / "eventingtest" / "counter.proto"
    source.parent.mkdir(parents=True)
    source.write_text(TEMPLATE.read_text().replace("@SUFFIX@", suffix))
    compile_protos([source], out, include=[out / "src"])
    if str(out) not in sys.path:
        sys.path.insert(0, str(out))
    pb = importlib.import_module("eventingtest.counter_pb2")
    return CounterProtos(
        pb, f"counter-add-{suffix}", f"counter-totals-{suffix}", f"counter-more-{suffix}"
    )


def counter_service(pb: ModuleType) -> LarderService:
    entity: EventSourcedEntity[Any] = EventSourcedEntity(
        pb.DESCRIPTOR.services_by_name["Counter"],
        entity_type="counter",
        state_type=pb.Total,
        events=[pb.Added],
    )

    @entity.command_handler("Add")
    @entity.command_handler("AddMore")
    def add(state: Any, command: Any, context: EventSourcedContext) -> Any:
        if command.amount <= 0:
            context.fail(f"amount must be positive, got {command.amount}")
        context.emit(pb.Added(amount=command.amount, tag=command.tag))
        return pb.Total(id=command.id, total=state.total + command.amount,
                        tags=[*state.tags, command.tag])

    @entity.command_handler("Get")
    def get(state: Any, command: Any, context: EventSourcedContext) -> Any:
        return pb.Total(id=command.id, total=state.total, tags=state.tags)

    @entity.event_handler(pb.Added)  # type: ignore[untyped-decorator]  # a dynamic type
    def added(state: Any, event: Any) -> Any:
        state.total += event.amount
        state.tags.append(event.tag)
        return state

    return LarderService([entity], service_name="eventing-test",
                         settings=ServerSettings("127.0.0.1", 0))


async def _serve_in_this_process(out: Path) -> None:
    protos = compile_counter(out)
    service = counter_service(protos.pb)
    serving = asyncio.create_task(service.serve())
    port = await service.wait_started()
    # The parent reads where to find us and which topics this compile named.
    topics = {"in": protos.topic_in, "out": protos.topic_out, "more": protos.topic_more}
    print(json.dumps({"port": port, **topics}), flush=True)
    await serving


if __name__ == "__main__":
    # A counter function in a process of its own, with topic names of its own (a
    # process imports the compiled module once, so a second compile needs a process).
    asyncio.run(_serve_in_this_process(Path(sys.argv[1])))
