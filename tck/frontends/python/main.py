"""The TCK model implemented on Larder's Python SDK (`larder_sdk`).

Run by the TCK: `larder-tck --service "python tck/frontends/python/main.py"`.
The model protos are compiled at start into a temporary directory, as a user
function built from protos at start-up would.

`LARDER_TCK_BREAK` deliberately breaks the model, so the TCK's own tests can
check that the right cases fail: `drop-snapshots` never snapshots,
`ignore-side-effects` never requests side effects, `ignore-previous-row` makes the view's
update handlers act as if no row were stored. `LARDER_TCK_ONLY` (e.g. `action`)
serves only some component types, as a partial frontend would.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import tempfile
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import larder_protocol
from google.protobuf.message import Message
from larder_sdk import (
    Action,
    ActionContext,
    Component,
    EventSourcedContext,
    EventSourcedEntity,
    Forward,
    LarderService,
    ValueEntity,
    ValueEntityContext,
    View,
    ViewContext,
    forward,
)

PROTO_DIR = Path(__file__).resolve().parents[2] / "proto"
PROTO_FILES = (
    "larder/tck/model/eventsourced.proto",
    "larder/tck/model/valueentity.proto",
    "larder/tck/model/action.proto",
    "larder/tck/model/view.proto",
)
BREAKS = frozenset({"drop-snapshots", "ignore-side-effects", "ignore-previous-row"})


def load_modules(out: Path) -> tuple[Any, Any, Any, Any]:
    larder_protocol.compile_protos(PROTO_FILES, out, include=[PROTO_DIR])
    sys.path.insert(0, str(out))
    return (
        importlib.import_module("larder.tck.model.eventsourced_pb2"),
        importlib.import_module("larder.tck.model.valueentity_pb2"),
        importlib.import_module("larder.tck.model.action_pb2"),
        importlib.import_module("larder.tck.model.view_pb2"),
    )


def event_sourced(es: Any, breaks: frozenset[str]) -> list[Component]:
    model: EventSourcedEntity[Any] = EventSourcedEntity(
        es.DESCRIPTOR.services_by_name["EventSourcedTckModel"],
        entity_type="event-sourced-tck-model",
        state_type=es.Persisted,
        snapshot_every=0 if "drop-snapshots" in breaks else 5,
    )
    two_target = "larder.tck.model.EventSourcedTwo/Call"

    @model.command_handler
    def process(state: Any, command: Any, ctx: EventSourcedContext) -> Any:
        value = state.value
        result: Any = None
        for action in command.actions:
            which = action.WhichOneof("action")
            if which == "emit":
                ctx.emit(es.Persisted(value=action.emit.value))
                value += action.emit.value
            elif which == "effect":
                if "ignore-side-effects" not in breaks:
                    ctx.side_effect(
                        two_target,
                        es.Request(id=action.effect.id),
                        synchronous=action.effect.synchronous,
                    )
            elif which == "forward":
                result = forward(two_target, es.Request(id=action.forward.id))
            elif which == "fail":
                ctx.fail(action.fail.message)
        return result if isinstance(result, Forward) else es.Response(message=value)

    @model.event_handler(cast(type[Message], es.Persisted))
    def persisted(state: Any, event: Any) -> Any:
        state.value += event.value
        return state

    two: EventSourcedEntity[Any] = EventSourcedEntity(
        es.DESCRIPTOR.services_by_name["EventSourcedTwo"],
        entity_type="event-sourced-tck-two",
        state_type=es.Persisted,
    )
    configured: EventSourcedEntity[Any] = EventSourcedEntity(
        es.DESCRIPTOR.services_by_name["EventSourcedConfigured"],
        entity_type="event-sourced-configured",
        state_type=es.Persisted,
        passivation_timeout=timedelta(milliseconds=100),
    )
    for entity in (two, configured):
        entity.command_handler("Call")(lambda state, command, ctx: es.Response())
    return [model, two, configured]


def value_entities(ve: Any, breaks: frozenset[str]) -> list[Component]:
    model: ValueEntity[Any] = ValueEntity(
        ve.DESCRIPTOR.services_by_name["ValueEntityTckModel"],
        entity_type="value-entity-tck-model",
        state_type=ve.Persisted,
    )
    two_target = "larder.tck.model.valueentity.ValueEntityTwo/Call"

    @model.command_handler
    def process(state: Any, command: Any, ctx: ValueEntityContext[Any]) -> Any:
        value = state.value
        result: Any = None
        for action in command.actions:
            which = action.WhichOneof("action")
            if which == "update":
                ctx.update_state(ve.Persisted(value=action.update.value))
                value = action.update.value
            elif which == "delete":
                ctx.delete_state()
                value = ""
            elif which == "effect":
                if "ignore-side-effects" not in breaks:
                    ctx.side_effect(
                        two_target,
                        ve.Request(id=action.effect.id),
                        synchronous=action.effect.synchronous,
                    )
            elif which == "forward":
                result = forward(two_target, ve.Request(id=action.forward.id))
            elif which == "fail":
                ctx.fail(action.fail.message)
        return result if isinstance(result, Forward) else ve.Response(message=value)

    two: ValueEntity[Any] = ValueEntity(
        ve.DESCRIPTOR.services_by_name["ValueEntityTwo"],
        entity_type="value-entity-tck-two",
        state_type=ve.Persisted,
    )
    configured: ValueEntity[Any] = ValueEntity(
        ve.DESCRIPTOR.services_by_name["ValueEntityConfigured"],
        entity_type="value-entity-configured",
        state_type=ve.Persisted,
        passivation_timeout=timedelta(milliseconds=100),
    )
    for entity in (two, configured):
        entity.command_handler("Call")(lambda state, command, ctx: ve.Response())
    return [model, two, configured]


def actions(act: Any, breaks: frozenset[str]) -> list[Component]:
    model = Action(act.DESCRIPTOR.services_by_name["ActionTckModel"])
    two_target = "larder.tck.model.action.ActionTwo/Call"

    def run(steps: Iterable[Any], ctx: ActionContext) -> Any:
        result: Any = None
        for step in steps:
            which = step.WhichOneof("step")
            if which == "reply":
                result = act.Response(message=step.reply.message)
            elif which == "forward":
                result = forward(two_target, act.OtherRequest(id=step.forward.id))
            elif which == "effect":
                if "ignore-side-effects" not in breaks:
                    ctx.side_effect(
                        two_target,
                        act.OtherRequest(id=step.effect.id),
                        synchronous=step.effect.synchronous,
                    )
            elif which == "fail":
                ctx.fail(step.fail.message)
        return result

    @model.command_handler
    def process_unary(request: Any, ctx: ActionContext) -> Any:
        return run((s for g in request.groups for s in g.steps), ctx)

    @model.command_handler
    async def process_streamed_in(requests: AsyncIterator[Any], ctx: ActionContext) -> Any:
        steps = [s async for r in requests for g in r.groups for s in g.steps]
        return run(steps, ctx)

    @model.command_handler
    def process_streamed_out(request: Any, ctx: ActionContext) -> Iterator[Any]:
        for group in request.groups:
            yield run(group.steps, ctx)

    @model.command_handler
    async def process_streamed(requests: AsyncIterator[Any], ctx: ActionContext) -> Any:
        async for request in requests:
            for group in request.groups:
                yield run(group.steps, ctx)

    two = Action(act.DESCRIPTOR.services_by_name["ActionTwo"])
    two.command_handler("Call")(lambda request, ctx: act.Response())
    return [model, two]


def views(vw: Any, breaks: frozenset[str]) -> list[Component]:
    view = View(vw.DESCRIPTOR.services_by_name["ViewTckModel"])

    def transform(row: Any, value: str, new_value: Callable[[str], str]) -> Any:
        # The model's rules (view.proto): "ignore:" leaves the table, "fail:" fails.
        if value.startswith("ignore:"):
            return None
        if value.startswith("fail:"):
            raise RuntimeError(f"the TCK asked this update to fail ({value!r})")
        if "ignore-previous-row" in breaks:
            row = None
        previous = row.value if row is not None else ""
        updates = row.updates if row is not None else 0
        return vw.ViewRow(value=new_value(previous), previous=previous, updates=updates + 1)

    @view.update_handler
    def update_from_state(row: Any, state: Any, ctx: ViewContext) -> Any:
        return transform(row, state.value, lambda previous: state.value)

    @view.update_handler
    def update_from_event(row: Any, event: Any, ctx: ViewContext) -> Any:
        return transform(row, event.value, lambda previous: previous + event.value)

    return [view]


def main() -> None:
    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "WARNING"))
    breaks = frozenset(b for b in os.environ.get("LARDER_TCK_BREAK", "").split(",") if b)
    unknown = breaks - BREAKS
    if unknown:
        raise SystemExit(f"LARDER_TCK_BREAK: unknown {sorted(unknown)}; known: {sorted(BREAKS)}")
    with tempfile.TemporaryDirectory(prefix="larder-tck-python-") as tmp:
        es, ve, act, vw = load_modules(Path(tmp))
        kinds: dict[str, Callable[[], list[Component]]] = {
            "eventsourced": lambda: event_sourced(es, breaks),
            "valueentity": lambda: value_entities(ve, breaks),
            "action": lambda: actions(act, breaks),
            # The view reads the two entity models; the sidecar refuses it without them.
            "view": lambda: views(vw, breaks),
        }
        only = [k for k in os.environ.get("LARDER_TCK_ONLY", "").split(",") if k] or list(kinds)
        if set(only) - set(kinds):
            raise SystemExit(f"LARDER_TCK_ONLY: unknown {only}; known: {sorted(kinds)}")
        components = [c for kind in only for c in kinds[kind]()]
        LarderService(
            components, service_name="larder-tck-python-frontend", service_version="0.1.0"
        ).run()


if __name__ == "__main__":
    main()
