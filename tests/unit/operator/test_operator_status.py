"""Conditions: readiness rules, transition times, and which changes deserve an Event."""

from __future__ import annotations

from larder_operator.status import (
    JOURNAL_READY,
    READY,
    Condition,
    Reason,
    ready_condition,
    render_conditions,
    transitions,
)

JOURNAL_OK = Condition(JOURNAL_READY, True, Reason.JOURNAL_READY, "ok")


def test_ready_follows_the_journal_first() -> None:
    missing = Condition(JOURNAL_READY, False, Reason.JOURNAL_MISSING, "no such journal")
    cond = ready_condition(missing, desired=1, ready=1, namespace="ns", selector="a=b")
    assert (cond.status, cond.reason) == (False, Reason.JOURNAL_MISSING)
    assert cond.message == "no such journal"


def _ready(desired: int, ready: int, updated: int | None = None) -> Condition:
    return ready_condition(
        JOURNAL_OK, desired, ready, updated, namespace="shop", selector="larder.dev/function=cart"
    )


def test_ready_counts_pods_that_are_ready_and_current() -> None:
    assert _ready(2, 1).reason == Reason.PODS_NOT_READY
    assert _ready(2, 2, updated=1).reason == Reason.PODS_NOT_READY
    assert _ready(2, 2, updated=2).status
    assert _ready(0, 0).reason == Reason.SCALED_TO_ZERO


def test_pods_not_ready_hint_is_a_command_to_paste() -> None:
    message = _ready(2, 1).message
    assert message.startswith("1/2 pods ready and up to date")
    assert "`kubectl get pods -n shop -l larder.dev/function=cart`" in message


def test_transition_time_moves_only_when_status_does() -> None:
    first = render_conditions([], [JOURNAL_OK], 1, "t1")
    assert first[0]["lastTransitionTime"] == "t1"
    assert first[0]["observedGeneration"] == 1
    same = render_conditions(
        first, [Condition(JOURNAL_READY, True, Reason.IN_MEMORY, "other reason")], 2, "t2"
    )
    assert same[0]["lastTransitionTime"] == "t1"
    flipped = render_conditions(
        same, [Condition(JOURNAL_READY, False, Reason.JOURNAL_MISSING, "gone")], 3, "t3"
    )
    assert flipped[0]["lastTransitionTime"] == "t3"
    assert flipped[0]["status"] == "False"


def test_events_only_for_changed_status_or_reason() -> None:
    rendered = render_conditions([], [JOURNAL_OK], 1, "t1")
    assert transitions(rendered, [JOURNAL_OK]) == []
    reworded = Condition(JOURNAL_READY, True, Reason.JOURNAL_READY, "new words")
    assert transitions(rendered, [reworded]) == []
    other = Condition(READY, False, Reason.PODS_NOT_READY, "0/1")
    assert transitions(rendered, [JOURNAL_OK, other]) == [other]
