"""Value entities: state replaced (or deleted) as a whole by each command."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from datetime import timedelta
from typing import Any, Generic, TypeVar

from google.protobuf.message import DecodeError, Message

from larder_sdk import _protocol as proto
from larder_sdk._component import EntityComponent
from larder_sdk._context import ValueEntityContext
from larder_sdk._definition import (
    CommandHandler,
    ServiceRef,
    suggest,
)
from larder_sdk._errors import CommandFailed
from larder_sdk._replies import WrongReturnError, fill_reply_or_forward, unexpected_failure

logger = logging.getLogger("larder_sdk.valueentity")

S = TypeVar("S", bound=Message)
F = TypeVar("F", bound=Callable[..., Any])


class ValueEntity(EntityComponent[S]):
    """An entity whose state is stored as a whole.

    Command handlers `(state, command, context) -> reply` call
    `context.update_state(...)` or `context.delete_state()`.
    """

    component_type = proto.VALUE_ENTITY_COMPONENT
    kind = "value entity"
    command_parameters = ("state", "command", "context")

    def __init__(
        self,
        service: ServiceRef,
        *,
        entity_type: str,
        state_type: type[S],
        initial_state: Callable[[str], S] | None = None,
        passivation_timeout: timedelta | None = None,
        forward_headers: Iterable[str] = (),
    ) -> None:
        super().__init__(
            service,
            entity_type=entity_type,
            state_type=state_type,
            initial_state=initial_state,
            passivation_timeout=passivation_timeout,
            forward_headers=forward_headers,
        )
        self._raise_init_problems(self.subject)


class StreamFailure(Exception):
    """The entity cannot go on on this stream."""


def _copy(state: S) -> S:
    clone = type(state)()
    clone.CopyFrom(state)
    return clone


def _stored_state(entity: ValueEntity[S], value: Any) -> S:
    type_name = proto.type_name_of(value.type_url)
    expected = entity.state_type.DESCRIPTOR.full_name
    if type_name != expected:
        raise TypeError(f"the stored state is a {type_name}, not a {expected}")
    return entity.state_type.FromString(value.value)


class ValueEntityInstance(Generic[S]):
    __slots__ = ("entity", "entity_id", "state", "subject")

    def __init__(self, entity: ValueEntity[S], entity_id: str, state: Any = None) -> None:
        self.entity = entity
        self.entity_id = entity_id
        self.subject = f"{entity.subject}, entity '{entity_id}'"
        try:
            if state is not None and state.HasField("value"):
                self.state = _stored_state(entity, state.value)
            else:
                self.state = entity.initial_state(entity_id)
        except Exception as e:
            raise StreamFailure(
                f"{self.subject}: cannot initialise: {type(e).__name__}: {e}"
            ) from e

    def _failed(self, command_id: int, description: str) -> Any:
        out = proto.valueentity.ValueEntityStreamOut()
        out.reply.command_id = command_id
        failure = out.reply.client_action.failure
        failure.command_id = command_id
        failure.description = description
        return out

    async def handle_command(self, command: Any) -> Any:
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
        ctx: ValueEntityContext[S] = ValueEntityContext(
            self.entity_id,
            command_id,
            name,
            entity.state_type,
            command.metadata if command.HasField("metadata") else None,
        )
        try:
            out, new_state = await self._run(handler, message, ctx)
        except CommandFailed as e:
            return self._failed(command_id, e.description)
        except Exception as e:
            logger.exception("%s: command %r (id %d) failed", self.subject, name, command_id)
            return self._failed(command_id, unexpected_failure(self.subject, name, e))
        finally:
            ctx._active = False
        out.reply.command_id = command_id
        self.state = new_state
        return out

    async def _run(
        self, handler: CommandHandler, message: Message, ctx: ValueEntityContext[S]
    ) -> tuple[Any, S]:
        """Run the handler and build the reply; raises on any failure, changing nothing."""
        result = handler.fn(_copy(self.state), message, ctx)
        if handler.is_async:
            result = await result
        if ctx._failure is not None:
            raise CommandFailed(ctx._failure)
        out = proto.valueentity.ValueEntityStreamOut()
        reply = out.reply
        action = reply.client_action
        if fill_reply_or_forward(action.reply, action.forward, result, handler) is None:
            raise WrongReturnError(
                f"the handler returned None; command {ctx.command_name!r} must reply with "
                f"{handler.output_type.DESCRIPTOR.full_name}, a Reply or a Forward"
            )
        new_state = self.state
        if ctx.deleted:
            reply.state_action.delete.SetInParent()
            new_state = self.entity.initial_state(self.entity_id)
        elif ctx.new_state is not None:
            new_state = _copy(ctx.new_state)
            value = reply.state_action.update.value
            value.type_url = proto.TYPE_URL_PREFIX + new_state.DESCRIPTOR.full_name
            value.value = new_state.SerializeToString()
        for effect in ctx.side_effects:
            reply.side_effects.append(effect.to_protocol())
        return out, new_state


def _stream_failure(description: str) -> Any:
    out = proto.valueentity.ValueEntityStreamOut()
    out.failure.description = description
    return out


async def handle_stream(
    requests: AsyncIterator[Any], entities: Mapping[str, ValueEntity[Any]]
) -> AsyncIterator[Any]:
    """Serve one `ValueEntities/Handle` stream: Init, then commands."""
    instance: ValueEntityInstance[Any] | None = None
    async for message in requests:
        if instance is not None and message.WhichOneof("message") == "command":
            yield await instance.handle_command(message.command)
            continue
        try:
            instance = _init(instance, message, entities)
        except StreamFailure as e:
            logger.exception("value entity stream abandoned")
            yield _stream_failure(str(e))
            return


def _init(
    instance: ValueEntityInstance[Any] | None,
    message: Any,
    entities: Mapping[str, ValueEntity[Any]],
) -> ValueEntityInstance[Any]:
    which = message.WhichOneof("message")
    if which != "init":
        raise StreamFailure(
            f"received {which or 'an empty message'} before Init; the first message "
            "on an entity stream must be Init"
        )
    if instance is not None:
        raise StreamFailure(f"{instance.subject}: received a second Init on the same stream")
    init = message.init
    entity = entities.get(init.service_name)
    if entity is None:
        raise StreamFailure(
            f"no value entity serves {init.service_name!r}; this user function "
            f"has: {', '.join(sorted(entities)) or 'none'}"
        )
    return ValueEntityInstance(
        entity, init.entity_id, init.state if init.HasField("state") else None
    )
