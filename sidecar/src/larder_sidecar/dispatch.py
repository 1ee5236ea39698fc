"""The dispatcher: runs a command on whatever component owns it and finishes its effects.

Front ends, forwards and side effects all come through `Dispatcher.call`, so a
forward to another entity type (or, with sharding, another pod) takes the same
path as a client's request. Entity commands go to the owner the router names
(`cluster`); so do the commands a stopping entity hands back (`reenter`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import grpc.aio
from google.protobuf.message import DecodeError, Message

from . import tracing
from .cluster import Router
from .entities import Command
from .entities.idempotency import command_key
from .invoke import InvokeError, InvokeResult, MetadataPairs, MethodModel
from .metrics import Metrics
from .model import KeyError_, Kind, Method, UserFunctionModel
from .outcome import Outcome, metadata_pairs, protocol_metadata
from .protocol import action_pb2, action_pb2_grpc
from .views.queries import ViewQueries

log = logging.getLogger("larder_sidecar.dispatch")

MAX_FORWARD_HOPS = 32
_EOF: Any = grpc.aio.EOF  # type: ignore[attr-defined]  # missing from grpc-stubs


def _action_outcome(response: Any) -> Outcome:
    kind = response.WhichOneof("response")
    return Outcome(kind, getattr(response, kind) if kind else None, response.side_effects)


def _unavailable(e: grpc.aio.AioRpcError) -> InvokeError:
    return InvokeError(
        grpc.StatusCode.UNAVAILABLE,
        f"the user function failed the action call: {e.code().name} {e.details()}",
    )


class Dispatcher:
    """Implements `Invoker` for the front ends."""

    def __init__(
        self,
        model: UserFunctionModel,
        router: Router,
        channel: grpc.aio.Channel,
        metrics: Metrics,
    ) -> None:
        self.model = model
        self._router = router
        self._actions = action_pb2_grpc.ActionsStub(channel)
        self._metrics = metrics
        self._background: set[asyncio.Task[None]] = set()
        self._counted: dict[tuple[str, str, str], tuple[Any, Any]] = {}
        """The metric children per (method, outcome), bound once: `labels()` is a lookup
        under a lock, twice per command otherwise."""
        self.views: ViewQueries | None = None
        """Answers the query methods of view components (set when the function has any)."""

    # --- the Invoker seam ---------------------------------------------------------------

    async def invoke(
        self, method: MethodModel, request: Message, metadata: MetadataPairs
    ) -> InvokeResult:
        m = self.model.methods.get(method.path)
        if m is None:
            raise InvokeError(grpc.StatusCode.UNIMPLEMENTED, f"unknown method {method.path}")
        # The HTTP front passes every request header; the component gets the ones it asked for.
        headers = m.component.forwarded(metadata)
        return await self.call(m, request.SerializeToString(), headers, parsed=request)

    async def call(
        self,
        method: Method,
        payload: bytes,
        metadata: MetadataPairs,
        parsed: Message | None = None,
        *,
        entry: bool = True,
    ) -> InvokeResult:
        """Run one unary command and its effects; record metrics.

        `entry`: a client's call (the fronts), traced as a SERVER span continuing the
        client's `traceparent`; eventing passes False, its record has a span already."""
        if not entry or not tracing.enabled():
            return await self._entry(method, payload, metadata, parsed)
        parent = tracing.extract(metadata)
        if tracing.dropped(parent):  # no span: the trace current, in two C calls
            token = tracing.within(parent)
            try:
                return await self._entry(method, payload, metadata, parsed)
            finally:
                tracing.leave(token)
        model = method.model
        with tracing.span(
            model.path,
            tracing.SpanKind.SERVER,
            parent=parent,
            attributes={"rpc.service": model.service, "rpc.method": model.name},
        ):
            try:
                return await self._entry(method, payload, metadata, parsed)
            except InvokeError as e:
                tracing.annotate({"rpc.grpc.status_code": e.code.value[0]})
                raise

    async def _entry(
        self,
        method: Method,
        payload: bytes,
        metadata: MetadataPairs,
        parsed: Message | None,
    ) -> InvokeResult:
        started = time.perf_counter()
        outcome_label = "ok"
        try:
            # Refused here for every method: an action ignores a key (it stores nothing
            # to remember it in), but a malformed one is the client's bug either way.
            command_key(metadata)
            return await self._call(method, payload, metadata, parsed, 0)
        except InvokeError as e:
            outcome_label = e.code.name.lower()
            raise
        finally:
            model = method.model
            counted = self._counted.get((model.service, model.name, outcome_label))
            if counted is None:
                counted = self._count(model, outcome_label)
            counted[0].inc()
            counted[1].observe(time.perf_counter() - started)

    def _count(self, model: MethodModel, outcome: str) -> tuple[Any, Any]:
        counted = self._counted[model.service, model.name, outcome] = (
            self._metrics.commands.labels(model.service, model.name, outcome),
            self._metrics.command_latency.labels(model.service, model.name),
        )
        return counted

    async def _call(
        self,
        method: Method,
        payload: bytes,
        metadata: MetadataPairs,
        parsed: Message | None,
        hops: int,
    ) -> InvokeResult:
        if method.component.kind is Kind.VIEW:
            request = parsed if parsed is not None else parse(method, payload)
            return InvokeResult(await self._views(method).unary(method.model.path, request))
        outcome = await self._run(method, payload, metadata, parsed)
        return await self._finish(outcome, hops)

    async def _run(
        self, method: Method, payload: bytes, metadata: MetadataPairs, parsed: Message | None
    ) -> Outcome:
        component = method.component
        if component.kind is Kind.ACTION:
            with tracing.span("user function"):
                command = self._action_command(method, payload, tracing.inject(metadata))
                try:
                    response = await self._actions.HandleUnary(command)
                except grpc.aio.AioRpcError as e:
                    raise _unavailable(e) from e
            return _action_outcome(response)
        assert method.key is not None  # every entity method has one (checked at discovery)
        if parsed is None:
            parsed = parse(method, payload)
        try:
            entity_id = method.key.extract(parsed)
        except KeyError_ as e:
            raise InvokeError(grpc.StatusCode.INVALID_ARGUMENT, str(e)) from e
        return await self._submit(method, entity_id, payload, metadata)

    async def _submit(
        self, method: Method, entity_id: str, payload: bytes, metadata: MetadataPairs
    ) -> Outcome:
        owner = await self._router.owner(method.component.entity_type, entity_id)
        # With tracing on, the entity continues the current span: here through the context
        # the host captures, on another pod through the metadata the hop injects.
        return await owner.submit(method, entity_id, payload, metadata)

    def reenter(self, command: Command) -> None:
        """Send a command that a stopping entity did not handle to its owner again.

        Its caller still waits on `command.future`; giving up cancels the re-entry.
        Commands of one entity are re-entered in their order, and reach a local owner
        in that order: each task is queued at once and, with a local router, submits
        without waiting.
        """
        task = self._spawn(self._reentered(command))

        def caller_gave_up(future: asyncio.Future[Outcome]) -> None:
            if future.cancelled():
                task.cancel()

        command.future.add_done_callback(caller_gave_up)

    async def _reentered(self, command: Command) -> None:
        future = command.future
        try:
            outcome = await self._submit(
                command.method, command.entity_id, command.payload, command.metadata
            )
        except InvokeError as e:
            if not future.done():
                future.set_exception(e)
            return
        except Exception as e:
            log.exception("re-entering a command for %s failed", command.key)
            if not future.done():
                future.set_exception(
                    InvokeError(
                        grpc.StatusCode.INTERNAL, f"the sidecar failed handling the command: {e}"
                    )
                )
            return
        if not future.done():
            future.set_result(outcome)

    def _action_command(
        self, method: Method, payload: bytes | None, metadata: MetadataPairs
    ) -> Any:
        command = action_pb2.ActionCommand(
            service_name=method.model.service,
            name=method.model.name,
            metadata=protocol_metadata(metadata),
        )
        if payload is not None:
            command.payload.type_url = method.input_type_url
            command.payload.value = payload
        return command

    # --- effects --------------------------------------------------------------------------

    def _target(self, service: str, name: str, what: str) -> Method:
        target = self.model.method(service, name)
        if target is None:
            raise InvokeError(
                grpc.StatusCode.INTERNAL,
                f"the user function asked for a {what} to {service}.{name}, which it did not "
                "declare in discovery",
            )
        return target

    async def _finish(self, outcome: Outcome, hops: int) -> InvokeResult:
        if outcome.kind == "failure":
            raise InvokeError(
                grpc.StatusCode.UNKNOWN, outcome.message.description or "the command failed"
            )
        for effect in outcome.side_effects:
            if effect.synchronous:
                await self._side_effect(effect, hops)
        if outcome.kind == "reply":
            result = InvokeResult(
                payload=outcome.message.payload.value,
                metadata=metadata_pairs(outcome.message.metadata),
            )
        elif outcome.kind == "forward":
            fwd = outcome.message
            if hops >= MAX_FORWARD_HOPS:
                raise InvokeError(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"more than {MAX_FORWARD_HOPS} forwards in a row; the user function "
                    "probably forwards in a loop",
                )
            target = self._target(fwd.service_name, fwd.command_name, "forward")
            with tracing.span(f"forward {fwd.service_name}/{fwd.command_name}"):
                result = await self._call(
                    target, fwd.payload.value, metadata_pairs(fwd.metadata), None, hops + 1
                )
        else:
            raise InvokeError(
                grpc.StatusCode.INTERNAL,
                "the user function answered without a reply, forward or failure",
            )
        for effect in outcome.side_effects:
            if not effect.synchronous:
                self._spawn(self._side_effect(effect, hops))
        return result

    async def _side_effect(self, effect: Any, hops: int) -> None:
        target = self._target(effect.service_name, effect.command_name, "side effect")
        try:
            with tracing.span(
                f"side effect {effect.service_name}/{effect.command_name}",
                attributes={"larder.synchronous": bool(effect.synchronous)},
            ):
                await self._call(
                    target, effect.payload.value, metadata_pairs(effect.metadata), None, hops + 1
                )
        except InvokeError as e:
            if effect.synchronous:
                raise
            log.warning(
                "asynchronous side effect %s.%s failed: %s %s",
                effect.service_name,
                effect.command_name,
                e.code.name,
                e.message,
            )

    def _spawn(self, coro: Any) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def drain(self) -> None:
        """Wait for asynchronous side effects and re-entered commands still running."""
        while self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    # --- streamed actions (gRPC front only) -----------------------------------------------

    async def _outs(
        self, call: Any, commands: _StreamedCommands | None
    ) -> AsyncIterator[InvokeResult]:
        try:
            async for response in call:
                outcome = _action_outcome(response)
                if outcome.kind is None:
                    # A streamed action may answer a message with nothing to send.
                    for effect in outcome.side_effects:
                        if effect.synchronous:
                            await self._side_effect(effect, 0)
                        else:
                            self._spawn(self._side_effect(effect, 0))
                    continue
                yield await self._finish(outcome, 0)
        except asyncio.CancelledError:
            if commands is not None:
                commands.raise_malformed()
            raise
        except grpc.aio.AioRpcError as e:
            raise _unavailable(e) from e

    async def streamed_in(
        self, method: Method, payloads: AsyncIterator[bytes], metadata: MetadataPairs
    ) -> InvokeResult:
        """A client-streamed action; traced as a unary call is (`call`)."""
        if not tracing.enabled():
            return await self._streamed_in(method, payloads, metadata)
        model = method.model
        with tracing.span(
            model.path,
            tracing.SpanKind.SERVER,
            parent=tracing.extract(metadata),
            attributes={"rpc.service": model.service, "rpc.method": model.name},
        ):
            try:
                return await self._streamed_in(method, payloads, metadata)
            except InvokeError as e:
                tracing.annotate({"rpc.grpc.status_code": e.code.value[0]})
                raise

    async def _streamed_in(
        self, method: Method, payloads: AsyncIterator[bytes], metadata: MetadataPairs
    ) -> InvokeResult:
        with tracing.span("user function"):
            first = self._action_command(method, None, tracing.inject(metadata))
            commands = _StreamedCommands(first, method, payloads)
            commands.call = call = self._actions.HandleStreamedIn(commands)
            try:
                response = await call
            except asyncio.CancelledError:
                commands.raise_malformed()
                raise
            except grpc.aio.AioRpcError as e:
                raise _unavailable(e) from e
        return await self._finish(_action_outcome(response), 0)

    def _views(self, method: Method) -> ViewQueries:
        if self.views is None:
            raise InvokeError(
                grpc.StatusCode.UNIMPLEMENTED, f"{method.model.path}: views are not running"
            )
        return self.views

    async def _view_rows(self, method: Method, request: Message) -> AsyncIterator[InvokeResult]:
        async for payload in self._views(method).stream(method.model.path, request):
            yield InvokeResult(payload)

    def invoke_stream(
        self, method: MethodModel, request: Message, metadata: MetadataPairs
    ) -> AsyncIterator[InvokeResult]:
        """A server-streamed view query for the HTTP front (which sends a JSON array)."""
        m = self.model.methods.get(method.path)
        if m is None or m.component.kind is not Kind.VIEW:
            raise InvokeError(
                grpc.StatusCode.UNIMPLEMENTED, f"{method.path} is not a streamed view query"
            )
        return self._traced(m, metadata, lambda _: self._view_rows(m, request))

    def streamed_out(
        self, method: Method, payload: bytes, metadata: MetadataPairs
    ) -> AsyncIterator[InvokeResult]:
        """A server-streamed call: a view query, or an action whose command carries the
        metadata (with the trace context: opened inside the SERVER span's first step)."""
        if method.component.kind is Kind.VIEW:
            request = parse(method, payload)
            return self._traced(method, metadata, lambda _: self._view_rows(method, request))
        parse(method, payload)

        def open_call(sent: MetadataPairs) -> AsyncIterator[InvokeResult]:
            command = self._action_command(method, payload, sent)
            return self._outs(self._actions.HandleStreamedOut(command), None)

        return self._traced(method, metadata, open_call)

    def streamed(
        self, method: Method, payloads: AsyncIterator[bytes], metadata: MetadataPairs
    ) -> AsyncIterator[InvokeResult]:
        def open_call(sent: MetadataPairs) -> AsyncIterator[InvokeResult]:
            commands = _StreamedCommands(self._action_command(method, None, sent), method, payloads)
            commands.call = call = self._actions.HandleStreamed(commands)
            return self._outs(call, commands)

        return self._traced(method, metadata, open_call)

    def _traced(
        self,
        method: Method,
        metadata: MetadataPairs,
        open_call: Callable[[MetadataPairs], AsyncIterator[InvokeResult]],
    ) -> AsyncIterator[InvokeResult]:
        """The replies of `open_call(metadata)`, in a SERVER span while tracing is on."""
        if not tracing.enabled():
            return open_call(metadata)
        return self._traced_replies(method, metadata, open_call)

    async def _traced_replies(
        self,
        method: Method,
        metadata: MetadataPairs,
        open_call: Callable[[MetadataPairs], AsyncIterator[InvokeResult]],
    ) -> AsyncIterator[InvokeResult]:
        """A streamed call's SERVER span (continuing the client's `traceparent`), open
        until its last reply or its end; current only while the call is opened and while
        each reply is produced (`tracing.steps`), never while the consumer holds a reply,
        so it does not leak into the front's code between messages. The user function
        gets the span's context in the call's first command."""
        model = method.model
        server = tracing.steps(
            model.path,
            tracing.SpanKind.SERVER,
            parent=tracing.extract(metadata),
            attributes={"rpc.service": model.service, "rpc.method": model.name},
        )
        sent = 0
        error: BaseException | None = None
        code = grpc.StatusCode.OK
        replies: AsyncIterator[InvokeResult] | None = None
        try:
            with server.step():
                replies = open_call(tracing.inject(metadata))
            while True:
                with server.step():
                    try:
                        result = await anext(replies)
                    except StopAsyncIteration:
                        break
                sent += 1
                yield result
        except InvokeError as e:
            code, error = e.code, e
            raise
        except (asyncio.CancelledError, GeneratorExit):
            # The client reset the stream, its deadline passed, or the front stopped
            # reading: not the call's failure (OpenTelemetry's gRPC conventions).
            code = grpc.StatusCode.CANCELLED
            closing = getattr(replies, "aclose", None)  # the producer, if still open
            if closing is not None:
                with server.step():
                    await closing()
            raise
        except Exception as e:
            code, error = grpc.StatusCode.UNKNOWN, e
            raise
        finally:
            server.annotate(
                {"rpc.grpc.status_code": code.value[0], "larder.messages.sent": sent}
            )
            server.end(error)


