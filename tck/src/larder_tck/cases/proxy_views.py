"""Proxy cases for views: entity changes through the sidecar reach the view, queries read it.

A view follows its entities after their writes are acknowledged (eventually consistent,
docs/views.md), so each case polls its query until the expected answer shows, then checks
the `Views/Handle` traffic the interceptor recorded: one call per change of a transformed
update, carrying the stored row as `by_subject_lookup_result`, none for a table the sidecar
fills itself.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

import grpc
import grpc.aio
from larder_protocol import VIEW
from larder_tck.context import fresh_id
from larder_tck.expect import CaseFailed, check, expect_equal, show
from larder_tck.interceptor import Exchange
from larder_tck.model import ES_MODEL, ES_PKG, VE_MODEL, VE_PKG, VIEW_MODEL
from larder_tck.proxy_env import ProxyContext, call_on
from larder_tck.registry import case

from ._proxy import es_messages
from ._view import (
    ES_ROWS,
    FAIL,
    FROM_EVENT,
    FROM_STATE,
    IGNORE,
    IGNORE_HINT,
    STORE_STATE,
    UPSERT_HINT,
    VE_ROWS,
    ViewModel,
)

VIEW_HANDLE = "/akkaserverless.component.view.Views/Handle"
VIEW_WAIT = 15.0
"""How long a change may take to show in a query (the sidecar applies it in the background)."""
QUERY_TIMEOUT = 10.0


async def _query(
    ctx: ProxyContext,
    method: str,
    value: str,
    reply: Any,
    channel: grpc.aio.Channel | None = None,
) -> Any | None:
    """A unary query through the sidecar: the reply, or None for NOT_FOUND (no row matched)."""
    m = ViewModel(ctx.model)
    stub = (channel or ctx.sidecar).unary_unary(
        f"/{VIEW_MODEL}/{method}",
        request_serializer=lambda r: r.SerializeToString(),
        response_deserializer=reply.FromString,
    )
    try:
        return await stub(m.ByValue(value=value), timeout=QUERY_TIMEOUT)
    except grpc.aio.AioRpcError as e:
        if e.code() == grpc.StatusCode.NOT_FOUND:
            return None
        raise CaseFailed(
            f"the query {VIEW_MODEL}/{method}(value={value!r}) failed with {e.code().name}: "
            f"{e.details()}"
        ) from e


async def _stream_query(ctx: ProxyContext, method: str, value: str) -> list[Any]:
    m = ViewModel(ctx.model)
    stub = ctx.sidecar.unary_stream(
        f"/{VIEW_MODEL}/{method}",
        request_serializer=lambda r: r.SerializeToString(),
        response_deserializer=m.Row.FromString,
    )
    try:
        return [row async for row in stub(m.ByValue(value=value), timeout=QUERY_TIMEOUT)]
    except grpc.aio.AioRpcError as e:
        raise CaseFailed(
            f"the streamed query {VIEW_MODEL}/{method}(value={value!r}) failed with "
            f"{e.code().name}: {e.details()}"
        ) from e


def _text(answer: Any) -> str:
    if answer is None:
        return "NOT_FOUND\n"
    if isinstance(answer, list):
        return "".join(show(a) for a in answer) or "no rows\n"
    return show(answer)


async def _eventually(read: Callable[[], Awaitable[Any]], want: Any, what: str) -> None:
    """Poll `read` until it answers `want` (a message, a list of them, or None for NOT_FOUND)."""
    deadline = time.monotonic() + VIEW_WAIT
    while True:
        got = await read()
        if got == want:
            return
        if time.monotonic() > deadline:
            raise CaseFailed(
                f"{what}: the view did not answer as expected within {VIEW_WAIT:.0f}s.\n"
                f"--- expected\n{_text(want)}--- last answer\n{_text(got)}"
            )
        await asyncio.sleep(0.1)  # the sidecar applies changes in the background: poll


async def _set_state(ctx: ProxyContext, entity: str, value: str | None) -> None:
    """Update (or, with None, delete) a value entity model's state through the sidecar."""
    m = ctx.model
    request, action = m.message(f"{VE_PKG}.Request"), m.message(f"{VE_PKG}.RequestAction")
    act = action(delete={}) if value is None else action(update={"value": value})
    await ctx.call(VE_MODEL, "Process", request(id=entity, actions=[act]), f"{VE_PKG}.Response")


