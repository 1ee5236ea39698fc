"""Definition-time validation: every problem is reported, all at once."""

from __future__ import annotations

import subprocess
import sys
import types
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import larder_sdk
import larder_sdk.testkit
import pytest
from google.protobuf.empty_pb2 import Empty
from google.protobuf.message import Message
from larder_sdk import (
    Action,
    DefinitionError,
    EventSourcedEntity,
    LarderService,
    ValueEntity,
)
from larder_sdktest import counter_pb2, echo_pb2  # type: ignore[import-not-found]

COUNTER = counter_pb2.DESCRIPTOR.services_by_name["CounterService"]
ECHO = echo_pb2.DESCRIPTOR.services_by_name["EchoAction"]


def _entity(**kwargs: Any) -> EventSourcedEntity[Any]:
    return EventSourcedEntity(
        COUNTER, entity_type="counter", state_type=counter_pb2.CounterState, **kwargs
    )


def test_constructor_reports_every_bad_argument() -> None:
    with pytest.raises(DefinitionError) as raised:
        EventSourcedEntity(
            "larder.sdktest.NoSuchService",
            entity_type="",
            state_type=dict,  # type: ignore[type-var]
            snapshot_every=-1,
            events=[str],  # type: ignore[list-item]
            passivation_timeout=timedelta(seconds=-5),
        )
    problems = "\n".join(raised.value.problems)
    assert len(raised.value.problems) == 6
    assert "'larder.sdktest.NoSuchService' is not in the protobuf descriptor pool" in problems
    assert "entity_type must be a non-empty string" in problems
    assert "state_type must be a generated protobuf message class" in problems
    assert "snapshot_every must be an int >= 0" in problems
    assert "<class 'str'> is not" in problems
    assert "passivation_timeout must be a positive timedelta" in problems
    assert "has 6 problems" in str(raised.value)


def test_command_handler_reports_unknown_name_arity_and_annotations_at_once() -> None:
    entity = _entity()
    with pytest.raises(DefinitionError) as raised:

        @entity.command_handler("Increse")
        def handler(state: counter_pb2.CounterState) -> counter_pb2.CurrentCounter:
            raise AssertionError

    problems = raised.value.problems
    assert len(problems) == 2
    assert "has no such method (did you mean 'Increase'?)" in problems[0]
    assert "must take 3 positional parameters (state, command, context)" in problems[1]


def test_command_handler_checks_annotations_against_the_method() -> None:
    entity = _entity()
    with pytest.raises(DefinitionError) as raised:

        @entity.command_handler
        def increase(
            state: counter_pb2.CounterState, command: counter_pb2.GetCounter, ctx: Any
        ) -> counter_pb2.CurrentCounter:
            raise AssertionError

    problems = raised.value.problems
    assert any("annotated larder.sdktest.GetCounter" in p for p in problems)
    assert any("annotated to return larder.sdktest.CurrentCounter" in p for p in problems)


def test_duplicate_command_handler() -> None:
    entity = _entity()
    entity.command_handler("Increase")(lambda state, command, ctx: Empty())
    with pytest.raises(DefinitionError, match="'Increase' already has a handler"):
        entity.command_handler("Increase")(lambda state, command, ctx: Empty())


def test_event_handler_needs_a_type_is_pure_and_unique() -> None:
    entity = _entity()
    with pytest.raises(DefinitionError, match="the event type is unknown"):
        entity.event_handler(lambda state, event: state)
    with pytest.raises(DefinitionError) as raised:
        increased_type: type[Message] = counter_pb2.ValueIncreased

        @entity.event_handler(increased_type)
        async def increased(state: Any, event: Any, extra: Any) -> Any:
            return state

    problems = raised.value.problems
    assert any("must take 2 positional parameters (state, event)" in p for p in problems)
    assert any("event handlers are pure functions" in p for p in problems)
    entity.event_handler(counter_pb2.ValueIncreased)(lambda state, event: state)
    with pytest.raises(DefinitionError, match="already has a handler"):
        entity.event_handler(counter_pb2.ValueIncreased)(lambda state, event: state)


def test_service_reports_missing_handlers_and_declared_events_of_every_component() -> None:
    entity = _entity(events=[counter_pb2.ValueIncreased])
    entity.command_handler("Increase")(lambda state, command, ctx: Empty())
    echo = Action(ECHO)
    with pytest.raises(DefinitionError) as raised:
        LarderService([entity, echo])
    problems = "\n".join(raised.value.problems)
    assert "no handler for methods 'Decrease', 'GetCurrentCounter'" in problems
    assert "event larder.sdktest.ValueIncreased is declared in events= but has no event" in problems
    assert "action larder.sdktest.EchoAction: no handler for methods 'Echo'" in problems


def test_two_components_for_one_service() -> None:
    first, second = Action(ECHO), Action(ECHO)
    for action in (first, second):
        action.command_handler("Echo")(lambda command, ctx: None)
        action.command_handler("Collect")(lambda commands, ctx: None)

        async def stream(command: Any, ctx: Any) -> AsyncIterator[Any]:
            yield None

        action.command_handler("Repeat")(stream)
        action.command_handler("Chat")(stream)
    with pytest.raises(DefinitionError, match="served by two components"):
        LarderService([first, second])


def test_action_handler_shape_must_match_the_streaming_kind() -> None:
    echo = Action(ECHO)
    with pytest.raises(DefinitionError, match="must be a generator"):
        echo.command_handler("Repeat")(lambda command, ctx: None)

    def unary_generator(command: Any, ctx: Any) -> Any:
        yield None

    with pytest.raises(DefinitionError, match="unary methods reply once"):
        echo.command_handler("Echo")(unary_generator)


def test_entities_serve_unary_methods_only() -> None:
    with pytest.raises(DefinitionError, match="a value entity supports unary methods only"):
        entity: ValueEntity[Any] = ValueEntity(ECHO, entity_type="echo", state_type=echo_pb2.Pong)
        entity.command_handler("Chat")(lambda state, command, ctx: None)


def test_method_name_defaults_to_the_function_name_in_camel_case() -> None:
    entity = _entity()

    @entity.command_handler
    def get_current_counter(state: Any, command: Any, ctx: Any) -> Any:
        return None

    assert entity.handlers["GetCurrentCounter"].fn is get_current_counter


def test_public_names_are_exactly_all() -> None:
    package_names = {
        name
        for name, value in vars(larder_sdk).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert package_names == set(larder_sdk.__all__)
    testkit_names = {
        name
        for name, value in vars(larder_sdk.testkit).items()
        if getattr(value, "__module__", None) == "larder_sdk.testkit" and not name.startswith("_")
    }
    assert testkit_names == set(larder_sdk.testkit.__all__)


def test_the_sdk_imports_no_sidecar_or_operator_code() -> None:
    probe = (
        "import sys, larder_sdk, larder_sdk.testkit; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'larder_sidecar', 'larder_operator', 'kopf', 'cassandra', 'aiokafka'}); "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], check=False, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
