"""Whether a function's ready pods agree on their shard map: pure, from what each pod said.

Each sidecar computes its shard map from the membership it watches (the function's
headless Service's EndpointSlices) and tells it on its admin port (`GET /cluster`): the
map's fingerprint (a digest of the members, equal in every pod that sees the same
membership), its shard count and the journal it writes to. Pods that see different maps
may each think they own the same shard for a moment; the journal's fencing keeps that
safe, but it should only last as long as a hand-off. Pods with a different shard count or
journal (config drift, e.g. half a rolling update that changed them) never agree.

Disagreement while membership changes is normal, so the condition turns False only once
it has lasted ``grace`` seconds; until then the status says it is converging. The moment
it began is kept in the status itself (``since``), so an operator restart does not reset
it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from larder_operator.status import SHARD_MAP_AGREED, Condition, Reason


@dataclass(frozen=True)
class PodView:
    """One ready pod's answer to `GET /cluster`, or why there was none."""

    pod: str
    fingerprint: str | None = None
    shard_count: int | None = None
    journal: str | None = None
    members: tuple[str, ...] = ()
    error: str | None = None
    """Set when the pod did not answer usefully: unreachable, no map yet, not JSON."""

    @property
    def config(self) -> tuple[str | None, int | None, str | None]:
        """What must be equal between pods that agree."""
        return self.fingerprint, self.shard_count, self.journal


def view_from_answer(pod: str, answer: Mapping[str, Any]) -> PodView:
    """A PodView from a sidecar's `/cluster` JSON; a malformed answer is an error view."""
    fingerprint = answer.get("fingerprint")
    shard_count = answer.get("shard_count")
    members = answer.get("members")
    if not isinstance(fingerprint, str) or not isinstance(shard_count, int) or not isinstance(
        members, list
    ):
        return PodView(
            pod,
            error="its /cluster answer has no fingerprint, shard_count or members (a sidecar "
            "older than this operator?)",
        )
    journal = answer.get("journal")
    return PodView(
        pod,
        fingerprint=fingerprint,
        shard_count=shard_count,
        journal=journal if isinstance(journal, str) and journal else None,
        members=tuple(
            sorted(str(m["id"]) for m in members if isinstance(m, Mapping) and "id" in m)
        ),
    )


@dataclass(frozen=True)
class Agreement:
    """The function's `status.shardMap` and its ShardMapAgreed condition."""

    status: dict[str, Any]
    condition: Condition


def agreement(
    views: Sequence[PodView],
    previous: Mapping[str, Any] | None,
    now: str,
    grace: float,
) -> Agreement:
    """Compare the ready pods' views; ``previous`` is the last `status.shardMap`."""
    views = sorted(views, key=lambda v: v.pod)
    answered = [v for v in views if v.error is None]
    unreachable = [v for v in views if v.error is not None]
    # The map most pods have is "the" map; a tie goes to the smallest fingerprint, so the
    # choice does not flap between runs.
    counts = Counter(v.config for v in answered)
    majority = min(counts, key=lambda c: (-counts[c], str(c))) if counts else None
    agreeing = [v for v in answered if v.config == majority]
    disagreeing = [v for v in answered if v.config != majority]
    drift = _drift(answered)
    status: dict[str, Any] = {
        "pods": len(views),
        "agreeing": len(agreeing),
        "agreement": f"{len(agreeing)}/{len(views)}",
        "fingerprint": majority[0] if majority else None,
        "shardCount": majority[1] if majority else None,
        "journal": majority[2] if majority else None,
        "members": list(agreeing[0].members) if agreeing else [],
        "disagreeing": [f"{v.pod}: map {v.fingerprint}" for v in disagreeing],
        "unreachable": [f"{v.pod}: {v.error}" for v in unreachable],
        "drift": drift,
        "observedTime": now,
    }
    if not views:
        status["since"] = None
        return Agreement(
            status,
            Condition(SHARD_MAP_AGREED, True, Reason.NO_READY_PODS, "no ready pods to compare"),
        )
    if len(agreeing) == len(views):
        status["since"] = None
        return Agreement(
            status,
            Condition(
                SHARD_MAP_AGREED,
                True,
                Reason.MAPS_AGREE,
                f"{len(views)}/{len(views)} ready pods have the same shard map "
                f"(fingerprint {status['fingerprint']}, {len(status['members'])} members)",
            ),
        )
    since = (previous or {}).get("since") or now
    status["since"] = since
    problem = _problem(status, unreachable, disagreeing, drift)
    lasted = _seconds_between(since, now)
    if lasted < grace:
        return Agreement(
            status,
            Condition(
                SHARD_MAP_AGREED,
                True,
                Reason.CONVERGING,
                f"{problem[1]} for {lasted:.0f} s (normal while pods come and go; reported "
                f"after {grace:g} s)",
            ),
        )
    return Agreement(
        status, Condition(SHARD_MAP_AGREED, False, problem[0], f"{problem[1]} for {lasted:.0f} s")
    )


def _drift(answered: Sequence[PodView]) -> list[str]:
    """One line per setting that differs between pods, naming who has which value."""
    lines = []
    for what, index in (("shard count", 1), ("journal", 2)):
        by_value: dict[str, list[str]] = {}
        for view in answered:
            by_value.setdefault(str(view.config[index]), []).append(view.pod)
        if len(by_value) > 1:
            lines.append(
                f"{what}: "
                + "; ".join(f"{k} ({', '.join(pods)})" for k, pods in sorted(by_value.items()))
            )
    return lines


def _problem(
    status: Mapping[str, Any],
    unreachable: Sequence[PodView],
    disagreeing: Sequence[PodView],
    drift: Sequence[str],
) -> tuple[Reason, str]:
    """The most telling reason first: drift never heals by waiting; silence hides a view."""
    agreed = f"{status['agreement']} ready pods agree on the shard map"
    if drift:
        return Reason.CONFIG_DRIFT, (
            f"{agreed}; their settings differ, so they can never agree: {'; '.join(drift)} "
            "(give every pod the same LARDER_SHARD_COUNT and Journal; a rolling update "
            "that changes them shows this until it ends)"
        )
    if unreachable:
        names = ", ".join(v.pod for v in unreachable)
        return Reason.PODS_UNREACHABLE, (
            f"{agreed}; no answer from {names} on the admin port (counted as not agreeing; "
            "`kubectl logs <pod> -c larder-sidecar` and NetworkPolicies that block port 9603 "
            "are where to look)"
        )
    names = ", ".join(v.pod for v in disagreeing)
    return Reason.MAPS_DISAGREE, (
        f"{agreed}; {names} see(s) other members (`kubectl exec` into a pod and "
        "`curl localhost:9603/cluster` shows its members; each pod watches the EndpointSlices "
        "of the function's -internal Service)"
    )


def _seconds_between(earlier: str, later: str) -> float:
    try:
        return (_parse(later) - _parse(earlier)).total_seconds()
    except ValueError:
        # A since we cannot read (edited by hand): count from now.
        return 0.0


def _parse(stamp: str) -> datetime:
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S%z")
