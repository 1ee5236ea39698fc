"""Conditions and the reasons behind them: pure functions from what was observed to status."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

READY = "Ready"
JOURNAL_READY = "JournalReady"
DURABLE = "Durable"


class Reason(StrEnum):
    """Why a condition has its status; shown by ``kubectl describe`` and in Events."""

    AVAILABLE = "Available"
    SCALED_TO_ZERO = "ScaledToZero"
    PODS_NOT_READY = "PodsNotReady"
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


@dataclass(frozen=True)
class Condition:
    type: str
    status: bool
    reason: Reason
    message: str

    @property
    def status_word(self) -> str:
        return "True" if self.status else "False"


def ready_condition(
    journal: Condition,
    desired: int,
    ready: int,
    updated: int | None = None,
    *,
    namespace: str,
    selector: str,
) -> Condition:
    """The function is Ready when its journal is and every desired pod is ready and current.

    ``namespace`` and ``selector`` (the pods' label selector) make the hint a command the
    user can paste.
    """
    if not journal.status:
        return Condition(READY, False, journal.reason, journal.message)
    if desired == 0:
        return Condition(READY, True, Reason.SCALED_TO_ZERO, "scaled to zero replicas")
    current = ready if updated is None else min(ready, updated)
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
