"""The owner seam: who runs the commands of an entity.

The dispatcher asks the `Router` for the `Owner` of (entity type, entity id) and
submits to it. Every command takes this path: the front ends', Kafka records,
forwards, side effects, and commands a stopping entity did not handle. With one pod
the owner is always the local entity host; sharding plugs in another router whose
owner is the local host or a peer forwarding to another pod, and which may make the
caller wait while the entity's shard is being handed over.
"""

from __future__ import annotations

from typing import Protocol

from ..entities import EntityHost
from ..invoke import MetadataPairs
from ..model import Method
from ..outcome import Outcome


class Owner(Protocol):
    async def submit(
        self, method: Method, entity_id: str, payload: bytes, metadata: MetadataPairs
    ) -> Outcome:
        """Run one command on the entity; raise InvokeError for anything but an outcome."""
        ...


class Router(Protocol):
    async def owner(self, entity_type: str, entity_id: str) -> Owner:
        """The owner to submit the entity's commands to (may wait during a hand-off)."""
        ...


class LocalRouter:
    """Every entity is served by this sidecar's entity host."""

    def __init__(self, host: EntityHost) -> None:
        self._host = host

    async def owner(self, entity_type: str, entity_id: str) -> Owner:
        return self._host
