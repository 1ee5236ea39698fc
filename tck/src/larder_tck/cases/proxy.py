"""Proxy cases: our sidecar in front of the frontend, the interceptor recording between them.

Each case drives the sidecar as a client would (gRPC or HTTP) and asserts both what
the client sees and the protocol traffic the interceptor recorded.
"""

from __future__ import annotations

import json
from typing import Any

import grpc
import grpc.aio
from larder_protocol import EVENT_SOURCED_ENTITY, VALUE_ENTITY
from larder_tck import context as c
from larder_tck import protocol as p
from larder_tck.context import fresh_id
from larder_tck.expect import CaseFailed, check, expect_equal
from larder_tck.model import (
    CONFIGURED_PASSIVATION_MS,
    ES_CONFIGURED,
    ES_MODEL,
    ES_PKG,
    ES_TWO,
    VE_CONFIGURED,
    VE_MODEL,
    VE_PKG,
    pack,
)
from larder_tck.proxy_env import SIDECAR_PASSIVATION, ProxyContext
from larder_tck.registry import case

from ._proxy import (
    ES_HANDLE,
    VE_HANDLE,
    es_messages,
    expect_traffic,
    reactivation_of_abcdef,
    streams_of,
    without_metadata,
)

PASSIVATION_WAIT = 15.0


async def _failing_call(ctx: ProxyContext, service: str, request: Any, response: str) -> Any:
    try:
        await ctx.call(service, "Process", request, response)
    except grpc.aio.AioRpcError as e:
        return e
    raise CaseFailed(f"{service}/Process with a Fail action succeeded; it must fail")


@case("proxy.eventsourced.commands-and-events", "proxy", EVENT_SOURCED_ENTITY)
async def es_commands(ctx: ProxyContext) -> None:
    """Commands through the sidecar: one Init, the commands, the replies with their events."""
    request, action, response, persisted = es_messages(ctx)
    entity = fresh_id("px-es")
    emit = [action(emit={"value": v}) for v in "ABC"]
    first = await ctx.call(
        ES_MODEL, "Process", request(id=entity, actions=emit[:1]), response.DESCRIPTOR.full_name
    )
    second = await ctx.call(
        ES_MODEL, "Process", request(id=entity, actions=emit[1:]), response.DESCRIPTOR.full_name
    )
    expect_equal("the client's first reply", response(message="A"), first)
    expect_equal("the client's second reply", response(message="ABC"), second)
    (stream,) = streams_of(ctx, ES_HANDLE, ES_MODEL, entity)
    init = p.es.EventSourcedInit(service_name=ES_MODEL, entity_id=entity)
    expect_traffic(
        "sidecar -> frontend",
        [
            p.es.EventSourcedStreamIn(init=init),
            p.es.EventSourcedStreamIn(
                command=c.command(entity, 1, "Process", request(id=entity, actions=emit[:1]))
            ),
            p.es.EventSourcedStreamIn(
                command=c.command(entity, 2, "Process", request(id=entity, actions=emit[1:]))
            ),
        ],
        stream.requests,
        "the sidecar sends Init, then commands numbered from 1",
    )
    replies = [
        p.es.EventSourcedReply(
            command_id=1,
            client_action=c.reply(response(message="A")),
            events=[pack(persisted(value="A"))],
        ),
        p.es.EventSourcedReply(
            command_id=2,
            client_action=c.reply(response(message="ABC")),
            events=[pack(persisted(value=v)) for v in "BC"],
        ),
    ]
    expect_traffic(
        "frontend -> sidecar",
        [p.es.EventSourcedStreamOut(reply=r) for r in replies],
        stream.responses,
    )


@case("proxy.eventsourced.recovery-from-journal", "proxy", EVENT_SOURCED_ENTITY)
async def es_recovery(ctx: ProxyContext) -> None:
    """After passivation the sidecar re-activates the entity: Init with snapshot, then events."""
    request, action, response, _ = es_messages(ctx)
    entity = fresh_id("px-es-recover")
    name = response.DESCRIPTOR.full_name
    await ctx.call(
        ES_MODEL,
        "Process",
        request(id=entity, actions=[action(emit={"value": v}) for v in "ABCDE"]),
        name,
    )
    await ctx.call(
        ES_MODEL, "Process", request(id=entity, actions=[action(emit={"value": "F"})]), name
    )
    await ctx.interceptor.wait_for(
        lambda: all(x.ended for x in streams_of(ctx, ES_HANDLE, ES_MODEL, entity)),
        f"the stream of {entity} ending (sidecar passivation {SIDECAR_PASSIVATION})",
        PASSIVATION_WAIT,
    )
    got = await ctx.call(ES_MODEL, "Process", request(id=entity), name)
    expect_equal("the client's reply after re-activation", response(message="ABCDEF"), got)
    streams = streams_of(ctx, ES_HANDLE, ES_MODEL, entity)
    check(len(streams) == 2, f"expected 2 streams for {entity}, saw {len(streams)}")
    expect_traffic(
        "sidecar -> frontend on re-activation",
        reactivation_of_abcdef(ctx, entity),
        streams[1].requests,
        "the sidecar stores the snapshot the frontend sent and replays the events after it",
    )