class _StreamedCommands:
    """The `ActionCommand`s of a client-streamed call: the first names the method and
    carries the metadata, later ones carry the client's messages.

    A malformed message cancels the call instead of raising: grpc swallows an exception
    from a request iterator and leaves the call hanging until its deadline. The error is
    kept and raised by `raise_malformed` where the cancellation surfaces.
    """

    def __init__(self, first: Any, method: Method, payloads: AsyncIterator[bytes]) -> None:
        self._first = first
        self._method = method
        self._payloads = payloads
        self.call: Any = None
        self._malformed: InvokeError | None = None

    async def __aiter__(self) -> AsyncIterator[Any]:
        yield self._first
        async for payload in self._payloads:
            try:
                parse(self._method, payload)
            except InvokeError as e:
                self._malformed = e
                self.call.cancel()
                return
            yield action_pb2.ActionCommand(
                payload={"type_url": self._method.input_type_url, "value": payload}
            )

    def raise_malformed(self) -> None:
        """Raise the malformed message's error if it (not our own cancellation) ended the
        call."""
        task = asyncio.current_task()
        if self._malformed is not None and task is not None and not task.cancelling():
            raise self._malformed


def parse(method: Method, payload: bytes) -> Message:
    try:
        return method.parse(payload)
    except DecodeError as e:
        raise InvokeError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"the request is not a valid {method.model.input.full_name}: {e}",
        ) from e
