"""The gRPC server the sidecar talks to, and its lifecycle."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc

from larder_sdk import _action, _eventsourced_instance, _valueentity, _view
from larder_sdk import _protocol as proto
from larder_sdk._action import Action
from larder_sdk._component import Component
from larder_sdk._discovery import Discovery, ServiceInfo
from larder_sdk._errors import DefinitionError
from larder_sdk._eventsourced import EventSourcedEntity
from larder_sdk._valueentity import ValueEntity
from larder_sdk._view import View, ViewStreamFailure

logger = logging.getLogger("larder_sdk.server")


@dataclass(frozen=True)
class ServerSettings:
    """Where the user function listens; the sidecar finds it at USER_FUNCTION_HOST/PORT."""

    host: str = "0.0.0.0"
    port: int = 8080

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ServerSettings:
        env = os.environ if env is None else env
        host = env.get("HOST", cls.host) or cls.host
        raw_port = env.get("PORT", str(cls.port))
        try:
            port = int(raw_port)
        except ValueError:
            port = -1
        if not 0 <= port <= 65535:
            raise ValueError(f"PORT={raw_port!r} is not a port number (0-65535)")
        return cls(host=host, port=port)


def _check(components: Iterable[Component]) -> list[Component]:
    listed = list(components)
    problems: list[str] = []
    seen: dict[str, Component] = {}
    for component in listed:
        if not isinstance(component, Component):
            problems.append(
                f"{component!r} is not a component "
                "(EventSourcedEntity, ValueEntity, Action or View)"
            )
            continue
        problems.extend(f"{component.subject}: {p}" for p in component.problems())
        other = seen.get(component.service_name)
        if other is not None:
            problems.append(
                f"{component.service_name} is served by two components: {other.subject} "
                f"and {component.subject}"
            )
        seen[component.service_name] = component
    if not listed:
        problems.append(
            "no components: pass the entities, actions and views this function serves"
        )
    if problems:
        raise DefinitionError("this user function", problems)
    return listed


_R = TypeVar("_R")
_Behaviour = Callable[[Any, "grpc.aio.ServicerContext[Any, Any]"], Any]


def _answering(answer: Callable[[Any, _R], Awaitable[Any]], registry: _R) -> _Behaviour:
    """A gRPC behaviour with a single response: `answer(request or requests, registry)`."""

    async def behaviour(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        return await answer(request, registry)

    return behaviour


def _streaming(serve: Callable[[Any, _R], AsyncIterator[Any]], registry: _R) -> _Behaviour:
    """A gRPC behaviour streaming its responses: `serve(request or requests, registry)`."""

    # An async generator: grpc.aio iterates it, sending each item as a response.
    async def behaviour(
        request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Any]:
        async for out in serve(request, registry):
            yield out

    return behaviour


def _view_stream(views: Mapping[str, View]) -> _Behaviour:
    """`Views/Handle`: an update that cannot be answered ends the call with its status."""

    async def behaviour(
        requests: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Any]:
        try:
            async for out in _view.handle_stream(requests, views):
                yield out
        except ViewStreamFailure as e:
            await context.abort(grpc.StatusCode[e.code], e.description)

    return behaviour


class LarderService:
    """Serves components to the sidecar: `LarderService([counter]).run()`.

    Every component is validated here, and all problems are reported in one
    `DefinitionError`.
    """

    def __init__(
        self,
        components: Iterable[Component],
        *,
        service_name: str = "",
        service_version: str = "",
        settings: ServerSettings | None = None,
        shutdown_wait: float = 10.0,
        grace: float = 5.0,
    ) -> None:
        self.components = _check(components)
        self._settings = settings
        self._info = ServiceInfo(service_name=service_name, service_version=service_version)
        self._shutdown_wait = shutdown_wait
        self._grace = grace
        self._event_sourced = {
            c.service_name: c for c in self.components if isinstance(c, EventSourcedEntity)
        }
        self._value_entities = {
            c.service_name: c for c in self.components if isinstance(c, ValueEntity)
        }
        self._actions = {c.service_name: c for c in self.components if isinstance(c, Action)}
        self._views = {c.service_name: c for c in self.components if isinstance(c, View)}
        self._server: grpc.aio.Server | None = None
        self._started = asyncio.Event()
        self.port: int | None = None
        """The bound port, once started."""
        self._discovery: Discovery | None = None
        self._proxy_terminated: asyncio.Event | None = None
        self._shutdown: asyncio.Event | None = None

    @property
    def proxy_terminated(self) -> bool:
        return self._proxy_terminated is not None and self._proxy_terminated.is_set()

    async def start(self) -> int:
        """Bind and start serving; returns the bound port (useful with PORT=0)."""
        if self._server is not None:
            raise RuntimeError("this LarderService is already started")
        settings = self._settings or ServerSettings.from_env()
        self._proxy_terminated = asyncio.Event()
        self._shutdown = asyncio.Event()
        self._discovery = Discovery(
            self.components, self._info, self._on_proxy_terminated, self._on_discovered
        )
        server = grpc.aio.server()
        server.add_generic_rpc_handlers(self._rpc_handlers(self._discovery))
        address = f"{settings.host}:{settings.port}"
        try:
            port = server.add_insecure_port(address)
        except RuntimeError as e:
            raise OSError(f"cannot listen on {address}: is the port in use? ({e})") from e
        await server.start()
        self._server = server
        self.port = port
        self._started.set()
        logger.info(
            "serving %d components on %s:%d: %s",
            len(self.components),
            settings.host,
            port,
            ", ".join(c.subject for c in self.components),
        )
        return port

    async def wait_started(self) -> int:
        """Wait until the server is serving (e.g. from a task running `serve()`); the port."""
        await self._started.wait()
        assert self.port is not None
        return self.port

    async def stop(self, grace: float | None = None) -> None:
        """Stop accepting calls and give running ones `grace` seconds to finish."""
        server, self._server = self._server, None
        if server is not None:
            await server.stop(self._grace if grace is None else grace)

    async def serve(self) -> None:
        """Start, then run until SIGTERM/SIGINT; once signalled, shut down when the sidecar
        has said ProxyTerminated (at once if it already has, or if no sidecar ever
        connected), or after `shutdown_wait` seconds."""
        await self.start()
        assert self._shutdown is not None
        loop = asyncio.get_running_loop()
        waiter: asyncio.Task[None] | None = None

        def on_signal() -> None:
            nonlocal waiter
            if waiter is None:
                waiter = loop.create_task(self._shutdown_after_proxy(), name="larder-sigterm")

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal)
        try:
            await self._shutdown.wait()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            if waiter is not None:
                waiter.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await waiter
            await self.stop()
            logger.info("user function stopped")

    def run(self) -> None:
        """Serve until shut down (blocking): the usual `main` of a user function."""
        asyncio.run(self.serve())

    async def _shutdown_after_proxy(self) -> None:
        assert self._shutdown is not None and self._proxy_terminated is not None
        # While the sidecar is alive it may still send commands (draining its entities),
        # so wait for its ProxyTerminated -- but not forever.
        if self._discovery is not None and self._discovery.proxy_seen:
            logger.info(
                "signalled; waiting up to %.0fs for the sidecar to terminate",
                self._shutdown_wait,
            )
            try:
                await asyncio.wait_for(self._proxy_terminated.wait(), self._shutdown_wait)
            except TimeoutError:
                logger.warning(
                    "the sidecar did not say ProxyTerminated within %.0fs; shutting down anyway",
                    self._shutdown_wait,
                )
        self._shutdown.set()

    def _on_proxy_terminated(self) -> None:
        # Only a pending SIGTERM turns this into a shutdown. A sidecar can stop on its own
        # (a native sidecar container restarting) while the pod lives on; the function must
        # then stay up for the sidecar's next start -- as the published SDKs do.
        if self._proxy_terminated is not None:
            self._proxy_terminated.set()

    def _on_discovered(self) -> None:
        # A (new) sidecar has connected: whatever an earlier one said no longer holds.
        if self._proxy_terminated is not None:
            self._proxy_terminated.clear()

    def _rpc_handlers(self, discovery: Discovery) -> tuple[grpc.GenericRpcHandler[Any, Any], ...]:
        es_handle = _streaming(_eventsourced_instance.handle_stream, self._event_sourced)
        ve_handle = _streaming(_valueentity.handle_stream, self._value_entities)
        unary = _answering(_action.handle_unary, self._actions)
        streamed_in = _answering(_action.handle_streamed_in, self._actions)
        streamed_out = _streaming(_action.handle_streamed_out, self._actions)
        streamed = _streaming(_action.handle_streamed, self._actions)
        view_handle = _view_stream(self._views)

        es, ve, act, view = proto.eventsourced, proto.valueentity, proto.action, proto.view
        command_in = act.ActionCommand.FromString
        response_out = act.ActionResponse.SerializeToString
        return (
            discovery.rpc_handler(),
            grpc.method_handlers_generic_handler(
                proto.EVENT_SOURCED_COMPONENT,
                {
                    "Handle": grpc.stream_stream_rpc_method_handler(
                        es_handle,
                        request_deserializer=es.EventSourcedStreamIn.FromString,
                        response_serializer=es.EventSourcedStreamOut.SerializeToString,
                    )
                },
            ),
            grpc.method_handlers_generic_handler(
                proto.VALUE_ENTITY_COMPONENT,
                {
                    "Handle": grpc.stream_stream_rpc_method_handler(
                        ve_handle,
                        request_deserializer=ve.ValueEntityStreamIn.FromString,
                        response_serializer=ve.ValueEntityStreamOut.SerializeToString,
                    )
                },
            ),
            grpc.method_handlers_generic_handler(
                proto.VIEW_COMPONENT,
                {
                    "Handle": grpc.stream_stream_rpc_method_handler(
                        view_handle,
                        request_deserializer=view.ViewStreamIn.FromString,
                        response_serializer=view.ViewStreamOut.SerializeToString,
                    )
                },
            ),
            grpc.method_handlers_generic_handler(
                proto.ACTION_COMPONENT,
                {
                    "HandleUnary": grpc.unary_unary_rpc_method_handler(
                        unary, request_deserializer=command_in, response_serializer=response_out
                    ),
                    "HandleStreamedIn": grpc.stream_unary_rpc_method_handler(
                        streamed_in,
                        request_deserializer=command_in,
                        response_serializer=response_out,
                    ),
                    "HandleStreamedOut": grpc.unary_stream_rpc_method_handler(
                        streamed_out,
                        request_deserializer=command_in,
                        response_serializer=response_out,
                    ),
                    "HandleStreamed": grpc.stream_stream_rpc_method_handler(
                        streamed,
                        request_deserializer=command_in,
                        response_serializer=response_out,
                    ),
                },
            ),
        )