@case("proxy.eventsourced.forward-and-side-effects", "proxy", EVENT_SOURCED_ENTITY)
async def es_effects(ctx: ProxyContext) -> None:
    """The sidecar runs forwards and side effects on the target; sync ones before the reply."""
    request, action, response, _ = es_messages(ctx)
    entity, target = fresh_id("px-es-fwd"), fresh_id("px-es-target")
    sync_id, async_id = fresh_id("px-es-sync"), fresh_id("px-es-async")
    actions = [
        action(effect={"id": sync_id, "synchronous": True}),
        action(effect={"id": async_id, "synchronous": False}),
        action(forward={"id": target}),
    ]
    got = await ctx.call(
        ES_MODEL, "Process", request(id=entity, actions=actions), response.DESCRIPTOR.full_name
    )
    expect_equal("the client's reply (from the forward's target)", response(), got)
    for target_id in (target, sync_id):
        streams = streams_of(ctx, ES_HANDLE, ES_TWO, target_id)
        check(
            len(streams) == 1 and len(streams[0].responses) == 1,
            f"{ES_TWO}/Call for {target_id!r} must have run before the client got the reply; "
            f"calls seen:\n{ctx.interceptor.describe()}",
        )
        expected = p.es.EventSourcedStreamIn(
            command=c.command(target_id, 1, "Call", request(id=target_id))
        )
        expect_equal(f"the command to {ES_TWO}", expected, without_metadata(streams[0].requests[1]))
    await ctx.interceptor.wait_for(
        lambda: any(x.responses for x in streams_of(ctx, ES_HANDLE, ES_TWO, async_id)),
        f"the asynchronous side effect to {ES_TWO} for {async_id!r}",
    )


@case("proxy.eventsourced.failure", "proxy", EVENT_SOURCED_ENTITY)
async def es_failure(ctx: ProxyContext) -> None:
    """A command failure reaches the client as a gRPC error and HTTP 500; its events are dropped."""
    request, action, response, _ = es_messages(ctx)
    entity = fresh_id("px-es-fail")
    actions = [action(emit={"value": "A"}), action(fail={"message": "expected failure"})]
    error = await _failing_call(
        ctx, ES_MODEL, request(id=entity, actions=actions), response.DESCRIPTOR.full_name
    )
    check(
        error.code() == grpc.StatusCode.UNKNOWN and error.details() == "expected failure",
        "the client must get UNKNOWN 'expected failure', got "
        f"{error.code().name} {error.details()!r}",
    )
    got = await ctx.call(ES_MODEL, "Process", request(id=entity), response.DESCRIPTOR.full_name)
    expect_equal("the state after a failed command", response(message=""), got)
    body = json.dumps({"actions": [{"fail": {"message": "over http"}}]}).encode()
    status, _, data = await ctx.http.request("POST", f"/tck/model/eventsourced/{entity}", body)
    check(
        status == 500 and b"over http" in data,
        f"HTTP: a failed command must answer 500 with the message, got {status} {data[:300]!r}",
    )
    (stream,) = streams_of(ctx, ES_HANDLE, ES_MODEL, entity)
    expect_equal(
        "the frontend's failure reply",
        p.es.EventSourcedStreamOut(
            reply=p.es.EventSourcedReply(
                command_id=1, client_action=c.failure(1, "expected failure")
            )
        ),
        stream.responses[0],
    )


