"""One function's shard-map check, written down: `status.shardMap` and the ShardMapAgreed
condition, from the views its ready pods gave (pod_views.py). Run periodically
(handlers.py) under the function's reconcile lock; reconcile.py writes the other
conditions and keeps this one as it is."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from larder_operator.kube import Cluster, function_path
from larder_operator.map_agreement import PodView, agreement
from larder_operator.status import SHARD_MAP_AGREED, Condition, render_conditions, transitions


@dataclass(frozen=True)
class MapCheck:
    """What a check found; the caller posts an Event for each changed condition."""

    body: Mapping[str, Any]
    condition: Condition
    changed: tuple[Condition, ...]


async def record_shard_map(
    cluster: Cluster,
    views: Sequence[PodView],
    *,
    grace: float,
    namespace: str,
    name: str,
    now: str,
) -> MapCheck | None:
    """Write what ``views`` say; None when the function is gone or being deleted."""
    path = function_path(namespace, name)
    body = await cluster.get(path)
    if body is None or body["metadata"].get("deletionTimestamp"):
        return None
    status = body.get("status") or {}
    previous = status.get("conditions") or []
    found = agreement(views, status.get("shardMap"), now, grace)
    rendered = render_conditions(
        previous, [found.condition], body["metadata"].get("generation"), now
    )
    # Conditions are one list in a merge patch: the others go back as they were.
    conditions = [c for c in previous if c.get("type") != SHARD_MAP_AGREED] + rendered
    await cluster.patch_status(path, {"shardMap": found.status, "conditions": conditions})
    return MapCheck(body, found.condition, tuple(transitions(previous, [found.condition])))