async def _emit(ctx: ProxyContext, entity: str, *values: str) -> None:
    request, action, response, _ = es_messages(ctx)
    actions = [action(emit={"value": v}) for v in values]
    await ctx.call(
        ES_MODEL, "Process", request(id=entity, actions=actions), response.DESCRIPTOR.full_name
    )


def _handle_calls(ctx: ProxyContext, method: str, entity: str | None = None) -> list[Exchange]:
    """The recorded `Views/Handle` calls for `method` (and the change of `entity`, if given)."""
    key = ViewModel.key(entity) if entity is not None else None
    return [
        x
        for x in ctx.interceptor.streams(VIEW_HANDLE)
        if x.requests
        and x.requests[0].receive.command_name == method
        and (key is None or x.requests[0].receive.key == key)
    ]


def _check_handle_calls(
    ctx: ProxyContext, method: str, entity: str, expected: list[tuple[Any, Any]]
) -> None:
    """Each (ReceiveEvent, answer) pair is one recorded call, in order."""
    calls = _handle_calls(ctx, method, entity)
    check(
        len(calls) == len(expected),
        f"the interceptor recorded {len(calls)} Views/Handle calls of {method} for {entity!r}, "
        f"expected {len(expected)} (one per change); calls seen:\n{ctx.interceptor.describe()}",
    )
    for i, (call, (receive, answer)) in enumerate(zip(calls, expected, strict=True), start=1):
        check(
            len(call.requests) == 1,
            f"Views/Handle call {i} of {method} for {entity!r} carried {len(call.requests)} "
            "messages; the sidecar sends one ReceiveEvent per call",
        )
        sent = call.requests[0].receive
        subjects = [e.string_value for e in sent.metadata.entries if e.key == "ce-subject"]
        check(
            subjects == [entity],
            f"ReceiveEvent {i} of {method} for {entity!r}: the metadata's ce-subject must be the "
            f"entity id, found {subjects}",
        )
        sent_without_metadata = type(sent)()
        sent_without_metadata.CopyFrom(sent)
        sent_without_metadata.ClearField("metadata")
        expect_equal(
            f"sidecar -> frontend, ReceiveEvent {i} of {method} for {entity!r}",
            receive,
            sent_without_metadata,
            "the sidecar sends the change as payload, the table as initial_table, the entity "
            "id as key, and the row stored for that key as by_subject_lookup_result (absent "
            "when there is none)",
        )
        check(
            len(call.responses) == 1,
            f"Views/Handle call {i} of {method} for {entity!r}: the frontend sent "
            f"{len(call.responses)} answers, expected 1",
        )
        expect_equal(
            f"frontend -> sidecar, the answer to ReceiveEvent {i} of {method} for {entity!r}",
            answer,
            call.responses[0],
            UPSERT_HINT if answer.upsert.HasField("row") else IGNORE_HINT,
        )


@case("proxy.view.value-entity-transform", "proxy", VIEW)
async def value_entity_transform(ctx: ProxyContext) -> None:
    """Value entity updates reach the view through the update handler; gRPC and HTTP query it."""
    m = ViewModel(ctx.model)
    entity = fresh_id("px-view-ve")
    one, two = f"{entity}-one", f"{entity}-two"
    await _set_state(ctx, entity, one)
    await _eventually(
        lambda: _query(ctx, "GetRow", one, m.Row), m.row(one), f"GetRow({one!r}) after the update"
    )
    await _set_state(ctx, entity, two)
    await _eventually(
        lambda: _query(ctx, "GetRow", two, m.Row),
        m.row(two, previous=one, updates=2),
        f"GetRow({two!r}) after the second update",
    )
    gone = await _query(ctx, "GetRow", one, m.Row)
    check(
        gone is None,
        f"GetRow({one!r}) must be NOT_FOUND once the entity's row holds {two!r} (one row per "
        f"entity), got:\n{_text(gone)}",
    )
    path = f"/tck/model/view/ve-rows/{quote(two)}"
    status, _, body = await ctx.http.request("GET", path)
    check(status == 200, f"GET {path}: {status} {body[:300]!r}")
    want = {"value": two, "previous": one, "updates": 2}
    check(json.loads(body) == want, f"GET {path} must answer {want}, got {body[:300]!r}")
    row_one = m.row(one)
    _check_handle_calls(
        ctx,
        FROM_STATE,
        entity,
        [
            (
                m.receive(FROM_STATE, VE_ROWS, m.State(value=one), entity, metadata=False),
                m.upserted(VE_ROWS, entity, row_one),
            ),
            (
                m.receive(FROM_STATE, VE_ROWS, m.State(value=two), entity, row_one, metadata=False),
                m.upserted(VE_ROWS, entity, m.row(two, previous=one, updates=2)),
            ),
        ],
    )


