"""Kubernetes Events about our resources, posted by the operator itself as ``larder-operator``.

Not through kopf's ``kopf.info``/``kopf.warn``: those post only from inside kopf's
per-object handler tasks, and the periodic resync (resync.py) runs outside them.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping
from enum import StrEnum
from typing import Any

from larder_operator.children import FIELD_MANAGER
from larder_operator.kube import Cluster, ClusterError, collection_path
from larder_operator.status import Condition

logger = logging.getLogger(__name__)

COMPONENT = FIELD_MANAGER  # "larder-operator": the From column of `kubectl describe`
# The API server refuses longer messages; keep the start and the end (the usual hint).
_MAX_MESSAGE = 1024


class EventType(StrEnum):
    NORMAL = "Normal"
    WARNING = "Warning"


def event_body(
    involved: Mapping[str, Any],
    type_: EventType,
    reason: str,
    message: str,
    *,
    now: str,
    instance: str,
) -> dict[str, Any]:
    """A core/v1 Event about ``involved`` (a resource body), reported by ``instance``."""
    meta = involved.get("metadata") or {}
    namespace = meta["namespace"]
    if len(message) > _MAX_MESSAGE:
        half = _MAX_MESSAGE // 2 - 2
        message = f"{message[:half]}...{message[-half:]}"
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{meta.get('name', 'larder')}.", "namespace": namespace},
        "involvedObject": {
            "apiVersion": involved.get("apiVersion"),
            "kind": involved.get("kind"),
            "name": meta.get("name"),
            "namespace": namespace,
            "uid": meta.get("uid"),
        },
        "type": str(type_),
        "reason": reason,
        "message": message,
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "reportingInstance": instance,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }


def condition_event(cond: Condition) -> tuple[EventType, str, str]:
    """Type, reason and message of the Event for a condition that changed.

    True is good news (a recovery or a milestone): Normal. False is a Warning.
    """
    type_ = EventType.NORMAL if cond.status else EventType.WARNING
    return type_, str(cond.reason), f"{cond.type}={cond.status_word}: {cond.message}"


class EventPoster:
    """Posts Events; a failure is logged, never raised: Events help, they are not state."""

    def __init__(self, cluster: Cluster, instance: str) -> None:
        self._cluster = cluster
        self._instance = instance

    async def post(
        self,
        involved: Mapping[str, Any],
        type_: EventType,
        reason: str,
        message: str,
        now: str,
    ) -> None:
        body = event_body(involved, type_, reason, message, now=now, instance=self._instance)
        path = collection_path("v1", "Event", body["metadata"]["namespace"])
        try:
            await self._cluster.create(path, body)
        except ClusterError as e:
            logger.warning("could not post the Event %s %s: %s", type_, reason, e)

    async def transitions(
        self, involved: Mapping[str, Any], changed: Collection[Condition], now: str
    ) -> None:
        for cond in changed:
            await self.post(involved, *condition_event(cond), now)
