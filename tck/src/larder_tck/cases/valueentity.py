"""Model cases for value entities: the TCK plays the sidecar."""

from __future__ import annotations

from typing import Any

from larder_protocol import VALUE_ENTITY
from larder_tck import context as c
from larder_tck import protocol as p
from larder_tck.context import ModelContext, fresh_id
from larder_tck.model import VE_MODEL, VE_PKG, VE_TWO, pack
from larder_tck.registry import case

VE = VALUE_ENTITY

_FAILURE = (
    "a failed command must reply with a Failure in the client action carrying the command id "
    "and the failure message, and with no state action or side effects"
)
_LAST = "only the command's last state change (update or delete) must be sent"


class VeEntity:
    """One value entity on its own stream, with command ids counted from 1."""

    def __init__(self, ctx: ModelContext, entity_id: str) -> None:
        m = ctx.model
        self.Request = m.message(f"{VE_PKG}.Request")
        self.Action = m.message(f"{VE_PKG}.RequestAction")
        self.Response = m.message(f"{VE_PKG}.Response")
        self.Persisted = m.message(f"{VE_PKG}.Persisted")
        self.ctx = ctx
        self.entity_id = entity_id
        self.stream = ctx.ve_stream(entity_id)
        self.next_id = 1

    def update(self, value: str) -> Any:
        return self.Action(update={"value": value})

    def delete(self) -> Any:
        return self.Action(delete={})

    def forward(self, target: str) -> Any:
        return self.Action(forward={"id": target})

    def effect(self, target: str, synchronous: bool) -> Any:
        return self.Action(effect={"id": target, "synchronous": synchronous})

    def fail(self, message: str) -> Any:
        return self.Action(fail={"message": message})

    def two_side_effect(self, target: str, synchronous: bool) -> Any:
        return c.side_effect(VE_TWO, "Call", self.Request(id=target), synchronous)

    def two_forward(self, target: str) -> Any:
        return c.forward(VE_TWO, "Call", self.Request(id=target))

    def reply(self, state: str) -> Any:
        return c.reply(self.Response(message=state))

    async def init(self, state: str | None = None) -> None:
        init = p.ve.ValueEntityInit(service_name=VE_MODEL, entity_id=self.entity_id)
        if state is not None:
            init.state.value.CopyFrom(pack(self.Persisted(value=state)))
        await self.stream.send(p.ve.ValueEntityStreamIn(init=init))

    async def send(self, *actions: Any) -> int:
        command_id = self.next_id
        self.next_id += 1
        request = self.Request(id=self.entity_id, actions=list(actions))
        cmd = c.command(self.entity_id, command_id, "Process", request)
        await self.stream.send(p.ve.ValueEntityStreamIn(command=cmd))
        return command_id

    async def expect(
        self,
        command_id: int,
        action: Any,
        *,
        update: str | None = None,
        delete: bool = False,
        side_effects: tuple[Any, ...] = (),
        hint: str = "",
    ) -> None:
        reply = p.ve.ValueEntityReply(
            command_id=command_id, client_action=action, side_effects=list(side_effects)
        )
        if update is not None:
            reply.state_action.update.value.CopyFrom(pack(self.Persisted(value=update)))
        elif delete:
            reply.state_action.delete.SetInParent()
        await self.stream.expect(
            p.ve.ValueEntityStreamOut(reply=reply), f"the reply to command {command_id}", hint
        )


async def _entity(ctx: ModelContext, name: str) -> VeEntity:
    e = VeEntity(ctx, fresh_id(name))
    await e.init()
    return e


@case("valueentity.initial-empty-state", "model", VE)
async def initial_empty_state(ctx: ModelContext) -> None:
    """A new entity (Init without state) starts from the empty state; no state action."""
    e = await _entity(ctx, "ve-initial")
    await e.expect(
        await e.send(), e.reply(""), hint="a command that changes nothing sends no state"
    )


@case("valueentity.init-with-state", "model", VE)
async def init_with_state(ctx: ModelContext) -> None:
    """Init carrying a stored state restores it."""
    e = VeEntity(ctx, fresh_id("ve-stored"))
    await e.init("stored")
    await e.expect(await e.send(), e.reply("stored"), hint="the state must come from Init")


@case("valueentity.update", "model", VE)
async def update(ctx: ModelContext) -> None:
    """An update rides on the reply as the state action and becomes the state."""
    e = await _entity(ctx, "ve-update")
    await e.expect(await e.send(e.update("one")), e.reply("one"), update="one")
    await e.expect(await e.send(), e.reply("one"), hint="the updated state must be kept")
    await e.expect(await e.send(e.update("two")), e.reply("two"), update="two")