@case("proxy.view.value-entity-state-and-delete", "proxy", VIEW)
async def value_entity_state(ctx: ProxyContext) -> None:
    """Without transform_updates the state is the row; deleting the entity removes its rows."""
    m = ViewModel(ctx.model)
    entity = fresh_id("px-view-state")
    kept = f"{entity}-kept"
    await _set_state(ctx, entity, kept)
    await _eventually(
        lambda: _query(ctx, "GetState", kept, m.State),
        m.State(value=kept),
        f"GetState({kept!r}) after the update",
    )
    stored_itself = _handle_calls(ctx, STORE_STATE)
    check(
        not stored_itself,
        f"the sidecar called Views/Handle for {STORE_STATE}, which has no transform_updates "
        f"(the sidecar stores the state as the row itself): {len(stored_itself)} calls",
    )
    await _set_state(ctx, entity, None)
    await _eventually(
        lambda: _query(ctx, "GetState", kept, m.State),
        None,
        f"GetState({kept!r}) after the entity was deleted (NOT_FOUND)",
    )
    await _eventually(
        lambda: _query(ctx, "GetRow", kept, m.Row),
        None,
        f"GetRow({kept!r}) after the entity was deleted (NOT_FOUND: a deletion removes the "
        "entity's row from every table it feeds)",
    )
    calls = _handle_calls(ctx, FROM_STATE, entity)
    check(
        len(calls) == 1,
        f"expected one Views/Handle call of {FROM_STATE} for {entity!r} (the update; a "
        f"deletion removes rows without calling the user function), saw {len(calls)}",
    )


@case("proxy.view.event-sourced", "proxy", VIEW)
async def event_sourced(ctx: ProxyContext) -> None:
    """Event-sourced events reach the view in order, each with the row before it; streamed query."""
    m = ViewModel(ctx.model)
    entity = fresh_id("px-view-es")
    first = f"{entity}:"
    await _emit(ctx, entity, first, "A")
    await _emit(ctx, entity, "B")
    want = m.row(f"{first}AB", previous=f"{first}A", updates=3)
    await _eventually(
        lambda: _stream_query(ctx, "GetEventRows", f"{first}AB"),
        [want],
        f"GetEventRows({first + 'AB'!r}) after three events",
    )
    earlier = await _stream_query(ctx, "GetEventRows", f"{first}A")
    check(
        earlier == [],
        f"GetEventRows({first + 'A'!r}) must stream no rows once the entity's row moved on, "
        f"got:\n{_text(earlier)}",
    )
    body = json.dumps({"value": f"{first}AB"}).encode()
    path = f"/{VIEW_MODEL}/GetEventRows"
    status, _, data = await ctx.http.request("POST", path, body)
    check(status == 200, f"POST {path}: {status} {data[:300]!r}")
    rows = [{"value": f"{first}AB", "previous": f"{first}A", "updates": 3}]
    check(
        json.loads(data) == rows,
        f"POST {path}: a streamed query answers a JSON array of its rows, {rows}; got "
        f"{data[:300]!r}",
    )
    event = ctx.model.message(f"{ES_PKG}.Persisted")
    rows_before = [m.row(first), m.row(f"{first}A", previous=first, updates=2), want]
    expected = []
    for i, value in enumerate((first, "A", "B")):
        previous = rows_before[i - 1] if i else None
        receive = m.receive(
            FROM_EVENT, ES_ROWS, event(value=value), entity, previous, metadata=False
        )
        expected.append((receive, m.upserted(ES_ROWS, entity, rows_before[i])))
    _check_handle_calls(ctx, FROM_EVENT, entity, expected)


