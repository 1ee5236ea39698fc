"""Model cases for actions: unary and every streamed shape, the TCK plays the sidecar."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc.aio
from larder_protocol import ACTION
from larder_tck import protocol as p
from larder_tck.context import ModelContext
from larder_tck.expect import CaseFailed, expect_equal
from larder_tck.model import ACTION_MODEL, ACTION_PKG, ACTION_TWO, pack
from larder_tck.registry import case
from larder_tck.streams import REPLY_TIMEOUT

_FAILURE = (
    "a failed action must answer with a Failure carrying the failure message, and with no "
    "side effects"
)
_NO_REPLY = "a group without reply, forward or failure answers with no response (side effects only)"


class ActionModel:
    def __init__(self, ctx: ModelContext) -> None:
        m = ctx.model
        self.ctx = ctx
        self.Request = m.message(f"{ACTION_PKG}.Request")
        self.Step = m.message(f"{ACTION_PKG}.ProcessStep")
        self.Response = m.message(f"{ACTION_PKG}.Response")
        self.OtherRequest = m.message(f"{ACTION_PKG}.OtherRequest")

    # -- requests ------------------------------------------------------------------------

    def request(self, *groups: list[Any]) -> Any:
        return self.Request(groups=[{"steps": list(steps)} for steps in groups])

    def reply(self, message: str) -> Any:
        return self.Step(reply={"message": message})

    def forward(self, target: str) -> Any:
        return self.Step(forward={"id": target})

    def effect(self, target: str, synchronous: bool) -> Any:
        return self.Step(effect={"id": target, "synchronous": synchronous})

    def fail(self, message: str) -> Any:
        return self.Step(fail={"message": message})

    def command(self, method: str, request: Any | None) -> Any:
        out = p.action.ActionCommand(service_name=ACTION_MODEL, name=method)
        if request is not None:
            out.payload.CopyFrom(pack(request))
        return out

    def payload_only(self, request: Any) -> Any:
        return p.action.ActionCommand(payload=pack(request))

    # -- expected responses --------------------------------------------------------------

    def replied(self, message: str, *effects: Any) -> Any:
        out = p.action.ActionResponse(side_effects=list(effects))
        out.reply.payload.CopyFrom(pack(self.Response(message=message)))
        return out

    def forwarded(self, target: str, *effects: Any) -> Any:
        out = p.action.ActionResponse(side_effects=list(effects))
        out.forward.service_name = ACTION_TWO
        out.forward.command_name = "Call"
        out.forward.payload.CopyFrom(pack(self.OtherRequest(id=target)))
        return out

    def failed(self, message: str) -> Any:
        return p.action.ActionResponse(failure=p.component.Failure(description=message))

    def no_reply(self, *effects: Any) -> Any:
        return p.action.ActionResponse(side_effects=list(effects))

    def side_effect(self, target: str, synchronous: bool) -> Any:
        return p.component.SideEffect(
            service_name=ACTION_TWO,
            command_name="Call",
            payload=pack(self.OtherRequest(id=target)),
            synchronous=synchronous,
        )

    # -- calls ---------------------------------------------------------------------------

    async def unary(self, request: Any, expected: Any, hint: str = "") -> None:
        try:
            actual = await self.ctx.actions().HandleUnary(
                self.command("ProcessUnary", request), timeout=REPLY_TIMEOUT
            )
        except grpc.aio.AioRpcError as e:
            raise CaseFailed(f"HandleUnary failed with {e.code().name}: {e.details()}") from e
        expect_equal("HandleUnary response", expected, actual, hint)

    async def streamed_in(self, requests: list[Any], expected: Any, hint: str = "") -> None:
        call = self.ctx.actions().HandleStreamedIn(timeout=REPLY_TIMEOUT)
        try:
            # As the sidecar does: the first message names the method, payloads follow.
            await call.write(self.command("ProcessStreamedIn", None))
            for request in requests:
                await call.write(self.payload_only(request))
            await call.done_writing()
            actual = await call
        except grpc.aio.AioRpcError as e:
            raise CaseFailed(f"HandleStreamedIn failed with {e.code().name}: {e.details()}") from e
        except asyncio.InvalidStateError as e:
            raise CaseFailed(f"HandleStreamedIn: the frontend ended the call early: {e}") from e
        expect_equal("HandleStreamedIn response", expected, actual, hint)

    async def streamed_out(self, request: Any, expected: list[Any], hint: str = "") -> None:
        call = self.ctx.actions().HandleStreamedOut(self.command("ProcessStreamedOut", request))
        stream = self.ctx.track(call, "HandleStreamedOut")
        for i, response in enumerate(expected, start=1):
            await stream.expect(response, f"response {i} of {len(expected)}", hint)
        await stream.expect_end(f"after {len(expected)} responses")


@case("action.unary-reply", "model", ACTION)
async def unary_reply(ctx: ModelContext) -> None:
    """A unary call replies."""
    m = ActionModel(ctx)
    await m.unary(m.request([m.reply("one")]), m.replied("one"))


@case("action.unary-no-reply", "model", ACTION)
async def unary_no_reply(ctx: ModelContext) -> None:
    """A unary call may answer with no reply at all."""
    m = ActionModel(ctx)
    await m.unary(m.request([]), m.no_reply(), _NO_REPLY)


@case("action.unary-forward", "model", ACTION)
async def unary_forward(ctx: ModelContext) -> None:
    """A unary call forwards."""
    m = ActionModel(ctx)
    await m.unary(m.request([m.forward("other")]), m.forwarded("other"))


@case("action.unary-side-effects", "model", ACTION)
async def unary_side_effects(ctx: ModelContext) -> None:
    """Side effects (synchronous and not) ride with a reply, a forward, or no reply."""
    m = ActionModel(ctx)
    sync, other = m.side_effect("a", True), m.side_effect("b", False)
    await m.unary(
        m.request([m.effect("a", True), m.reply("r"), m.effect("b", False)]),
        m.replied("r", sync, other),
    )
    await m.unary(m.request([m.effect("a", True), m.forward("f")]), m.forwarded("f", sync))
    await m.unary(m.request([m.effect("b", False)]), m.no_reply(other), _NO_REPLY)


@case("action.unary-failure", "model", ACTION)
async def unary_failure(ctx: ModelContext) -> None:
    """A failing unary call answers with the failure and drops its side effects."""
    m = ActionModel(ctx)
    await m.unary(m.request([m.fail("expected failure")]), m.failed("expected failure"), _FAILURE)
    await m.unary(
        m.request([m.effect("a", True), m.reply("r"), m.fail("dropped")]),
        m.failed("dropped"),
        _FAILURE,
    )


@case("action.streamed-in", "model", ACTION)
async def streamed_in(ctx: ModelContext) -> None:
    """A streamed-in call answers once for all its requests: reply, forward, no reply, effects."""
    m = ActionModel(ctx)
    await m.streamed_in(
        [m.request([m.reply("first")]), m.request([m.reply("second")])], m.replied("second")
    )
    await m.streamed_in(
        [m.request([m.effect("a", False)]), m.request([m.forward("f")])],
        m.forwarded("f", m.side_effect("a", False)),
    )
    await m.streamed_in([m.request([m.effect("a", True)])], m.no_reply(m.side_effect("a", True)))


@case("action.streamed-in-failure", "model", ACTION)
async def streamed_in_failure(ctx: ModelContext) -> None:
    """A failing streamed-in call answers with the failure."""
    m = ActionModel(ctx)
    await m.streamed_in(
        [m.request([m.effect("a", True)]), m.request([m.fail("expected failure")])],
        m.failed("expected failure"),
        _FAILURE,
    )


@case("action.streamed-out", "model", ACTION)
async def streamed_out(ctx: ModelContext) -> None:
    """A streamed-out call answers once per group: replies, no reply, forwards, side effects."""
    m = ActionModel(ctx)
    await m.streamed_out(
        m.request(
            [m.reply("one")],
            [m.effect("a", True)],
            [m.reply("two"), m.effect("b", False)],
            [m.forward("f")],
        ),
        [
            m.replied("one"),
            m.no_reply(m.side_effect("a", True)),
            m.replied("two", m.side_effect("b", False)),
            m.forwarded("f"),
        ],
        _NO_REPLY,
    )


@case("action.streamed-out-failure", "model", ACTION)
async def streamed_out_failure(ctx: ModelContext) -> None:
    """A failure in a streamed-out call is its last response."""
    m = ActionModel(ctx)
    await m.streamed_out(
        m.request([m.reply("one")], [m.effect("a", True), m.fail("expected failure")]),
        [m.replied("one"), m.failed("expected failure")],
        _FAILURE + "; the stream ends after the failure",
    )


@case("action.streamed", "model", ACTION)
async def streamed(ctx: ModelContext) -> None:
    """A streamed call answers each request as it arrives, once per group."""
    m = ActionModel(ctx)
    stream = ctx.track(ctx.actions().HandleStreamed(), "HandleStreamed")
    await stream.send(m.command("ProcessStreamed", None))
    await stream.send(m.payload_only(m.request([m.reply("one")], [m.effect("a", False)])))
    await stream.expect(m.replied("one"), "the response to the first group")
    await stream.expect(m.no_reply(m.side_effect("a", False)), "the second group", _NO_REPLY)
    await stream.send(m.payload_only(m.request([m.forward("f"), m.effect("b", True)])))
    await stream.expect(m.forwarded("f", m.side_effect("b", True)), "the forward")
    await stream.send(m.payload_only(m.request([m.fail("expected failure")])))
    await stream.expect(m.failed("expected failure"), "the failure", _FAILURE)
    await stream.expect_end("a failure ends a streamed action")
