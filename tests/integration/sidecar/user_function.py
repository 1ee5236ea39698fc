"""A user function written directly against the protocol (no SDK), for the sidecar tests.

It serves the services of `protos/larder/test/sidecar_test.proto` and records what
it receives, so tests can assert on the protocol traffic as well as on replies.
"""

from __future__ import annotations

import asyncio
import importlib
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc
import grpc.aio
from akkaserverless.component import component_pb2
from akkaserverless.component.action import action_pb2, action_pb2_grpc
from akkaserverless.component.eventsourcedentity import (
    event_sourced_entity_pb2 as es_pb2,
)
from akkaserverless.component.eventsourcedentity import (
    event_sourced_entity_pb2_grpc as es_grpc,
)
from akkaserverless.component.valueentity import value_entity_pb2 as ve_pb2
from akkaserverless.component.valueentity import value_entity_pb2_grpc as ve_grpc
from akkaserverless.protocol import discovery_pb2, discovery_pb2_grpc
from google.protobuf import any_pb2, empty_pb2
from google.protobuf.message import Message
from larder_protocol import ACTION, EVENT_SOURCED_ENTITY, VALUE_ENTITY, compile_protos

PROTOS = Path(__file__).parent / "protos"
PROTO = "larder/test/sidecar_test.proto"
PKG = "larder.test"
SNAPSHOT_EVERY = 3


def compile_test_protos(out: Path) -> tuple[ModuleType, bytes]:
    """Compile the test proto; return its `_pb2` module and the descriptor set bytes."""
    desc = out / "user-function.desc"
    compile_protos([PROTOS / PROTO], out, include=[PROTOS], descriptor_set_out=desc)
    if str(out) not in sys.path:
        sys.path.insert(0, str(out))
    module = importlib.import_module("larder.test.sidecar_test_pb2")
    return module, desc.read_bytes()


def pack(msg: Message) -> any_pb2.Any:
    return any_pb2.Any(
        type_url="type.googleapis.com/" + msg.DESCRIPTOR.full_name, value=msg.SerializeToString()
    )


def reply(msg: Message, metadata: list[tuple[str, str]] = ()) -> Any:  # type: ignore[assignment]
    return component_pb2.Reply(
        payload=pack(msg),
        metadata=component_pb2.Metadata(
            entries=[component_pb2.MetadataEntry(key=k, string_value=v) for k, v in metadata]
        ),
    )


def _metadata(command: Any) -> dict[str, str]:
    return {e.key: e.string_value for e in command.metadata.entries}


@dataclass
class Record:
    """What the user function saw, for assertions."""

    inits: list[Any] = field(default_factory=list)
    events_replayed: list[tuple[str, int]] = field(default_factory=list)
    commands: list[tuple[str, str, str]] = field(default_factory=list)
    streams_ended: int = 0
    stream_ended: asyncio.Event = field(default_factory=asyncio.Event)
    errors_reported: list[str] = field(default_factory=list)
    streamed_metadata: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    """A server- or bidirectional-streamed action's name and the metadata of its first
    command."""
    proxy_terminated: int = 0
    hang: asyncio.Event = field(default_factory=asyncio.Event)
    hanging: asyncio.Event = field(default_factory=asyncio.Event)


class _Discovery(discovery_pb2_grpc.DiscoveryServicer):  # type: ignore[misc]
    def __init__(self, fn: UserFunction) -> None:
        self.fn = fn

    async def Discover(self, request: Any, context: Any) -> Any:
        fn = self.fn
        info = discovery_pb2.ServiceInfo(
            service_name="sidecar-test",
            service_version="1",
            service_runtime="python",
            support_library_name="raw-protocol-test",
            support_library_version="0",
            protocol_major_version=fn.protocol_version[0],
            protocol_minor_version=fn.protocol_version[1],
        )
        components = []
        for service, ctype in fn.components:
            c = discovery_pb2.Component(component_type=ctype, service_name=service)
            if ctype == ACTION:
                c.component.SetInParent()
            else:
                c.entity.entity_type = service.rsplit(".", 1)[-1].lower()
                c.entity.forward_headers.extend(fn.forward_headers)
                if fn.passivation_ms:
                    c.entity.passivation_strategy.timeout.timeout = fn.passivation_ms
            components.append(c)
        return discovery_pb2.Spec(proto=fn.descriptor_set, components=components, service_info=info)

    async def ReportError(self, request: Any, context: Any) -> Any:
        self.fn.record.errors_reported.append(request.message)
        return empty_pb2.Empty()

    async def ProxyTerminated(self, request: Any, context: Any) -> Any:
        self.fn.record.proxy_terminated += 1
        return empty_pb2.Empty()

    async def HealthCheck(self, request: Any, context: Any) -> Any:
        return empty_pb2.Empty()


