"""One live event-sourced entity: its state, its sequence number, its command handling."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any, Generic, TypeVar

from google.protobuf.message import DecodeError, Message

from larder_sdk import _protocol as proto
from larder_sdk._context import EventSourcedContext
from larder_sdk._definition import CommandHandler, suggest
from larder_sdk._errors import CommandFailed
from larder_sdk._eventsourced import EventSourcedEntity
from larder_sdk._replies import (
    WrongReturnError,
    fill_reply_or_forward,
    unexpected_failure,
)

logger = logging.getLogger("larder_sdk.eventsourced")

S = TypeVar("S", bound=Message)


class StreamFailure(Exception):
    """The entity cannot go on on this stream; the sidecar must restart it from the journal."""


def _copy(state: S) -> S:
    clone = type(state)()
    clone.CopyFrom(state)
    return clone


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

    def _failed(self, command_id: int, description: str) -> Any:
        out = proto.eventsourced.EventSourcedStreamOut()
        out.reply.command_id = command_id
        failure = out.reply.client_action.failure
        failure.command_id = command_id
        failure.description = description
        return out

    async def handle_command(self, command: Any) -> Any:
        """Run one command; always answers with a reply (a failed one if anything went wrong).

        The state and sequence change only when the whole command succeeded, so any
        exception rolls back everything the command emitted.
        """
        entity = self.entity
        name = command.name
        command_id = command.id
        handler = entity.handlers.get(name)
        if handler is None:
            return self._failed(
                command_id,
                f"{self.subject}: unknown command {name!r}{suggest(name, entity.handlers)}",
            )
        try:
            message = handler.input_type.FromString(command.payload.value)
        except DecodeError as e:
            return self._failed(
                command_id,
                f"{self.subject}: command {name!r}: the payload is not a valid "
                f"{handler.input_type.DESCRIPTOR.full_name}: {e}",
            )
        ctx = EventSourcedContext(
            self.entity_id,
            command_id,
            name,
            self.sequence,
            command.metadata if command.HasField("metadata") else None,
        )
        try:
            out, state, sequence = await self._run(handler, message, ctx)
        except CommandFailed as e:
            return self._failed(command_id, e.description)
        except Exception as e:
            logger.exception("%s: command %r (id %d) failed", self.subject, name, command_id)
            return self._failed(command_id, unexpected_failure(self.subject, name, e))
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
        result = handler.fn(_copy(self.state), message, ctx)
        if handler.is_async:
            result = await result
        if ctx._failure is not None:
            # The handler caught its own ctx.fail(); the failure still stands.
            raise CommandFailed(ctx._failure)
        out = proto.eventsourced.EventSourcedStreamOut()
        reply = out.reply
        action = reply.client_action
        if fill_reply_or_forward(action.reply, action.forward, result, handler) is None:
            raise WrongReturnError(
                f"the handler returned None; command {ctx.command_name!r} must reply with "
                f"{handler.output_type.DESCRIPTOR.full_name}, a Reply or a Forward"
            )
        state = self.state
        sequence = self.sequence
        if ctx.events:
            state = _copy(state)
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


def _stream_failure(description: str) -> Any:
    out = proto.eventsourced.EventSourcedStreamOut()
    out.failure.description = description
    return out


async def handle_stream(
    requests: AsyncIterator[Any], entities: Mapping[str, EventSourcedEntity[Any]]
) -> AsyncIterator[Any]:
    """Serve one `EventSourcedEntities/Handle` stream: Init, replayed events, then commands."""
    instance: EventSourcedInstance[Any] | None = None
    async for message in requests:
        if instance is not None and message.WhichOneof("message") == "command":
            yield await instance.handle_command(message.command)
            continue
        try:
            instance = _advance(instance, message, entities)
        except StreamFailure as e:
            logger.exception("event-sourced stream abandoned")
            yield _stream_failure(str(e))
            return


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
