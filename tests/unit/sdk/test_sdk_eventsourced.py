"""Event-sourced entities through the in-process test kit."""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf.empty_pb2 import Empty
from google.protobuf.message import Message
from larder_sdk import EventSourcedContext, EventSourcedEntity, Metadata
from larder_sdk.testkit import EventSourcedTestKit
from larder_sdktest import counter_pb2  # type: ignore[import-not-found]


def test_command_emits_event_updates_state_and_replies(counter: EventSourcedEntity[Any]) -> None:
    kit = EventSourcedTestKit(counter, "c-1")
    result = kit.run("Increase", counter_pb2.IncreaseValue(counter_id="c-1", value=5))
    assert result.failure is None
    assert result.reply == Empty()
    assert result.events == (counter_pb2.ValueIncreased(value=5),)
    assert kit.state == counter_pb2.CounterState(value=5, changes=1)
    assert kit.sequence == 1
    got = kit.run("GetCurrentCounter", counter_pb2.GetCounter(counter_id="c-1"))
    assert got.reply == counter_pb2.CurrentCounter(value=5)
    assert got.events == ()


async def test_async_handler_and_event_handler_by_explicit_type(
    counter: EventSourcedEntity[Any],
) -> None:
    kit = EventSourcedTestKit(counter, "c-1", events=[counter_pb2.ValueIncreased(value=10)])
    result = await kit.run_async("Decrease", counter_pb2.DecreaseValue(value=3))
    assert result.events == (counter_pb2.ValueDecreased(value=3),)
    assert kit.state.value == 7
    assert kit.sequence == 2


async def test_run_inside_a_running_loop_points_to_run_async(
    counter: EventSourcedEntity[Any],
) -> None:
    kit = EventSourcedTestKit(counter)
    with pytest.raises(RuntimeError, match="run_async"):
        kit.run("Increase", counter_pb2.IncreaseValue(value=1))


def test_snapshot_rides_on_the_reply_that_crosses_the_boundary(
    counter: EventSourcedEntity[Any],
) -> None:
    kit = EventSourcedTestKit(counter, "c-1")  # snapshot_every=3
    first = kit.run("Increase", counter_pb2.IncreaseValue(value=1))
    second = kit.run("Increase", counter_pb2.IncreaseValue(value=1))
    assert first.snapshot is None and second.snapshot is None
    third = kit.run("Increase", counter_pb2.IncreaseValue(value=1))
    assert third.snapshot == counter_pb2.CounterState(value=3, changes=3)
    assert kit.run("Increase", counter_pb2.IncreaseValue(value=1)).snapshot is None


def test_snapshot_holds_the_state_after_all_events_of_a_crossing_command() -> None:
    # Two increases in, a command emitting one event crosses 3; the state after it is snapshotted.

    service = counter_pb2.DESCRIPTOR.services_by_name["CounterService"]
    entity: EventSourcedEntity[Any] = EventSourcedEntity(
        service, entity_type="burst", state_type=counter_pb2.CounterState, snapshot_every=3
    )
    for name in ("Decrease", "GetCurrentCounter", "IncreaseElsewhere", "Misbehave"):
        entity.command_handler(name)(lambda s, c, ctx: Empty())

    @entity.command_handler
    def increase(state: Any, command: Any, ctx: EventSourcedContext) -> Message:
        for _ in range(command.value):
            ctx.emit(counter_pb2.ValueIncreased(value=1))
        return Empty()

    @entity.event_handler
    def increased(
        state: counter_pb2.CounterState, event: counter_pb2.ValueIncreased
    ) -> counter_pb2.CounterState:
        state.value += event.value
        return state

    kit = EventSourcedTestKit(entity)
    assert kit.run("Increase", counter_pb2.IncreaseValue(value=2)).snapshot is None
    burst = kit.run("Increase", counter_pb2.IncreaseValue(value=5))
    assert len(burst.events) == 5
    assert burst.snapshot == counter_pb2.CounterState(value=7)


def test_snapshot_every_zero_disables_snapshots(counter: EventSourcedEntity[Any]) -> None:
    counter.snapshot_every = 0
    kit = EventSourcedTestKit(counter)
    results = [kit.run("Increase", counter_pb2.IncreaseValue(value=1)) for _ in range(4)]
    assert all(r.snapshot is None for r in results)


