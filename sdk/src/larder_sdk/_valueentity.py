"""Value entities: state replaced (or deleted) as a whole by each command."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from datetime import timedelta
from typing import Any, Generic, TypeVar

from google.protobuf.message import Message

from larder_sdk import _protocol as proto
from larder_sdk._commands import failure_description, run_handler
from larder_sdk._component import EntityComponent
from larder_sdk._context import ValueEntityContext
from larder_sdk._definition import CommandHandler, ServiceRef
from larder_sdk._entity_stream import (
    StreamFailure,
    copy_state,
    failed_reply,
    fill_client_action,
    resolve_command,
    serve_stream,
)
from larder_sdk._errors import CommandFailed

logger = logging.getLogger("larder_sdk.valueentity")

S = TypeVar("S", bound=Message)


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


def _stored_state(entity: ValueEntity[S], value: Any) -> S:
    type_name = proto.type_name_of(value.type_url)
    expected = entity.state_type.DESCRIPTOR.full_name
    if type_name != expected:
        raise TypeError(f"the stored state is a {type_name}, not a {expected}")
    return entity.state_type.FromString(value.value)


_OUT = proto.valueentity.ValueEntityStreamOut


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

    async def handle_command(self, command: Any) -> Any:
        """Run one command; always answers with a reply (a failed one if anything went wrong)."""
        command_id = command.id
        try:
            handler, message = resolve_command(self.subject, self.entity.handlers, command)
        except CommandFailed as e:
            return failed_reply(_OUT, command_id, e.description)
        ctx: ValueEntityContext[S] = ValueEntityContext(
            self.entity_id,
            command_id,
            command.name,
            self.entity.state_type,
            command.metadata if command.HasField("metadata") else None,
        )
        try:
            out, new_state = await self._run(handler, message, ctx)
        except Exception as e:
            description = failure_description(logger, self.subject, command.name, e, command_id)
            return failed_reply(_OUT, command_id, description)
        finally:
            ctx._active = False
        out.reply.command_id = command_id
        self.state = new_state
        return out

    async def _run(
        self, handler: CommandHandler, message: Message, ctx: ValueEntityContext[S]
    ) -> tuple[Any, S]:
        """Run the handler and build the reply; raises on any failure, changing nothing."""
        result = await run_handler(handler, ctx, copy_state(self.state), message)
        out = _OUT()
        reply = out.reply
        fill_client_action(reply.client_action, result, handler, ctx.command_name)
        new_state = self.state
        if ctx.deleted:
            reply.state_action.delete.SetInParent()
            new_state = self.entity.initial_state(self.entity_id)
        elif ctx.new_state is not None:
            new_state = copy_state(ctx.new_state)
            value = reply.state_action.update.value
            value.type_url = proto.TYPE_URL_PREFIX + new_state.DESCRIPTOR.full_name
            value.value = new_state.SerializeToString()
        for effect in ctx.side_effects:
            reply.side_effects.append(effect.to_protocol())
        return out, new_state


def handle_stream(
    requests: AsyncIterator[Any], entities: Mapping[str, ValueEntity[Any]]
) -> AsyncIterator[Any]:
    """Serve one `ValueEntities/Handle` stream: Init, then commands."""

    def init(instance: ValueEntityInstance[Any] | None, message: Any) -> ValueEntityInstance[Any]:
        return _init(instance, message, entities)

    return serve_stream(requests, init, _OUT, logger)


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