async def _passivation(
    ctx: ProxyContext, method: str, service: str, request_type: str, response_type: str
) -> None:
    entity = fresh_id("px-configured")
    request = ctx.model.new(request_type, id=entity)
    await ctx.call(service, "Call", request, response_type)
    (stream,) = await ctx.interceptor.wait_for(
        lambda: [x for x in streams_of(ctx, method, service, entity) if x.ended] or None,
        f"the configured entity's stream ending (passivation {CONFIGURED_PASSIVATION_MS} ms)",
        PASSIVATION_WAIT,
    )
    assert stream.ended_at is not None and stream.responded_at is not None
    # Idle time from the frontend's reply (the sidecar's passivation clock starts when it
    # gets that reply, before the client sees it) to the end of the stream.
    idle = stream.ended_at - stream.responded_at
    check(
        CONFIGURED_PASSIVATION_MS / 1000 * 0.9 <= idle < 1.5,
        f"the stream ended {idle:.3f}s after the reply; the configured passivation timeout is "
        f"{CONFIGURED_PASSIVATION_MS} ms (the sidecar's default is {SIDECAR_PASSIVATION})",
    )
    await ctx.call(service, "Call", request, response_type)
    check(
        len(streams_of(ctx, method, service, entity)) == 2,
        "a command after passivation must open a new stream",
    )


@case("proxy.eventsourced.passivation", "proxy", EVENT_SOURCED_ENTITY)
async def es_passivation(ctx: ProxyContext) -> None:
    """The configured entity is passivated after its 100 ms timeout and re-activated on demand."""
    await _passivation(ctx, ES_HANDLE, ES_CONFIGURED, f"{ES_PKG}.Request", f"{ES_PKG}.Response")


@case("proxy.valueentity.passivation", "proxy", VALUE_ENTITY)
async def ve_passivation(ctx: ProxyContext) -> None:
    """The configured value entity is passivated after its 100 ms timeout."""
    await _passivation(ctx, VE_HANDLE, VE_CONFIGURED, f"{VE_PKG}.Request", f"{VE_PKG}.Response")


@case("proxy.valueentity.state", "proxy", VALUE_ENTITY)
async def ve_state(ctx: ProxyContext) -> None:
    """Updates, deletes and failures through the sidecar; the stored state comes back in Init."""
    m = ctx.model
    request, action = m.message(f"{VE_PKG}.Request"), m.message(f"{VE_PKG}.RequestAction")
    response, persisted = m.message(f"{VE_PKG}.Response"), m.message(f"{VE_PKG}.Persisted")
    name = response.DESCRIPTOR.full_name
    entity = fresh_id("px-ve")

    async def process(*actions: Any) -> Any:
        return await ctx.call(VE_MODEL, "Process", request(id=entity, actions=list(actions)), name)

    expect_equal("update", response(message="one"), await process(action(update={"value": "one"})))
    expect_equal("delete", response(message=""), await process(action(delete={})))
    expect_equal("update", response(message="two"), await process(action(update={"value": "two"})))
    error = await _failing_call(
        ctx,
        VE_MODEL,
        request(id=entity, actions=[action(update={"value": "x"}), action(fail={"message": "no"})]),
        name,
    )
    check(
        error.details() == "no", f"the client must get the failure message, got {error.details()!r}"
    )
    await ctx.interceptor.wait_for(
        lambda: all(x.ended for x in streams_of(ctx, VE_HANDLE, VE_MODEL, entity)),
        f"the stream of {entity} ending (sidecar passivation {SIDECAR_PASSIVATION})",
        PASSIVATION_WAIT,
    )
    expect_equal("state after re-activation", response(message="two"), await process())
    streams = streams_of(ctx, VE_HANDLE, VE_MODEL, entity)
    init = p.ve.ValueEntityInit(service_name=VE_MODEL, entity_id=entity)
    init.state.value.CopyFrom(pack(persisted(value="two")))
    expect_equal(
        "Init on re-activation",
        p.ve.ValueEntityStreamIn(init=init),
        streams[-1].requests[0],
        "the sidecar must store the last update and pass it in Init",
    )


@case("proxy.http.json", "proxy", EVENT_SOURCED_ENTITY)
async def http_json(ctx: ProxyContext) -> None:
    """The HTTP API: google.api.http routes and the generic POST /<service>/<method>."""
    entity = fresh_id("px-http")
    body = json.dumps({"actions": [{"emit": {"value": "A"}}]}).encode()
    status, _, data = await ctx.http.request("POST", f"/tck/model/eventsourced/{entity}", body)
    check(status == 200, f"POST /tck/model/eventsourced/{entity}: {status} {data[:300]!r}")
    check(
        json.loads(data) == {"message": "A"},
        f"the JSON reply must be {{'message': 'A'}}, got {data!r}",
    )
    body = json.dumps({"id": entity, "actions": [{"emit": {"value": "B"}}]}).encode()
    status, _, data = await ctx.http.request("POST", f"/{ES_MODEL}/Process", body)
    check(status == 200, f"POST /{ES_MODEL}/Process: {status} {data[:300]!r}")
    check(
        json.loads(data) == {"message": "AB"},
        f"the JSON reply must be {{'message': 'AB'}}, got {data!r}",
    )
