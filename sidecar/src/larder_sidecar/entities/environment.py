"""What the active entities of one component need from the sidecar.

An entity gets this instead of a pointer back to its host (as an Orleans activation
gets its grain type's shared context), so the entity task depends on a handful of
named things, and tests can hand it fakes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..journal.base import Journal
from ..metrics import Metrics
from .command import Command, EntityKey
from .idempotency import IdempotencyPolicy
from .idle_timers import IdleTimers

if TYPE_CHECKING:
    from .entity import Entity


@dataclass(frozen=True, slots=True)
class EntityEnvironment:
    entity_type: str
    service: str
    idle_timeout: float
    """Seconds without a command before the entity passivates."""
    journal: Journal
    metrics: Metrics
    stub: Any
    """The component type's protocol stub; `Handle()` opens one entity stream."""
    user_function_ready: Callable[[], Awaitable[None]]
    """Waits (briefly) for the user function's channel; raises `InvokeError`."""
    admits: Callable[[EntityKey], bool]
    """Whether the host still takes commands for an entity; when it stops, the entity
    finishes the commands it has and releases itself."""
    exited: Callable[[Entity, Sequence[Command]], None]
    """Called once the entity's journal writes are done: the host forgets it and sends
    the commands that reached it too late on again."""
    idempotency: IdempotencyPolicy = field(default_factory=IdempotencyPolicy)
    """How long, and how many, idempotency records an entity keeps."""
    idle_timers: IdleTimers = field(default_factory=IdleTimers)
    """When this component's idle entities reach `idle_timeout`: one loop timer for all."""
