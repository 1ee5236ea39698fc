"""Actions: stateless handlers for unary and streamed calls."""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import Any, TypeVar

from google.protobuf.descriptor import Descriptor
from google.protobuf.message import Message

from larder_sdk import _protocol as proto
from larder_sdk._commands import (
    check_not_failed,
    decode_payload,
    failure_description,
    run_handler,
)
from larder_sdk._component import Component
from larder_sdk._context import ActionContext
from larder_sdk._definition import (
    CommandHandler,
    Handler,
    ServiceRef,
    check_annotation,
    check_return_annotation,
    describe,
    suggest,
)
from larder_sdk._errors import CommandFailed
from larder_sdk._replies import fill_reply_or_forward

logger = logging.getLogger("larder_sdk.action")

F = TypeVar("F", bound=Callable[..., Any])

_STREAMING_OUT = ("streamed-out", "streamed")
_STREAMING_IN = ("streamed-in", "streamed")


class Action(Component):
    """A stateless component. Handlers take `(command, context)`, or for streamed-in and
    streamed methods `(commands, context)` where `commands` is an async iterator.

    Unary and streamed-in handlers return one reply (a message, `Reply`, `Forward`, or
    None for no reply); streamed-out and streamed handlers are generators that yield them.
    """

    component_type = proto.ACTION_COMPONENT
    kind = "action"
    command_parameters = ("command", "context")

    def __init__(self, service: ServiceRef, *, forward_headers: Iterable[str] = ()) -> None:
        super().__init__(service, forward_headers=forward_headers)
        self._raise_init_problems(self.subject)

    def _allowed_kinds(self) -> tuple[str, ...]:
        return ("unary", "streamed-in", "streamed-out", "streamed")

    def _check_handler_shape(
        self,
        fn: Handler,
        kind: str,
        input_type: Descriptor,
        output_type: Descriptor,
        problems: list[str],
    ) -> None:
        generator = inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn)
        if kind in _STREAMING_OUT and not generator:
            problems.append(
                f"{describe(fn)} handles a {kind} method, so it must be a generator "
                "(use `yield` for each reply)"
            )
        if kind not in _STREAMING_OUT and generator:
            problems.append(f"{describe(fn)} is a generator, but {kind} methods reply once")
        if kind not in _STREAMING_IN:
            check_annotation(fn, 0, "command", input_type, problems)
        if not generator:
            check_return_annotation(fn, output_type, problems)


def _failure_response(description: str) -> Any:
    out = proto.action.ActionResponse()
    out.failure.description = description
    return out


def _response(result: object, handler: CommandHandler, ctx: ActionContext) -> Any:
    out = proto.action.ActionResponse()
    fill_reply_or_forward(out.reply, out.forward, result, handler)
    for effect in ctx.take_side_effects():
        out.side_effects.append(effect.to_protocol())
    return out


class _Call:
    """One action invocation: the handler found for (service, command) and its context."""

    __slots__ = ("action", "ctx", "handler", "subject")

    def __init__(self, actions: Mapping[str, Action], command: Any) -> None:
        service_name, name = command.service_name, command.name
        action = actions.get(service_name)
        if action is None:
            raise LookupError(
                f"no action serves {service_name!r}; this user function has: "
                f"{', '.join(sorted(actions)) or 'none'}"
            )
        handler = action.handlers.get(name)
        if handler is None:
            raise LookupError(
                f"{action.subject}: unknown command {name!r}{suggest(name, action.handlers)}"
            )
        self.action = action
        self.handler = handler
        self.subject = action.subject
        self.ctx = ActionContext(
            service_name, name, command.metadata if command.HasField("metadata") else None
        )

    def decode(self, command: Any) -> Message:
        return decode_payload(self.subject, self.ctx.command_name, self.handler, command.payload)

    def failed(self, e: Exception) -> Any:
        return _failure_response(
            failure_description(logger, self.subject, self.ctx.command_name, e)
        )

    async def payloads(self, requests: AsyncIterator[Any]) -> AsyncIterator[Message]:
        async for command in requests:
            yield self.decode(command)

    async def results(self, first: Any) -> AsyncIterator[object]:
        """Run a generator handler, sync or async, yielding what it yields."""
        fn = self.handler.fn
        produced = fn(first, self.ctx)
        if inspect.isasyncgen(produced):
            async for item in produced:
                yield item
        else:
            for item in produced:
                yield item


async def _single(call: _Call, argument: Any) -> Any:
    try:
        result = await run_handler(call.handler, call.ctx, argument)
        return _response(result, call.handler, call.ctx)
    except Exception as e:
        return call.failed(e)
    finally:
        call.ctx._active = False


async def handle_unary(command: Any, actions: Mapping[str, Action]) -> Any:
    try:
        call = _Call(actions, command)
        argument = call.decode(command)
    except LookupError as e:
        return _failure_response(str(e))
    except CommandFailed as e:
        return _failure_response(e.description)
    return await _single(call, argument)


async def handle_streamed_in(requests: AsyncIterator[Any], actions: Mapping[str, Action]) -> Any:
    first = await anext(requests, None)
    if first is None:
        return _failure_response("the stream ended before its first command")
    try:
        call = _Call(actions, first)
    except LookupError as e:
        return _failure_response(str(e))
    return await _single(call, call.payloads(requests))


async def _stream_out(call: _Call, argument: Any) -> AsyncIterator[Any]:
    try:
        async for item in call.results(argument):
            check_not_failed(call.ctx)
            yield _response(item, call.handler, call.ctx)
        check_not_failed(call.ctx)
        if call.ctx.side_effects:
            # Requested after the last reply: they go out on a response of their own.
            yield _response(None, call.handler, call.ctx)
    except Exception as e:
        yield call.failed(e)
    finally:
        call.ctx._active = False


async def handle_streamed_out(command: Any, actions: Mapping[str, Action]) -> AsyncIterator[Any]:
    try:
        call = _Call(actions, command)
        argument = call.decode(command)
    except LookupError as e:
        yield _failure_response(str(e))
        return
    except CommandFailed as e:
        yield _failure_response(e.description)
        return
    async for response in _stream_out(call, argument):
        yield response


async def handle_streamed(
    requests: AsyncIterator[Any], actions: Mapping[str, Action]
) -> AsyncIterator[Any]:
    first = await anext(requests, None)
    if first is None:
        return
    try:
        call = _Call(actions, first)
    except LookupError as e:
        yield _failure_response(str(e))
        return
    async for response in _stream_out(call, call.payloads(requests)):
        yield response
