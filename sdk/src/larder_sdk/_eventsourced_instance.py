"""One live event-sourced entity: its state, its sequence number, its command handling."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any, Generic, TypeVar

from google.protobuf.message import Message

from larder_sdk import _protocol as proto
from larder_sdk._commands import failure_description, run_handler
from larder_sdk._context import EventSourcedContext
from larder_sdk._definition import CommandHandler
from larder_sdk._entity_stream import (
    StreamFailure,
    copy_state,
    failed_reply,
    fill_client_action,
    resolve_command,
    serve_stream,
)
from larder_sdk._errors import CommandFailed
from larder_sdk._eventsourced import EventSourcedEntity

logger = logging.getLogger("larder_sdk.eventsourced")

S = TypeVar("S", bound=Message)


_OUT = proto.eventsourced.EventSourcedStreamOut


class EventSourcedInstance(Generic[S]):
    """The in-memory state of one entity, advanced by replayed events and handled commands."""

    __slots__ = ("entity", "entity_id", "sequence", "state", "subject")

    def __init__(self, entity: EventSourcedEntity[S], entity_id: str, snapshot: Any = None) -> None:
        self.entity = entity
        self.entity_id = entity_id
        self.subject = f"{entity.subject}, entity '{entity_id}'"
        try:
            if snapshot is not None:
                self.sequence = int(snapshot.snapshot_sequence)
                self.state = entity.state_from_snapshot(
                    proto.type_name_of(snapshot.snapshot.type_url), snapshot.snapshot.value
                )
            else:
                self.sequence = 0
                self.state = entity.initial_state(entity_id)
        except Exception as e:
            raise StreamFailure(
                f"{self.subject}: cannot initialise: {type(e).__name__}: {e}"
            ) from e

    def replay(self, event: Any) -> None:
        """Apply one journalled event (`EventSourcedEvent`)."""
        type_name = proto.type_name_of(event.payload.type_url)
        try:
            message = self.entity.event_class(type_name).FromString(event.payload.value)
            # Replay may mutate in place: if it fails, the whole stream is abandoned anyway.
            self.state = self.entity.apply_event(self.state, message)
        except Exception as e:
            raise StreamFailure(
                f"{self.subject}: cannot replay event {event.sequence} ({type_name}): "
                f"{type(e).__name__}: {e}"
            ) from e
        self.sequence = int(event.sequence)

    async def handle_command(self, command: Any) -> Any:
        """Run one command; always answers with a reply (a failed one if anything went wrong).

        The state and sequence change only when the whole command succeeded, so any
        exception rolls back everything the command emitted.
        """
        command_id = command.id
        try:
            handler, message = resolve_command(self.subject, self.entity.handlers, command)
        except CommandFailed as e:
            return failed_reply(_OUT, command_id, e.description)
        ctx = EventSourcedContext(
            self.entity_id,
            command_id,
            command.name,
            self.sequence,
            command.metadata if command.HasField("metadata") else None,
        )
        try:
            out, state, sequence = await self._run(handler, message, ctx)
        except Exception as e:
            description = failure_description(logger, self.subject, command.name, e, command_id)
            return failed_reply(_OUT, command_id, description)
        finally:
            ctx._active = False
        out.reply.command_id = command_id
        self.state = state
        self.sequence = sequence
        return out

    async def _run(
        self, handler: CommandHandler, message: Message, ctx: EventSourcedContext
    ) -> tuple[Any, S, int]:
        """Run the handler and build the reply; raises on any failure, changing nothing."""
        entity = self.entity
        result = await run_handler(handler, ctx, copy_state(self.state), message)
        out = _OUT()
        reply = out.reply
        fill_client_action(reply.client_action, result, handler, ctx.command_name)
        state = self.state
        sequence = self.sequence
        if ctx.events:
            state = copy_state(state)
            events = reply.events
            for event in ctx.events:
                state = entity.apply_event(state, event)
                events.add(
                    type_url=proto.TYPE_URL_PREFIX + event.DESCRIPTOR.full_name,
                    value=event.SerializeToString(),
                )
            sequence += len(ctx.events)
            every = entity.snapshot_every
            if every and sequence // every != self.sequence // every:
                # The snapshot holds the state after all of this command's events.
                reply.snapshot.type_url = proto.TYPE_URL_PREFIX + state.DESCRIPTOR.full_name
                reply.snapshot.value = state.SerializeToString()
        for effect in ctx.side_effects:
            reply.side_effects.append(effect.to_protocol())
        return out, state, sequence


def handle_stream(
    requests: AsyncIterator[Any], entities: Mapping[str, EventSourcedEntity[Any]]
) -> AsyncIterator[Any]:
    """Serve one `EventSourcedEntities/Handle` stream: Init, replayed events, then commands."""

    def advance(
        instance: EventSourcedInstance[Any] | None, message: Any
    ) -> EventSourcedInstance[Any]:
        return _advance(instance, message, entities)

    return serve_stream(requests, advance, _OUT, logger)


def _advance(
    instance: EventSourcedInstance[Any] | None,
    message: Any,
    entities: Mapping[str, EventSourcedEntity[Any]],
) -> EventSourcedInstance[Any]:
    """Handle an Init or a replayed event; anything out of order is a StreamFailure."""
    which = message.WhichOneof("message")
    if which == "init":
        if instance is not None:
            raise StreamFailure(f"{instance.subject}: received a second Init on the same stream")
        init = message.init
        entity = entities.get(init.service_name)
        if entity is None:
            raise StreamFailure(
                f"no event-sourced entity serves {init.service_name!r}; this user "
                f"function has: {', '.join(sorted(entities)) or 'none'}"
            )
        return EventSourcedInstance(
            entity, init.entity_id, init.snapshot if init.HasField("snapshot") else None
        )
    if which == "event" and instance is not None:
        instance.replay(message.event)
        return instance
    raise StreamFailure(
        f"received {which or 'an empty message'} before Init; the first message "
        "on an entity stream must be Init"
    )