class _Counter(es_grpc.EventSourcedEntitiesServicer):  # type: ignore[misc]
    def __init__(self, fn: UserFunction) -> None:
        self.fn = fn

    async def Handle(self, request_iterator: Any, context: Any) -> AsyncIterator[Any]:
        pb, record = self.fn.pb, self.fn.record
        value = 0
        seq = 0
        entity_id = ""
        try:
            async for msg in request_iterator:
                which = msg.WhichOneof("message")
                if which == "init":
                    record.inits.append(msg.init)
                    entity_id = msg.init.entity_id
                    if msg.init.HasField("snapshot"):
                        state = pb.CounterState.FromString(msg.init.snapshot.snapshot.value)
                        value, seq = state.value, msg.init.snapshot.snapshot_sequence
                    continue
                if which == "event":
                    value += pb.Added.FromString(msg.event.payload.value).amount
                    seq = msg.event.sequence
                    record.events_replayed.append((entity_id, seq))
                    continue
                cmd = msg.command
                record.commands.append(("Counter", cmd.name, cmd.entity_id))
                out = es_pb2.EventSourcedReply(command_id=cmd.id)
                name = cmd.name
                if name == "Crash":
                    yield es_pb2.EventSourcedStreamOut(
                        failure=component_pb2.Failure(command_id=cmd.id, description="boom")
                    )
                    return
                if name == "Hang":
                    record.hanging.set()
                    await record.hang.wait()
                    out.client_action.reply.CopyFrom(reply(pb.Value(value=value)))
                    yield es_pb2.EventSourcedStreamOut(reply=out)
                    continue
                if name == "Get":
                    # Every request header the sidecar forwarded comes back.
                    md = [(e.key, e.string_value) for e in cmd.metadata.entries]
                    out.client_action.reply.CopyFrom(reply(pb.Value(value=value), md))
                    yield es_pb2.EventSourcedStreamOut(reply=out)
                    continue
                if name == "AddWithEffect":
                    req = pb.EffectRequest.FromString(cmd.payload.value)
                    amount = req.amount
                    effect = component_pb2.SideEffect(
                        service_name=f"{PKG}.Counter",
                        command_name="Add",
                        payload=pack(pb.AddRequest(id=req.target, amount=req.amount)),
                        synchronous=req.synchronous,
                    )
                    out.side_effects.append(effect)
                else:
                    amount = pb.AddRequest.FromString(cmd.payload.value).amount
                snapshot = False
                for _ in range(1):
                    value += amount
                    seq += 1
                    out.events.append(pack(pb.Added(amount=amount)))
                    snapshot = seq % SNAPSHOT_EVERY == 0
                if name == "Fail":
                    value -= amount
                    seq -= 1
                    del out.events[:]
                    out.client_action.failure.CopyFrom(
                        component_pb2.Failure(command_id=cmd.id, description="not allowed")
                    )
                elif name == "AddAndForward":
                    out.client_action.forward.CopyFrom(
                        component_pb2.Forward(
                            service_name=f"{PKG}.Counter",
                            command_name="Get",
                            payload=pack(pb.GetRequest(id=entity_id)),
                        )
                    )
                else:
                    out.client_action.reply.CopyFrom(reply(pb.Value(value=value)))
                if snapshot and name != "Fail":
                    out.snapshot.CopyFrom(pack(pb.CounterState(value=value)))
                yield es_pb2.EventSourcedStreamOut(reply=out)
        finally:
            record.streams_ended += 1
            record.stream_ended.set()


class _Register(ve_grpc.ValueEntitiesServicer):  # type: ignore[misc]
    def __init__(self, fn: UserFunction) -> None:
        self.fn = fn

    async def Handle(self, request_iterator: Any, context: Any) -> AsyncIterator[Any]:
        pb, record = self.fn.pb, self.fn.record
        text = ""
        async for msg in request_iterator:
            if msg.WhichOneof("message") == "init":
                record.inits.append(msg.init)
                if msg.init.state.HasField("value"):
                    text = pb.Text.FromString(msg.init.state.value.value).text
                continue
            cmd = msg.command
            record.commands.append(("Register", cmd.name, cmd.entity_id))
            out = ve_pb2.ValueEntityReply(command_id=cmd.id)
            if cmd.name == "Set":
                text = pb.SetRequest.FromString(cmd.payload.value).text
                out.state_action.update.value.CopyFrom(pack(pb.Text(text=text)))
            elif cmd.name == "Clear":
                text = ""
                out.state_action.delete.SetInParent()
            elif cmd.name == "WhoAmI":
                out.client_action.reply.CopyFrom(reply(pb.Text(text=cmd.entity_id)))
                yield ve_pb2.ValueEntityStreamOut(reply=out)
                continue
            out.client_action.reply.CopyFrom(reply(pb.Text(text=text)))
            yield ve_pb2.ValueEntityStreamOut(reply=out)


