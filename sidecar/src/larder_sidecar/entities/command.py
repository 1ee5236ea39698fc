"""A command on its way to an entity, and the key that names the entity."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, NamedTuple

from ..invoke import InvokeError, MetadataPairs
from ..model import Method
from ..outcome import Outcome


class EntityKey(NamedTuple):
    entity_type: str
    entity_id: str


@dataclass(slots=True)
class Command:
    method: Method
    entity_id: str
    payload: bytes
    metadata: MetadataPairs
    future: asyncio.Future[Outcome]
    """Settles with the outcome or an `InvokeError`; cancelled when the caller gives up."""
    parent: Any = None
    """With tracing on: the context it was submitted in (its spans go below it)."""
    queued_ns: int = 0
    """With tracing on: when the entity queued it (for the span of its wait)."""
    trace: Any = None
    """With tracing on: the context of its handling span, for the write that stores it
    (which runs in the entity's writer task)."""

    @property
    def key(self) -> EntityKey:
        return EntityKey(self.method.component.entity_type, self.entity_id)


def settle_error(future: asyncio.Future[Outcome], error: InvokeError) -> None:
    if not future.done():
        future.set_exception(error)
