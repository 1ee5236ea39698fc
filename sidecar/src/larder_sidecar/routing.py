"""The router: decides whether an entity lives in this sidecar or another pod's.

With one pod everything is local. Sharding (a stable hash of entity type and id to
a shard, shards assigned to ready pods) plugs in as another `Router`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Route:
    local: bool
    owner: str = ""
    """Address of the owning sidecar's internal port, when not local."""


LOCAL = Route(local=True)


class Router(Protocol):
    def route(self, entity_type: str, entity_id: str) -> Route: ...


class LocalRouter:
    """Every entity is served by this sidecar."""

    def route(self, entity_type: str, entity_id: str) -> Route:
        return LOCAL