@case("proxy.view.ignored-change", "proxy", VIEW)
async def ignored_change(ctx: ProxyContext) -> None:
    """A change the update handler ignores leaves the row as it was for the next change."""
    m = ViewModel(ctx.model)
    entity = fresh_id("px-view-ignore")
    one, ignored, three = f"{entity}-one", f"{IGNORE}{entity}", f"{entity}-three"
    await _set_state(ctx, entity, one)
    await _eventually(
        lambda: _query(ctx, "GetRow", one, m.Row), m.row(one), f"GetRow({one!r}) after the update"
    )
    await _set_state(ctx, entity, ignored)
    await _set_state(ctx, entity, three)
    await _eventually(
        lambda: _query(ctx, "GetRow", three, m.Row),
        m.row(three, previous=one, updates=2),
        f"GetRow({three!r}) after an ignored update (the row before it must be unchanged)",
    )
    row_one = m.row(one)
    _check_handle_calls(
        ctx,
        FROM_STATE,
        entity,
        [
            (
                m.receive(FROM_STATE, VE_ROWS, m.State(value=one), entity, metadata=False),
                m.upserted(VE_ROWS, entity, row_one),
            ),
            (
                m.receive(
                    FROM_STATE, VE_ROWS, m.State(value=ignored), entity, row_one, metadata=False
                ),
                m.ignored(),
            ),
            (
                m.receive(
                    FROM_STATE, VE_ROWS, m.State(value=three), entity, row_one, metadata=False
                ),
                m.upserted(VE_ROWS, entity, m.row(three, previous=one, updates=2)),
            ),
        ],
    )


RETRIES_SEEN = 3
"""Attempts at a failing update the retry case waits for (the sidecar backs off from 0.1 s)."""


@case("proxy.view.failed-update-retried", "proxy", VIEW)
async def failed_update_retried(ctx: ProxyContext) -> None:
    """A failing update handler holds its change back: the sidecar retries it and stores nothing."""
    m = ViewModel(ctx.model)
    entity = fresh_id("px-view-fail")
    failing = f"{FAIL}{entity}"
    request = ctx.model.message(f"{VE_PKG}.Request")
    action = ctx.model.message(f"{VE_PKG}.RequestAction")
    # A sidecar of its own: its view stays stuck behind the failing change (docs/views.md,
    # Delivery), which must not hold up the other cases' view.
    async with ctx.launcher.launch("view-failure") as sidecar:
        await call_on(
            sidecar.channel,
            ctx.model,
            service=VE_MODEL,
            method="Process",
            request=request(id=entity, actions=[action(update={"value": failing})]),
            response=f"{VE_PKG}.Response",
        )
        attempts = await ctx.interceptor.wait_for(
            lambda: (
                calls
                if len(calls := [x for x in _handle_calls(ctx, FROM_STATE, entity) if x.ended])
                >= RETRIES_SEEN
                else None
            ),
            f"{RETRIES_SEEN} attempts at the update of {entity!r}, whose handler fails (a "
            "failed update is retried, never skipped)",
            VIEW_WAIT,
        )
        stored = await _query(ctx, "GetRow", failing, m.Row, sidecar.channel)
        await sidecar.kill()
    expected = m.receive(FROM_STATE, VE_ROWS, m.State(value=failing), entity, metadata=False)
    for i, attempt in enumerate(attempts, start=1):
        sent = attempt.requests[0].receive
        sent_without_metadata = type(sent)()
        sent_without_metadata.CopyFrom(sent)
        sent_without_metadata.ClearField("metadata")
        expect_equal(
            f"sidecar -> frontend, attempt {i} at the failing update",
            expected,
            sent_without_metadata,
            "a retried update is the same ReceiveEvent: no row was stored in between",
        )
        check(
            not attempt.responses,
            f"attempt {i} at the failing update: the frontend answered {len(attempt.responses)} "
            f"messages, but its handler fails:\n{_text(list(attempt.responses))}",
        )
    check(
        stored is None,
        f"GetRow({failing!r}) must be NOT_FOUND: the handler never produced that row; got:\n"
        f"{_text(stored)}",
    )
