"""The entity host: one supervised task per active entity (`entity.py`), created on
the first command for it and forgotten when it passivates or is released.

The host is the local *owner* of entities (the router's `Owner`): it knows nothing of
other pods. It can stop serving a chosen set of entities (`release`, for hand-off)
or all of them (`shutdown`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import grpc
import grpc.aio

from .. import tracing
from ..invoke import InvokeError, MetadataPairs
from ..journal.base import Journal
from ..metrics import Metrics
from ..model import Component, Kind, Method
from ..outcome import Outcome
from .command import Command, EntityKey, settle_error
from .entity import Entity
from .environment import EntityEnvironment
from .idempotency import IdempotencyPolicy
from .kinds import KINDS, EntityKind
from .lifecycle import State

USER_FUNCTION_CONNECT_TIMEOUT = 2.0

EntityPredicate = Callable[[EntityKey], bool]
Reenter = Callable[[Command], None]
"""Takes a command a stopping entity did not handle; settles its future eventually."""


class EntityReleased(InvokeError):
    """This host has released the entity (hand-off): it is served elsewhere, or will
    be once the new owner has it. Retryable."""

    def __init__(self, key: EntityKey) -> None:
        super().__init__(
            grpc.StatusCode.UNAVAILABLE,
            f"entity {key.entity_type}/{key.entity_id} is being handed over to another "
            "sidecar; retry the command",
        )
        self.key = key


class EntityHost:
    """Owns every active entity of this sidecar."""

    def __init__(
        self,
        journal: Journal,
        channel: grpc.aio.Channel,
        metrics: Metrics,
        default_passivation: float,
        *,
        reenter: Reenter | None = None,
        kinds: Mapping[Kind, EntityKind] = KINDS,
        idempotency: IdempotencyPolicy | None = None,
        streams: Any = None,
    ) -> None:
        """`reenter` routes the commands a stopping entity did not handle (the sidecar
        passes its router's path); without it they come straight back here. `streams`
        opens the entities' streams: anything with grpc.aio's `stream_stream`, as the
        generated stubs use it (the sidecar passes its `h2.channel.StreamChannel`);
        without it, `channel` does."""
        self.journal = journal
        self.metrics = metrics
        self._channel = channel
        self._default_passivation = default_passivation
        self._reenter = reenter or self._enqueue
        self._kinds = kinds
        self._idempotency = idempotency or IdempotencyPolicy()
        # One stub per component type, shared by its entities.
        self._stubs = {kind: k.stub(streams or channel) for kind, k in kinds.items()}
        self._environments: dict[str, EntityEnvironment] = {}
        self._entities: dict[EntityKey, Entity] = {}
        self._released: list[EntityPredicate] = []
        self._accepting = True
        # The loop, held at the first command: in CPython 3.11 every
        # asyncio.get_running_loop() is a getpid system call.
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def active(self) -> int:
        return len(self._entities)

    def state(self, key: EntityKey) -> State | None:
        """The lifecycle state of an active entity; None when it is not active here."""
        entity = self._entities.get(key)
        return None if entity is None else entity.state

    # --- the Owner seam -----------------------------------------------------------------

    async def submit(
        self, method: Method, entity_id: str, payload: bytes, metadata: MetadataPairs
    ) -> Outcome:
        """Run a command on `entity_id`; raises InvokeError (`EntityReleased` when this
        host no longer serves the entity)."""
        return await self.enqueue(method, entity_id, payload, metadata)

    def enqueue(
        self, method: Method, entity_id: str, payload: bytes, metadata: MetadataPairs
    ) -> asyncio.Future[Outcome]:
        """Queue a command for `entity_id` at once; the future settles with its outcome
        or InvokeError, and cancelling it withdraws the command if still queued."""
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        future: asyncio.Future[Outcome] = loop.create_future()
        # With tracing on, the entity's spans go under the submitter's current span.
        self._enqueue(
            Command(method, entity_id, payload, metadata, future, parent=tracing.capture())
        )
        return future

    def _enqueue(self, command: Command) -> None:
        key = command.key
        refusal = self._refusal(key)
        if refusal is not None:
            settle_error(command.future, refusal)
            return
        entity = self._entities.get(key)
        if entity is None:
            entity = self._activate(command.method.component, key)
        entity.submit(command)

    def _refusal(self, key: EntityKey) -> InvokeError | None:
        if not self._accepting:
            return InvokeError(grpc.StatusCode.UNAVAILABLE, "the sidecar is shutting down")
        if self._released and any(released(key) for released in self._released):
            return EntityReleased(key)
        return None

    def _admits(self, key: EntityKey) -> bool:
        return self._refusal(key) is None

    # --- entities -----------------------------------------------------------------------

    def _activate(self, component: Component, key: EntityKey) -> Entity:
        kind = self._kinds.get(component.kind)
        if kind is None:  # discovery refuses the others
            raise InvokeError(
                grpc.StatusCode.UNIMPLEMENTED,
                f"{component.kind.value} components are not supported",
            )
        entity = kind.entity(self._environment(component), key.entity_id)
        # Keyed by the entity's own key: the command's would be one more tuple to keep.
        self._entities[entity.key] = entity
        return entity

    def _environment(self, component: Component) -> EntityEnvironment:
        env = self._environments.get(component.service)
        if env is None:
            env = self._environments[component.service] = EntityEnvironment(
                entity_type=component.entity_type,
                service=component.service,
                idle_timeout=component.passivation_timeout or self._default_passivation,
                journal=self.journal,
                metrics=self.metrics,
                stub=self._stubs[component.kind],
                user_function_ready=self.user_function_ready,
                admits=self._admits,
                exited=self._exited,
                idempotency=self._idempotency,
            )
        return env

    def _exited(self, entity: Entity, late: Sequence[Command]) -> None:
        if self._entities.get(entity.key) is entity:
            del self._entities[entity.key]
        # After forgetting it, so these start a new incarnation (or are refused).
        for command in late:
            self._reenter(command)

    async def user_function_ready(self) -> None:
        """Wait (briefly) for the connection to the user function.

        After the user function restarts, the channel sits in reconnect back-off; a
        stream opened then would fail at once. Waiting here costs nothing when the
        channel is up, and only happens on activation.
        """
        if self._channel.get_state(try_to_connect=True) is grpc.ChannelConnectivity.READY:
            return
        try:
            await asyncio.wait_for(self._channel.channel_ready(), USER_FUNCTION_CONNECT_TIMEOUT)
        except TimeoutError:
            raise InvokeError(
                grpc.StatusCode.UNAVAILABLE,
                f"the user function is not reachable (waited {USER_FUNCTION_CONNECT_TIMEOUT:.0f}s "
                "to connect); it may be restarting",
            ) from None

    # --- giving entities up -------------------------------------------------------------

    async def release(self, predicate: EntityPredicate) -> int:
        """Stop taking commands for the entities `predicate` selects, active or not.

        Commands already queued at them finish, with their journal writes; then they
        passivate. New commands for them fail with `EntityReleased` until `readmit`.
        Returns how many active entities were released.
        """
        self._released.append(predicate)
        return await self._stop([e for key, e in self._entities.items() if predicate(key)])

    def readmit(self, predicate: EntityPredicate) -> None:
        """Take commands again for the entities an earlier `release(predicate)` refused."""
        self._released.remove(predicate)

    async def shutdown(self) -> None:
        """Stop accepting, let queued commands finish, passivate everything."""
        self._accepting = False
        await self._stop(list(self._entities.values()))

    async def _stop(self, entities: Sequence[Entity]) -> int:
        for entity in entities:
            entity.wake()
        if entities:
            # Not gather: a caller giving up must not cancel entities mid-write.
            await asyncio.wait([e.task for e in entities])
        return len(entities)
