"""Building event-sourced model requests and the replies the protocol requires."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from larder_tck import context as c
from larder_tck import protocol as p
from larder_tck.context import ModelContext
from larder_tck.model import ES_MODEL, ES_PKG, ES_TWO, pack
from larder_tck.streams import Stream


class EsModel:
    def __init__(self, ctx: ModelContext) -> None:
        m = ctx.model
        self.Request = m.message(f"{ES_PKG}.Request")
        self.Action = m.message(f"{ES_PKG}.RequestAction")
        self.Response = m.message(f"{ES_PKG}.Response")
        self.Persisted = m.message(f"{ES_PKG}.Persisted")
        self.Emit = m.message(f"{ES_PKG}.Emit")
        self.Forward = m.message(f"{ES_PKG}.Forward")
        self.Effect = m.message(f"{ES_PKG}.Effect")
        self.Fail = m.message(f"{ES_PKG}.Fail")

    def emit(self, value: str) -> Any:
        return self.Action(emit=self.Emit(value=value))

    def forward(self, target: str) -> Any:
        return self.Action(forward=self.Forward(id=target))

    def effect(self, target: str, synchronous: bool) -> Any:
        return self.Action(effect=self.Effect(id=target, synchronous=synchronous))

    def fail(self, message: str) -> Any:
        return self.Action(fail=self.Fail(message=message))

    def event(self, value: str) -> Any:
        return pack(self.Persisted(value=value))

    def two_side_effect(self, target: str, synchronous: bool) -> Any:
        return c.side_effect(ES_TWO, "Call", self.Request(id=target), synchronous)

    def two_forward(self, target: str) -> Any:
        return c.forward(ES_TWO, "Call", self.Request(id=target))


class EsEntity:
    """One event-sourced entity on its own stream, with command ids counted from 1."""

    def __init__(self, ctx: ModelContext, model: EsModel, entity_id: str) -> None:
        self.model = model
        self.entity_id = entity_id
        self.stream: Stream = ctx.es_stream(entity_id)
        self.next_id = 1

    async def init(self, snapshot_sequence: int | None = None, snapshot: str = "") -> None:
        init = p.es.EventSourcedInit(service_name=ES_MODEL, entity_id=self.entity_id)
        if snapshot_sequence is not None:
            init.snapshot.snapshot_sequence = snapshot_sequence
            init.snapshot.snapshot.CopyFrom(pack(self.model.Persisted(value=snapshot)))
        await self.stream.send(p.es.EventSourcedStreamIn(init=init))

    async def replay(self, sequence: int, value: str) -> None:
        event = p.es.EventSourcedEvent(sequence=sequence, payload=self.model.event(value))
        await self.stream.send(p.es.EventSourcedStreamIn(event=event))

    async def send(self, *actions: Any) -> int:
        command_id = self.next_id
        self.next_id += 1
        request = self.model.Request(id=self.entity_id, actions=list(actions))
        cmd = c.command(self.entity_id, command_id, "Process", request)
        await self.stream.send(p.es.EventSourcedStreamIn(command=cmd))
        return command_id

    async def expect(
        self,
        command_id: int,
        action: Any,
        *,
        events: Sequence[str] = (),
        snapshot: str | None = None,
        side_effects: Sequence[Any] = (),
        what: str = "",
        hint: str = "",
    ) -> None:
        reply = p.es.EventSourcedReply(
            command_id=command_id,
            client_action=action,
            side_effects=list(side_effects),
            events=[self.model.event(v) for v in events],
        )
        if snapshot is not None:
            reply.snapshot.CopyFrom(pack(self.model.Persisted(value=snapshot)))
        await self.stream.expect(
            p.es.EventSourcedStreamOut(reply=reply),
            what or f"the reply to command {command_id}",
            hint,
        )

    def reply(self, state: str) -> Any:
        return c.reply(self.model.Response(message=state))

    async def close(self) -> None:
        """End the stream from the sidecar's side, as passivation does; the frontend ends too."""
        await self.stream.done_writing()
        await self.stream.expect_end("the TCK ended its side, as on passivation")