def test_initial_state_from_snapshot_plus_replayed_events(
    counter: EventSourcedEntity[Any],
) -> None:
    kit = EventSourcedTestKit(
        counter,
        "c-9",
        snapshot=(10, counter_pb2.CounterState(value=40, changes=10)),
        events=[counter_pb2.ValueIncreased(value=2), counter_pb2.ValueDecreased(value=1)],
    )
    assert kit.state == counter_pb2.CounterState(value=41, changes=12)
    assert kit.sequence == 12


def test_snapshot_of_another_type_goes_through_the_snapshot_handler(
    counter: EventSourcedEntity[Any],
) -> None:
    kit = EventSourcedTestKit(counter, snapshot=(4, counter_pb2.LegacySnapshot(total=17)))
    assert kit.state.value == 17
    assert kit.sequence == 4


def test_metadata_in_and_reply_metadata_out(counter: EventSourcedEntity[Any]) -> None:
    kit = EventSourcedTestKit(counter)
    result = kit.run("Increase", counter_pb2.IncreaseValue(value=1), metadata={"X-Echo": "hi"})
    assert result.reply == Empty()
    assert result.reply_metadata == Metadata((("x-echo", "hi"),))


def test_forward_and_side_effects(counter: EventSourcedEntity[Any]) -> None:
    kit = EventSourcedTestKit(counter, "c-1")
    result = kit.run("IncreaseElsewhere", counter_pb2.IncreaseValue(counter_id="c-1", value=4))
    assert result.reply is None
    assert result.forward is not None
    assert (result.forward.service_name, result.forward.command_name) == (
        "larder.sdktest.CounterService",
        "Increase",
    )
    assert result.forward.message == counter_pb2.IncreaseValue(counter_id="c-1-b", value=4)
    assert result.forward.metadata.get("x-forwarded") == "yes"
    sync, async_ = result.side_effects
    assert sync.synchronous and not async_.synchronous
    assert sync.message == counter_pb2.IncreaseValue(counter_id="audit", value=4)
    assert sync.metadata.get("x-why") == "audit"


def test_fail_discards_events_and_keeps_state(counter: EventSourcedEntity[Any]) -> None:
    kit = EventSourcedTestKit(counter, events=[counter_pb2.ValueIncreased(value=1)])
    result = kit.run("Increase", counter_pb2.IncreaseValue(value=-1))
    assert result.failure == "increase by -1: the value must not be negative"
    assert result.events == () and result.reply is None
    assert kit.state.value == 1 and kit.sequence == 1


@pytest.mark.parametrize(
    ("how", "cause"),
    [
        ("raise", "ValueError: the handler broke"),
        ("fail_caught", None),
        ("wrong_type", "returned larder.sdktest.CurrentCounter"),
        ("none", "returned None"),
        ("unhandled_event", "no event handler for larder.sdktest.Unhandled"),
        ("bad_event", "this event handler rejects -999"),
        ("mutate_state", None),
        ("bad_side_effect", "takes larder.sdktest.IncreaseValue"),
    ],
)
def test_any_failure_rolls_back_what_the_command_emitted(
    counter: EventSourcedEntity[Any], how: str, cause: str | None
) -> None:
    kit = EventSourcedTestKit(counter, "c-7", events=[counter_pb2.ValueIncreased(value=2)])
    result = kit.run("Misbehave", counter_pb2.MisbehaveCommand(counter_id="c-7", how=how))
    assert result.failure is not None
    if cause is not None:
        # Unexpected failures name the component, the entity id, the command and the cause.
        assert "event-sourced entity 'counter' (larder.sdktest.CounterService)" in result.failure
        assert "entity 'c-7'" in result.failure
        assert "command 'Misbehave'" in result.failure
        assert cause in result.failure
    assert result.events == ()
    assert kit.state == counter_pb2.CounterState(value=2, changes=1)
    assert kit.sequence == 1
    # The entity keeps working after the failure.
    assert kit.run("Increase", counter_pb2.IncreaseValue(value=1)).failure is None
    assert kit.state.value == 3


def test_context_cannot_be_used_after_the_command(counter: EventSourcedEntity[Any]) -> None:
    kept: list[Any] = []

    def keep(state: Any, command: Any, ctx: Any) -> Empty:
        kept.append(ctx)
        return Empty()

    counter.handlers.pop("Misbehave")
    counter.command_handler("Misbehave")(keep)
    EventSourcedTestKit(counter).run("Misbehave", counter_pb2.MisbehaveCommand())
    with pytest.raises(RuntimeError, match="already completed"):
        kept[0].emit(counter_pb2.ValueIncreased(value=1))
