"""The entity manager: one supervised task per active entity (`entity.py`), created on
the first command for it and detached when it passivates or stops.
"""

from __future__ import annotations

import asyncio

import grpc
import grpc.aio

from .entity import Command, Entity, settle_error
from .event_sourced import EventSourcedEntity
from .invoke import InvokeError, MetadataPairs
from .journal.base import Journal
from .metrics import Metrics
from .model import Kind, Method
from .outcome import Outcome
from .protocol import event_sourced_entity_pb2_grpc as es_grpc
from .protocol import value_entity_pb2_grpc as ve_grpc
from .value_entity import ValueEntity

USER_FUNCTION_CONNECT_TIMEOUT = 2.0


class EntityManager:
    """Owns every active entity of this sidecar."""

    def __init__(
        self,
        journal: Journal,
        channel: grpc.aio.Channel,
        metrics: Metrics,
        default_passivation: float,
    ) -> None:
        self.journal = journal
        self.metrics = metrics
        self._channel = channel
        self.es_stub = es_grpc.EventSourcedEntitiesStub(channel)
        self.ve_stub = ve_grpc.ValueEntitiesStub(channel)
        self._default_passivation = default_passivation
        self._entities: dict[tuple[str, str], Entity] = {}
        self._accepting = True

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

    @property
    def active(self) -> int:
        return len(self._entities)

    def submit(
        self, method: Method, entity_id: str, payload: bytes, metadata: MetadataPairs
    ) -> asyncio.Future[Outcome]:
        """Queue a command for `entity_id`; the future settles with its outcome or InvokeError."""
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        if not self._accepting:
            future.set_exception(
                InvokeError(grpc.StatusCode.UNAVAILABLE, "the sidecar is shutting down")
            )
            return future
        self.resubmit(Command(method, entity_id, payload, metadata, future))
        return future

    def resubmit(self, command: Command) -> None:
        if not self._accepting:
            settle_error(
                command.future,
                InvokeError(grpc.StatusCode.UNAVAILABLE, "the sidecar is shutting down"),
            )
            return
        component = command.method.component
        key = (component.entity_type, command.entity_id)
        entity = self._entities.get(key)
        if entity is None:
            cls = EventSourcedEntity if component.kind is Kind.EVENT_SOURCED else ValueEntity
            entity = cls(
                self,
                component.entity_type,
                component.service,
                key[1],
                component.passivation_timeout or self._default_passivation,
            )
            self._entities[key] = entity
        entity.submit(command)

    def detach(self, entity: Entity) -> None:
        key = (entity.entity_type, entity.entity_id)
        if self._entities.get(key) is entity:
            del self._entities[key]

    async def shutdown(self) -> None:
        """Stop accepting, let queued commands finish, passivate everything."""
        self._accepting = False
        entities = list(self._entities.values())
        for entity in entities:
            entity.stop()
        if entities:
            await asyncio.gather(*(e.task for e in entities), return_exceptions=True)
