"""Conditions and the reasons behind them: pure functions from what was observed to status."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

READY = "Ready"
JOURNAL_READY = "JournalReady"
DURABLE = "Durable"
# Whether a function's ready pods have the same shard map (map_agreement.py).
SHARD_MAP_AGREED = "ShardMapAgreed"


class Reason(StrEnum):
    """Why a condition has its status; shown by ``kubectl describe`` and in Events."""

    AVAILABLE = "Available"
    SCALED_TO_ZERO = "ScaledToZero"
    PODS_NOT_READY = "PodsNotReady"
    # The Deployment's own failure conditions, for pods that are not even there:
    POD_CREATION_FAILED = "PodCreationFailed"
    PROGRESS_DEADLINE_EXCEEDED = "ProgressDeadlineExceeded"
    INVALID_SPEC = "InvalidSpec"
    IN_MEMORY = "InMemory"
    JOURNAL_READY = "JournalReady"
    JOURNAL_MISSING = "JournalMissing"
    JOURNAL_NOT_READY = "JournalNotReady"
    JOURNAL_INVALID = "JournalInvalid"
    SECRET_MISSING = "SecretMissing"
    # An Event on a Journal whose deletion waits for the functions using it:
    JOURNAL_IN_USE = "JournalInUse"
    # For Journals themselves:
    REACHABLE = "Reachable"
    UNREACHABLE = "Unreachable"
    # A Journal's Durable condition (durability.py):
    SYNCED_COMMIT_LOG = "SyncedCommitLog"
    REPLICATED = "Replicated"
    UNSYNCED_SINGLE_COPY = "UnsyncedSingleCopy"
    DURABILITY_UNKNOWN = "DurabilityUnknown"
    # A function's ShardMapAgreed condition (map_agreement.py):
    MAPS_AGREE = "MapsAgree"
    NO_READY_PODS = "NoReadyPods"
    CONVERGING = "Converging"
    MAPS_DISAGREE = "MapsDisagree"
    PODS_UNREACHABLE = "PodsUnreachable"
    CONFIG_DRIFT = "ConfigDrift"


@dataclass(frozen=True)
class Condition:
    type: str
    status: bool
    reason: Reason
    message: str

    @property
    def status_word(self) -> str:
        return "True" if self.status else "False"


@dataclass(frozen=True)
class PodsFailure:
    """Why the Deployment cannot bring its pods up, in its own words."""

    reason: Reason
    message: str


def pods_failure(
    deployment_conditions: Iterable[Mapping[str, Any]],
    replica_set_conditions: Iterable[Mapping[str, Any]],
    *,
    namespace: str,
    selector: str,
) -> PodsFailure | None:
    """Why pods are missing, from the conditions of the Deployment and of its current
    ReplicaSet (the one of its latest revision), as a reason and a message with a hint.

    ``ReplicaFailure`` is taken from that ReplicaSet only: the Deployment copies the failure
    of any of its ReplicaSets, and an old one keeps failing (e.g. pods refused by
    PodSecurity) until the new pods are ready, after the user has fixed the spec.
    """
    failure = find_condition(replica_set_conditions, "ReplicaFailure")
    if failure is not None and failure.get("status") == "True":
        return PodsFailure(
            Reason.POD_CREATION_FAILED,
            f"the ReplicaSet cannot create pods ({failure.get('reason') or 'ReplicaFailure'}): "
            f"{failure.get('message') or 'no message'} (fix the spec accordingly, e.g. the "
            f"containers' or spec.pod's securityContext; `kubectl describe rs -n {namespace} "
            f"-l {selector}` shows the attempts)",
        )
    progressing = find_condition(deployment_conditions, "Progressing")
    if (
        progressing is not None
        and progressing.get("status") == "False"
        and progressing.get("reason") == "ProgressDeadlineExceeded"
    ):
        return PodsFailure(
            Reason.PROGRESS_DEADLINE_EXCEEDED,
            f"{progressing.get('message') or 'the Deployment made no progress'}: its new "
            f"pods did not become ready in time; `kubectl get pods -n {namespace} -l "
            f"{selector}` shows which are pending and why",
        )
    return None


def ready_condition(
    journal: Condition,
    desired: int,
    ready: int,
    updated: int | None = None,
    *,
    namespace: str,
    selector: str,
    failure: PodsFailure | None = None,
) -> Condition:
    """The function is Ready when its journal is and every desired pod is ready and current.

    ``namespace`` and ``selector`` (the pods' label selector) make the hint a command the
    user can paste. ``failure`` (``pods_failure``) explains missing pods better than
    a count.
    """
    if not journal.status:
        return Condition(READY, False, journal.reason, journal.message)
    if desired == 0:
        return Condition(READY, True, Reason.SCALED_TO_ZERO, "scaled to zero replicas")
    current = ready if updated is None else min(ready, updated)
    if current < desired and failure is not None:
        return Condition(READY, False, failure.reason, failure.message)
    if current < desired:
        return Condition(
            READY,
            False,
            Reason.PODS_NOT_READY,
            f"{current}/{desired} pods ready and up to date; `kubectl get pods -n {namespace} "
            f"-l {selector}` shows which are pending and why",
        )
    return Condition(READY, True, Reason.AVAILABLE, f"{ready}/{desired} pods ready")


def find_condition(conditions: Iterable[Mapping[str, Any]], type_: str) -> Mapping[str, Any] | None:
    return next((c for c in conditions if c.get("type") == type_), None)


def render_conditions(
    previous: Sequence[Mapping[str, Any]],
    conditions: Sequence[Condition],
    generation: int | None,
    now: str,
) -> list[dict[str, Any]]:
    """Status-ready condition dicts; ``lastTransitionTime`` moves only when the status does."""
    rendered: list[dict[str, Any]] = []
    for cond in conditions:
        before = find_condition(previous, cond.type)
        changed = before is None or before.get("status") != cond.status_word
        item: dict[str, Any] = {
            "type": cond.type,
            "status": cond.status_word,
            "reason": str(cond.reason),
            "message": cond.message,
            "lastTransitionTime": now if changed or before is None
            else before.get("lastTransitionTime", now),
        }
        if generation is not None:
            item["observedGeneration"] = generation
        rendered.append(item)
    return rendered


def transitions(
    previous: Sequence[Mapping[str, Any]], conditions: Sequence[Condition]
) -> list[Condition]:
    """Conditions whose status or reason changed: each deserves one Kubernetes Event."""
    changed = []
    for cond in conditions:
        before = find_condition(previous, cond.type)
        if (
            before is None
            or before.get("status") != cond.status_word
            or before.get("reason") != str(cond.reason)
        ):
            changed.append(cond)
    return changed
