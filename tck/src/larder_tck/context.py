"""What a model case gets: a channel to the frontend, the model, and fresh entity ids."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import grpc.aio
from google.protobuf.message import Message
from larder_tck import protocol as p
from larder_tck.model import Model, pack
from larder_tck.streams import Stream

_ids = itertools.count(1)


def fresh_id(prefix: str) -> str:
    """An entity id no other case in this run uses (frontends may keep state per id)."""
    return f"{prefix}-{next(_ids)}"


@dataclass
class ModelContext:
    """The TCK in the sidecar's seat, talking the protocol to the frontend."""

    channel: grpc.aio.Channel
    model: Model
    spec: Any
    _streams: list[Stream] = field(default_factory=list)

    def es_stream(self, entity_id: str) -> Stream:
        call = p.es_grpc.EventSourcedEntitiesStub(self.channel).Handle()
        return self._track(Stream(call, f"event-sourced stream for {entity_id!r}"))

    def ve_stream(self, entity_id: str) -> Stream:
        call = p.ve_grpc.ValueEntitiesStub(self.channel).Handle()
        return self._track(Stream(call, f"value entity stream for {entity_id!r}"))

    def view_stream(self, what: str) -> Stream:
        call = p.view_grpc.ViewsStub(self.channel).Handle()
        return self._track(Stream(call, what))

    def actions(self) -> p.action_grpc.ActionsStub:
        return p.action_grpc.ActionsStub(self.channel)

    def track(self, call: Any, what: str) -> Stream:
        return self._track(Stream(call, what))

    def _track(self, stream: Stream) -> Stream:
        self._streams.append(stream)
        return stream

    def close(self) -> None:
        for stream in self._streams:
            stream.cancel()
        self._streams.clear()


def command(entity_id: str, command_id: int, name: str, payload: Message) -> Any:
    return p.entity.Command(entity_id=entity_id, id=command_id, name=name, payload=pack(payload))


def reply(payload: Message) -> Any:
    return p.component.ClientAction(reply=p.component.Reply(payload=pack(payload)))


def forward(service: str, method: str, payload: Message) -> Any:
    return p.component.ClientAction(
        forward=p.component.Forward(
            service_name=service, command_name=method, payload=pack(payload)
        )
    )


def failure(command_id: int, description: str) -> Any:
    return p.component.ClientAction(
        failure=p.component.Failure(command_id=command_id, description=description)
    )


def side_effect(service: str, method: str, payload: Message, synchronous: bool) -> Any:
    return p.component.SideEffect(
        service_name=service, command_name=method, payload=pack(payload), synchronous=synchronous
    )
