"""The entity lifecycle table: the legal moves, and that everything else is refused."""

from __future__ import annotations

import pytest
from larder_sidecar.entities.lifecycle import (
    TRANSITIONS,
    Event,
    IllegalTransition,
    Lifecycle,
    State,
)


def _walk(*events: Event) -> Lifecycle:
    lifecycle = Lifecycle("svc/e")
    for event in events:
        lifecycle.fire(event)
    return lifecycle


def test_a_command_activates_handles_writes_and_the_entity_passivates_when_idle() -> None:
    lifecycle = Lifecycle("svc/e")
    assert lifecycle.state is State.INACTIVE
    steps = [
        (Event.ACTIVATE, State.ACTIVATING),
        (Event.ACTIVATED, State.ACTIVE),
        (Event.HANDLE, State.HANDLING),
        (Event.WRITE, State.WRITING),
        (Event.DONE, State.ACTIVE),
        (Event.IDLE, State.PASSIVATING),
        (Event.STOP, State.STOPPED),
    ]
    for event, state in steps:
        assert lifecycle.fire(event) is state


def test_a_failure_drops_the_stream_and_the_next_command_activates_again() -> None:
    lifecycle = _walk(Event.ACTIVATE, Event.ACTIVATED, Event.HANDLE)
    assert lifecycle.fire(Event.RESTART) is State.INACTIVE
    # The command that restarted the entity still finishes.
    assert lifecycle.fire(Event.DONE) is State.INACTIVE
    assert lifecycle.fire(Event.ACTIVATE) is State.ACTIVATING
    assert lifecycle.fire(Event.FAIL) is State.INACTIVE


def test_a_released_entity_closes_even_when_its_last_write_fails() -> None:
    lifecycle = _walk(Event.ACTIVATE, Event.ACTIVATED, Event.RELEASE)
    assert lifecycle.state is State.RELEASING
    assert lifecycle.fire(Event.RESTART) is State.RELEASING
    assert lifecycle.fire(Event.STOP) is State.STOPPED


@pytest.mark.parametrize(
    ("state", "event"),
    [(s, e) for s in State for e in Event if (s, e) not in TRANSITIONS],
    ids=lambda x: x.value,
)
def test_every_move_not_in_the_table_is_refused(state: State, event: Event) -> None:
    lifecycle = Lifecycle("svc/e")
    lifecycle.state = state
    with pytest.raises(IllegalTransition) as info:
        lifecycle.fire(event)
    assert lifecycle.state is state
    assert f"entity svc/e: {event.value!r} is not legal in state {state.value!r}" in str(info.value)


def test_nothing_leaves_stopped() -> None:
    assert not [e for (s, e) in TRANSITIONS if s is State.STOPPED]


def test_idle_and_release_happen_only_between_commands() -> None:
    for event in (Event.IDLE, Event.RELEASE):
        assert {s for (s, e) in TRANSITIONS if e is event} == {State.ACTIVE, State.INACTIVE}


def test_every_state_is_reachable_and_every_state_can_end() -> None:
    def reachable(start: State) -> set[State]:
        seen, todo = {start}, [start]
        while todo:
            here = todo.pop()
            for (s, _), to in TRANSITIONS.items():
                if s is here and to not in seen:
                    seen.add(to)
                    todo.append(to)
        return seen

    assert reachable(State.INACTIVE) == set(State)
    for state in State:
        assert State.STOPPED in reachable(state)