@case("valueentity.delete", "model", VE)
async def delete(ctx: ModelContext) -> None:
    """A delete rides on the reply as the state action; the state is empty afterwards."""
    e = await _entity(ctx, "ve-delete")
    await e.expect(await e.send(e.update("one")), e.reply("one"), update="one")
    await e.expect(await e.send(e.delete()), e.reply(""), delete=True)
    await e.expect(await e.send(), e.reply(""), hint="a deleted entity has the initial state")


@case("valueentity.update-after-delete", "model", VE)
async def update_after_delete(ctx: ModelContext) -> None:
    """An update after a delete (in later commands, and within one command) is an update."""
    e = await _entity(ctx, "ve-undelete")
    await e.expect(await e.send(e.update("one")), e.reply("one"), update="one")
    await e.expect(await e.send(e.delete()), e.reply(""), delete=True)
    await e.expect(await e.send(e.update("two")), e.reply("two"), update="two")
    await e.expect(
        await e.send(e.delete(), e.update("three")), e.reply("three"), update="three", hint=_LAST
    )
    await e.expect(await e.send(e.update("four"), e.delete()), e.reply(""), delete=True, hint=_LAST)


@case("valueentity.only-last-update", "model", VE)
async def only_last_update(ctx: ModelContext) -> None:
    """Several updates in one command send only the last."""
    e = await _entity(ctx, "ve-last")
    await e.expect(
        await e.send(e.update("one"), e.update("two"), e.update("three")),
        e.reply("three"),
        update="three",
        hint=_LAST,
    )


@case("valueentity.rehydration-after-passivation", "model", VE)
async def rehydration(ctx: ModelContext) -> None:
    """After passivation (stream closed), Init with the stored state restores it."""
    entity_id = fresh_id("ve-passivate")
    first = VeEntity(ctx, entity_id)
    await first.init()
    await first.expect(await first.send(first.update("kept")), first.reply("kept"), update="kept")
    await first.stream.done_writing()
    await first.stream.expect_end("the TCK ended its side, as on passivation")
    second = VeEntity(ctx, entity_id)
    await second.init("kept")
    await second.expect(await second.send(), second.reply("kept"))


@case("valueentity.forward", "model", VE)
async def forward(ctx: ModelContext) -> None:
    """A forward is the client action."""
    e = await _entity(ctx, "ve-forward")
    await e.expect(await e.send(e.forward("target")), e.two_forward("target"))


@case("valueentity.forward-with-update", "model", VE)
async def forward_with_update(ctx: ModelContext) -> None:
    """A forward with a state update: the update is kept."""
    e = await _entity(ctx, "ve-forward-update")
    await e.expect(
        await e.send(e.update("one"), e.forward("target")), e.two_forward("target"), update="one"
    )
    await e.expect(await e.send(), e.reply("one"))


@case("valueentity.side-effects", "model", VE)
async def side_effects(ctx: ModelContext) -> None:
    """Synchronous and asynchronous side effects ride on the reply in order, with the update."""
    e = await _entity(ctx, "ve-effects")
    await e.expect(
        await e.send(e.effect("one", True)),
        e.reply(""),
        side_effects=(e.two_side_effect("one", True),),
    )
    await e.expect(
        await e.send(e.effect("two", False), e.update("x"), e.effect("three", True)),
        e.reply("x"),
        update="x",
        side_effects=(e.two_side_effect("two", False), e.two_side_effect("three", True)),
    )


@case("valueentity.failure", "model", VE)
async def failure(ctx: ModelContext) -> None:
    """A failed command discards its update and side effects; the stream stays usable."""
    e = await _entity(ctx, "ve-failure")
    await e.expect(await e.send(e.update("one")), e.reply("one"), update="one")
    cid = await e.send(e.update("two"), e.effect("x", True), e.fail("expected failure"))
    await e.expect(cid, c.failure(cid, "expected failure"), hint=_FAILURE)
    await e.expect(
        await e.send(), e.reply("one"), hint="the update of a failed command must not be applied"
    )
    cid = await e.send(e.delete(), e.fail("no delete"))
    await e.expect(cid, c.failure(cid, "no delete"), hint=_FAILURE)
    await e.expect(await e.send(), e.reply("one"), hint="a failed delete must not be applied")