class _Echo(action_pb2_grpc.ActionsServicer):  # type: ignore[misc]
    def __init__(self, fn: UserFunction) -> None:
        self.fn = fn

    def _text(self, command: Any) -> str:
        return str(self.fn.pb.Text.FromString(command.payload.value).text)

    async def HandleUnary(self, request: Any, context: Any) -> Any:
        pb = self.fn.pb
        self.fn.record.commands.append(("Echo", request.name, ""))
        if request.name == "ReadCounter":
            get = pb.GetRequest.FromString(request.payload.value)
            return action_pb2.ActionResponse(
                forward=component_pb2.Forward(
                    service_name=f"{PKG}.Counter", command_name="Get", payload=pack(get)
                )
            )
        text = self._text(request)
        if text == "fail":
            return action_pb2.ActionResponse(
                failure=component_pb2.Failure(description="echo refused")
            )
        return action_pb2.ActionResponse(reply=reply(pb.Text(text=text)))

    async def HandleStreamedIn(self, request_iterator: Any, context: Any) -> Any:
        pb = self.fn.pb
        header = None
        texts = []
        async for command in request_iterator:
            if header is None:
                header = command
                continue
            texts.append(self._text(command))
        assert header is not None and header.name == "Join"
        return action_pb2.ActionResponse(reply=reply(pb.Text(text="+".join(texts))))

    async def HandleStreamedOut(self, request: Any, context: Any) -> AsyncIterator[Any]:
        pb = self.fn.pb
        self.fn.record.streamed_metadata.append((request.name, _metadata(request)))
        text = self._text(request)
        for i in range(3):
            yield action_pb2.ActionResponse(
                reply=reply(pb.Text(text=f"{text}{i}"), [(f"x-reply-{i}", str(i))])
            )

    async def HandleStreamed(self, request_iterator: Any, context: Any) -> AsyncIterator[Any]:
        pb = self.fn.pb
        header = None
        async for command in request_iterator:
            if header is None:
                header = command
                self.fn.record.streamed_metadata.append((command.name, _metadata(command)))
                continue
            yield action_pb2.ActionResponse(reply=reply(pb.Text(text=self._text(command).upper())))


class UserFunction:
    """The test user function, served by grpc.aio on a loopback port."""

    def __init__(
        self,
        pb: ModuleType,
        descriptor_set: bytes,
        *,
        passivation_ms: int = 0,
        protocol_version: tuple[int, int] = (0, 7),
        components: list[tuple[str, str]] | None = None,
        forward_headers: tuple[str, ...] = ("X-Echo",),
        server_options: tuple[tuple[str, int], ...] = (),
    ) -> None:
        self.pb = pb
        self.descriptor_set = descriptor_set
        self.passivation_ms = passivation_ms
        self.protocol_version = protocol_version
        self.forward_headers = forward_headers
        """Request headers the entities ask for (in discovery)."""
        self.server_options = server_options
        """grpc.aio server options (e.g. a receive limit other than gRPC's 4 MiB)."""
        self.components = components or [
            (f"{PKG}.Counter", EVENT_SOURCED_ENTITY),
            (f"{PKG}.Register", VALUE_ENTITY),
            (f"{PKG}.Echo", ACTION),
        ]
        self.record = Record()
        self.server: grpc.aio.Server | None = None
        self.port = 0

    async def start(self, port: int = 0) -> int:
        server = grpc.aio.server(options=list(self.server_options))
        discovery_pb2_grpc.add_DiscoveryServicer_to_server(_Discovery(self), server)
        es_grpc.add_EventSourcedEntitiesServicer_to_server(_Counter(self), server)
        ve_grpc.add_ValueEntitiesServicer_to_server(_Register(self), server)
        action_pb2_grpc.add_ActionsServicer_to_server(_Echo(self), server)
        self.port = server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        self.server = server
        return self.port

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop(None)
            self.server = None
