"""Proxy cases for actions: every call shape through the sidecar's gRPC front.

The client calls the user's `ActionTckModel` methods on the sidecar; the cases
check what the client gets and, from the interceptor, how the sidecar turned the
call into protocol traffic (for streamed input: one command naming the method,
then payload-only commands) and that it ran the side effects the frontend asked for.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import grpc.aio
from larder_protocol import ACTION
from larder_tck import protocol as p
from larder_tck.compare import equivalent
from larder_tck.context import fresh_id
from larder_tck.expect import CaseFailed, check, expect_equal
from larder_tck.interceptor import Exchange
from larder_tck.model import ACTION_MODEL, ACTION_PKG, ACTION_TWO, pack
from larder_tck.proxy_env import ProxyContext
from larder_tck.registry import case

from ._proxy import ACTION_STREAMED, ACTION_STREAMED_IN, ACTION_UNARY, expect_traffic

READ_TIMEOUT = 10.0


class _Actions:
    def __init__(self, ctx: ProxyContext) -> None:
        m = ctx.model
        self.ctx = ctx
        self.Request = m.message(f"{ACTION_PKG}.Request")
        self.Response = m.message(f"{ACTION_PKG}.Response")
        self.OtherRequest = m.message(f"{ACTION_PKG}.OtherRequest")

    def request(self, *groups: list[dict[str, Any]]) -> Any:
        return self.Request(groups=[{"steps": list(steps)} for steps in groups])

    def method(self, name: str) -> str:
        return f"/{ACTION_MODEL}/{name}"

    def names_method(self, name: str) -> Any:
        return p.action.ActionCommand(service_name=ACTION_MODEL, name=name)

    def payload(self, request: Any) -> Any:
        return p.action.ActionCommand(payload=pack(request))

    def replied(self, message: str, *effects: Any) -> Any:
        out = p.action.ActionResponse(side_effects=list(effects))
        out.reply.payload.CopyFrom(pack(self.Response(message=message)))
        return out

    def effect(self, target: str) -> Any:
        return p.component.SideEffect(
            service_name=ACTION_TWO,
            command_name="Call",
            payload=pack(self.OtherRequest(id=target)),
            synchronous=True,
        )

    def calls_to_two(self) -> list[Exchange]:
        return [
            x
            for x in self.ctx.interceptor.streams(ACTION_UNARY)
            if x.requests and x.requests[0].service_name == ACTION_TWO
        ]

    def ran_on_two(self, target: str) -> bool:
        """Whether the sidecar called ActionTwo/Call with `target` and got its answer."""
        wanted = pack(self.OtherRequest(id=target))
        return any(
            x.responses and equivalent(wanted, x.requests[0].payload) for x in self.calls_to_two()
        )

    def exchange(self, method: str, marker: Any) -> Exchange:
        """The one call of `method` whose first payload is `marker`."""
        found = [
            x
            for x in self.ctx.interceptor.streams(method)
            if len(x.requests) > 1 and equivalent(pack(marker), x.requests[1].payload)
        ]
        check(
            len(found) == 1,
            f"expected one {method} call carrying {marker}, saw {len(found)}; calls seen:\n"
            + self.ctx.interceptor.describe(),
        )
        return found[0]


def _serialize(message: Any) -> bytes:
    data: bytes = message.SerializeToString()
    return data


@case("proxy.action.unary", "proxy", ACTION)
async def action_unary(ctx: ProxyContext) -> None:
    """Action replies, forwards, side effects and failures through the sidecar."""
    a = _Actions(ctx)
    name = a.Response.DESCRIPTOR.full_name

    async def unary(*steps: dict[str, Any]) -> Any:
        return await ctx.call(ACTION_MODEL, "ProcessUnary", a.request(list(steps)), name)

    expect_equal("reply", a.Response(message="hi"), await unary({"reply": {"message": "hi"}}))
    target, effect = fresh_id("px-action-fwd"), fresh_id("px-action-effect")
    got = await unary({"effect": {"id": effect, "synchronous": True}}, {"forward": {"id": target}})
    expect_equal("forwarded reply", a.Response(), got)
    for target_id in (effect, target):
        check(
            a.ran_on_two(target_id),
            f"the sidecar must call {ACTION_TWO}/Call with id {target_id!r}; calls seen:\n"
            + ctx.interceptor.describe(),
        )
    try:
        await unary({"fail": {"message": "action failed"}})
    except grpc.aio.AioRpcError as e:
        check(
            e.details() == "action failed", f"the client must get the message, got {e.details()!r}"
        )
    else:
        raise CaseFailed("an action with a Fail step succeeded through the sidecar")


@case("proxy.action.streamed-out", "proxy", ACTION)
async def action_streamed_out(ctx: ProxyContext) -> None:
    """A server-streaming action through the sidecar yields one response per group."""
    a = _Actions(ctx)
    call = ctx.sidecar.unary_stream(
        a.method("ProcessStreamedOut"),
        request_serializer=_serialize,
        response_deserializer=a.Response.FromString,
    )
    groups = [[{"reply": {"message": v}}] for v in ("one", "two", "three")]
    got = [r async for r in call(a.request(*groups), timeout=10)]
    expected = [a.Response(message=v) for v in ("one", "two", "three")]
    check(got == expected, f"the client must get {expected}, got {got}")


@case("proxy.action.streamed-in", "proxy", ACTION)
async def action_streamed_in(ctx: ProxyContext) -> None:
    """A client-streaming action through the sidecar: the method, then payloads; one answer."""
    a = _Actions(ctx)
    first, last, effect = fresh_id("px-in-first"), fresh_id("px-in-last"), fresh_id("px-in-fx")
    requests = [
        a.request([{"reply": {"message": first}}]),
        a.request([{"effect": {"id": effect, "synchronous": True}}]),
        a.request([{"reply": {"message": last}}]),
    ]
    call = ctx.sidecar.stream_unary(
        a.method("ProcessStreamedIn"),
        request_serializer=_serialize,
        response_deserializer=a.Response.FromString,
    )

    async def send(items: list[Any]) -> AsyncIterator[Any]:
        for item in items:
            yield item

    got = await call(send(requests), timeout=10)
    expect_equal("the client's reply (the last reply step wins)", a.Response(message=last), got)
    check(
        a.ran_on_two(effect),
        f"the synchronous side effect {ACTION_TWO}/Call {effect!r} must have run before the "
        f"client got the reply; calls seen:\n{ctx.interceptor.describe()}",
    )
    exchange = a.exchange(ACTION_STREAMED_IN, requests[0])
    expect_traffic(
        "sidecar -> frontend",
        [a.names_method("ProcessStreamedIn"), *(a.payload(r) for r in requests)],
        exchange.requests,
        "the first command names the service and method (no payload), one payload per message",
    )
    expect_traffic("frontend -> sidecar", [a.replied(last, a.effect(effect))], exchange.responses)

    failing = [a.request([{"reply": {"message": "x"}}]), a.request([{"fail": {"message": "no"}}])]
    try:
        await call(send(failing), timeout=10)
    except grpc.aio.AioRpcError as e:
        check(
            e.code() == grpc.StatusCode.UNKNOWN and e.details() == "no",
            f"the client must get UNKNOWN 'no', got {e.code().name} {e.details()!r}",
        )
    else:
        raise CaseFailed("a streamed-in call with a Fail step succeeded through the sidecar")


@case("proxy.action.streamed", "proxy", ACTION)
async def action_streamed(ctx: ProxyContext) -> None:
    """A bidirectional action through the sidecar answers each request before the next is sent."""
    a = _Actions(ctx)
    one, two, effect = fresh_id("px-bidi-one"), fresh_id("px-bidi-two"), fresh_id("px-bidi-fx")
    requests = [
        a.request([{"reply": {"message": one}}]),
        a.request([{"reply": {"message": two}}], [{"effect": {"id": effect, "synchronous": True}}]),
        a.request([{"fail": {"message": "streamed failure"}}]),
    ]
    call = ctx.sidecar.stream_stream(
        a.method("ProcessStreamed"),
        request_serializer=_serialize,
        response_deserializer=a.Response.FromString,
    )(timeout=15)  # type: ignore[call-arg]  # no iterator: grpc.aio then takes write()s
    try:

        async def read(what: str) -> Any:
            try:
                return await asyncio.wait_for(call.read(), READ_TIMEOUT)
            except TimeoutError:
                raise CaseFailed(
                    f"no response within {READ_TIMEOUT:.0f}s while waiting for {what}; the "
                    "sidecar must relay each response as the frontend sends it"
                ) from None

        # Each read happens before the next write: the sidecar may not wait for the end
        # of the client's stream (or for more requests) to relay a response.
        await call.write(requests[0])
        expect_equal("the reply to the first request", a.Response(message=one), await read(one))
        await call.write(requests[1])
        expect_equal("the reply to the second request", a.Response(message=two), await read(two))
        await call.write(requests[2])
        try:
            extra = await read("the failure")
        except grpc.aio.AioRpcError as e:
            check(
                e.code() == grpc.StatusCode.UNKNOWN and e.details() == "streamed failure",
                f"the client must get UNKNOWN 'streamed failure', got {e.code().name} "
                f"{e.details()!r}",
            )
        else:
            raise CaseFailed(f"after a Fail step the client must get an error, got {extra}")
    finally:
        call.cancel()
    check(
        a.ran_on_two(effect),
        f"the side effect of the group without a reply ({ACTION_TWO}/Call {effect!r}) must "
        f"run; calls seen:\n{ctx.interceptor.describe()}",
    )
    exchange = a.exchange(ACTION_STREAMED, requests[0])
    expect_traffic(
        "sidecar -> frontend",
        [a.names_method("ProcessStreamed"), *(a.payload(r) for r in requests)],
        exchange.requests,
        "the first command names the service and method (no payload), one payload per message",
    )
    no_reply = p.action.ActionResponse(side_effects=[a.effect(effect)])
    failed = p.action.ActionResponse(failure=p.component.Failure(description="streamed failure"))
    expect_traffic(
        "frontend -> sidecar",
        [a.replied(one), a.replied(two), no_reply, failed],
        exchange.responses,
    )
