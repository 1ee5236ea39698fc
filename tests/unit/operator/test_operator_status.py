"""Conditions: readiness rules, transition times, and which changes deserve an Event."""

from __future__ import annotations

from larder_operator.status import (
    JOURNAL_READY,
    READY,
    Condition,
    Reason,
    pods_failure,
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


PSA = (
    'pods "cart-5d9c-x" is forbidden: violates PodSecurity "restricted:latest": '
    'allowPrivilegeEscalation != false (container "fn" must set '
    "securityContext.allowPrivilegeEscalation=false)"
)
REPLICA_FAILURE = {"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate",
                   "message": PSA}
DEADLINE = {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
            "message": 'ReplicaSet "cart-5d9c" has timed out progressing.'}
PROGRESSING = {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}


def _failure(*conds: dict[str, str]) -> Condition:
    """Ready with these conditions on both the Deployment and its current ReplicaSet."""
    selector = "larder.dev/function=cart"
    failure = pods_failure(conds, conds, namespace="shop", selector=selector)
    return ready_condition(
        JOURNAL_OK, 2, 0, 0, namespace="shop", selector=selector, failure=failure
    )


def test_pods_that_cannot_be_created_say_why_in_the_api_servers_words() -> None:
    cond = _failure(PROGRESSING, REPLICA_FAILURE)
    assert (cond.status, cond.reason) == (False, Reason.POD_CREATION_FAILED)
    assert "(FailedCreate): " + PSA in cond.message
    assert "`kubectl describe rs -n shop -l larder.dev/function=cart`" in cond.message


def test_a_deployment_past_its_progress_deadline_says_so() -> None:
    cond = _failure(DEADLINE)
    assert (cond.status, cond.reason) == (False, Reason.PROGRESS_DEADLINE_EXCEEDED)
    assert cond.message.startswith('ReplicaSet "cart-5d9c" has timed out progressing.')
    # Pods that cannot be created are the more specific news.
    assert _failure(DEADLINE, REPLICA_FAILURE).reason == Reason.POD_CREATION_FAILED


def test_conditions_that_are_no_failure_leave_the_pod_count() -> None:
    resolved = {**REPLICA_FAILURE, "status": "False"}
    assert _failure(PROGRESSING, resolved).reason == Reason.PODS_NOT_READY
    assert pods_failure([], [], namespace="shop", selector="a=b") is None
    # The Deployment copies an old ReplicaSet's failure; only the current one's is news.
    assert pods_failure([REPLICA_FAILURE], [], namespace="shop", selector="a=b") is None


def test_a_failure_does_not_hide_a_function_that_is_ready_or_waits_for_its_journal() -> None:
    failure = pods_failure([REPLICA_FAILURE], [REPLICA_FAILURE], namespace="shop",
                           selector="a=b")
    # A quota hit by a surge pod while every pod runs: still Available.
    ready = ready_condition(JOURNAL_OK, 2, 2, 2, namespace="shop", selector="a=b",
                            failure=failure)
    assert ready.reason == Reason.AVAILABLE
    missing = Condition(JOURNAL_READY, False, Reason.JOURNAL_MISSING, "no such journal")
    blocked = ready_condition(missing, 2, 0, 0, namespace="shop", selector="a=b",
                              failure=failure)
    assert blocked.reason == Reason.JOURNAL_MISSING
