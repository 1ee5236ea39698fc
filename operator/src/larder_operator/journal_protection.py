"""Protect a Journal in use, as Kubernetes protects a PersistentVolumeClaim in use.

While any StatefulFunction names a Journal, the Journal carries our finalizer, so deleting it
only marks it; a Warning Event names the functions holding it, and the finalizer goes (and the
deletion completes) as soon as none is left. This finalizer is deliberate and ours: it is the
only one the operator sets, and only on Journals that are in use.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from larder_operator.children import API_VERSION, GROUP
from larder_operator.events import EventPoster, EventType
from larder_operator.kube import Cluster, ConflictError, collection_path, journal_path
from larder_operator.status import Reason

IN_USE_FINALIZER = f"{GROUP}/journal-in-use"
# A conditional write that finds the Journal changed reads it again, this many times in all.
_ATTEMPTS = 3


@dataclass(frozen=True)
class Protection:
    """What to do about one Journal's finalizer."""

    # The finalizers to write, or None to leave them as they are.
    finalizers: tuple[str, ...] | None
    # The functions its pending deletion waits for (empty: it is not waiting).
    holding: tuple[str, ...]


def decide(meta: Mapping[str, Any], users: Collection[str]) -> Protection:
    """From the Journal's metadata and the names of the functions using it."""
    current = tuple(meta.get("finalizers") or ())
    protected = IN_USE_FINALIZER in current
    deleting = bool(meta.get("deletionTimestamp"))
    names = tuple(sorted(set(users)))
    if names and not protected and not deleting:
        # Kubernetes allows no new finalizer on an object being deleted; too late then.
        return Protection((*current, IN_USE_FINALIZER), ())
    if not names and protected:
        return Protection(tuple(f for f in current if f != IN_USE_FINALIZER), ())
    return Protection(None, names if deleting and protected else ())


def in_use_message(name: str, holding: Collection[str]) -> str:
    return (
        f"Journal {name!r} is used by {', '.join(holding)}; its deletion waits until they are "
        "deleted or their spec.journal names another Journal"
    )


async def functions_using(cluster: Cluster, namespace: str, name: str) -> list[str]:
    """Read from the API, not from an index: a finalizer must not go on stale knowledge."""
    items = await cluster.list(collection_path(API_VERSION, "StatefulFunction", namespace))
    return [
        str(item["metadata"]["name"])
        for item in items
        if (item.get("spec") or {}).get("journal") == name
    ]


class JournalGuard:
    """Applies ``decide`` to Journals; remembers which Warnings it posted, to post each once."""

    def __init__(self, cluster: Cluster, events: EventPoster) -> None:
        self._cluster = cluster
        self._events = events
        self._warned: dict[str, tuple[str, ...]] = {}

    async def protect(
        self,
        namespace: str,
        name: str,
        users: Collection[str],
        now: str,
        body: Mapping[str, Any] | None = None,
    ) -> None:
        """``users`` may come from an index: it only decides whether to look closer.

        Raises ClusterError when the API keeps failing: try again later.
        """
        for attempt in range(_ATTEMPTS):
            try:
                await self._protect(namespace, name, users, now, body)
            except ConflictError:
                # Changed since ``body`` was read (often by our own status patch): read again.
                if attempt == _ATTEMPTS - 1:
                    raise
                body = None
            else:
                return

    async def _protect(
        self,
        namespace: str,
        name: str,
        users: Collection[str],
        now: str,
        body: Mapping[str, Any] | None,
    ) -> None:
        if body is None:
            body = await self._cluster.get(journal_path(namespace, name))
            if body is None:
                return
        meta = body.get("metadata") or {}
        decision = decide(meta, users)
        if decision.finalizers is None and not decision.holding:
            return
        decision = decide(meta, await functions_using(self._cluster, namespace, name))
        if decision.finalizers is not None:
            # The resourceVersion makes the write conditional: nobody's finalizer is lost.
            patch = {
                "metadata": {
                    "finalizers": list(decision.finalizers),
                    "resourceVersion": meta.get("resourceVersion"),
                }
            }
            await self._cluster.patch(journal_path(namespace, name), patch)
        uid = str(meta.get("uid"))
        if not decision.holding:
            self._warned.pop(uid, None)
        elif self._warned.get(uid) != decision.holding:
            self._warned[uid] = decision.holding
            await self._events.post(
                body,
                EventType.WARNING,
                str(Reason.JOURNAL_IN_USE),
                in_use_message(name, decision.holding),
                now,
            )
