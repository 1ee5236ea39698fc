"""Model cases for views: the TCK plays the sidecar on `Views/Handle`.

As Larder's sidecar does (docs/views.md, "The update protocol"), each update is one
`Handle` call carrying one `ReceiveEvent`, answered by one `ViewStreamOut`; the TCK then
half-closes the call and the frontend ends it.
"""

from __future__ import annotations

from typing import Any

import grpc.aio
from akkaserverless import annotations_pb2
from google.protobuf import descriptor_pb2
from larder_protocol import VIEW
from larder_tck import protocol as p
from larder_tck.context import ModelContext, fresh_id
from larder_tck.discover import discover
from larder_tck.expect import CaseFailed, check, expect_equal, show
from larder_tck.model import VIEW_MODEL
from larder_tck.registry import case
from larder_tck.streams import Stream

from ._view import (
    ES_ROWS,
    FAIL,
    FROM_EVENT,
    FROM_STATE,
    IGNORE,
    IGNORE_HINT,
    UPSERT_HINT,
    VE_ROWS,
    ViewModel,
)

_FAILURE = (
    "the view protocol has no failure message: a frontend whose update handler fails must "
    "end the Handle call with an error status (e.g. UNKNOWN naming the handler's error) and "
    "send no Upsert. An Upsert would store or ignore a change that was never handled; a "
    "clean end (OK) reports nothing, so the sidecar can only guess why the answer is missing"
)
_PREVIOUS = "the update handler must get the row in by_subject_lookup_result as its previous row"


async def _send(ctx: ModelContext, receive: Any, what: str) -> Stream:
    stream = ctx.view_stream(f"view update stream for {what}")
    await stream.send(p.view.ViewStreamIn(receive=receive))
    return stream


async def _update(ctx: ModelContext, receive: Any, what: str, expected: Any, hint: str) -> None:
    """One update: the frontend answers `expected`, then ends the call once the TCK half-closes."""
    stream = await _send(ctx, receive, what)
    await stream.expect(expected, "the answer to the ReceiveEvent", hint)
    await stream.done_writing()
    await stream.expect_end("the TCK half-closed the call after the answer, as the sidecar does")


@case("view.state-without-previous-row", "model", VIEW)
async def state_without_previous_row(ctx: ModelContext) -> None:
    """A value entity's state with no row stored yet becomes a new row (no lookup result)."""
    m = ViewModel(ctx.model)
    entity = fresh_id("view-ve-new")
    await _update(
        ctx,
        m.receive(FROM_STATE, VE_ROWS, m.State(value="one"), entity),
        entity,
        m.upserted(VE_ROWS, entity, m.row("one", previous="", updates=1)),
        UPSERT_HINT + "; without by_subject_lookup_result there is no previous row",
    )


@case("view.state-with-previous-row", "model", VIEW)
async def state_with_previous_row(ctx: ModelContext) -> None:
    """A value entity's state and the stored row (by_subject_lookup_result) make the new row."""
    m = ViewModel(ctx.model)
    entity = fresh_id("view-ve-previous")
    previous = m.row("one", previous="zero", updates=4)
    await _update(
        ctx,
        m.receive(FROM_STATE, VE_ROWS, m.State(value="two"), entity, previous),
        entity,
        m.upserted(VE_ROWS, entity, m.row("two", previous="one", updates=5)),
        f"{UPSERT_HINT}; {_PREVIOUS}",
    )


@case("view.event-with-and-without-previous-row", "model", VIEW)
async def event_rows(ctx: ModelContext) -> None:
    """Event-sourced events are transformed into rows, with and without a stored row."""
    m = ViewModel(ctx.model)
    entity = fresh_id("view-es")
    await _update(
        ctx,
        m.receive(FROM_EVENT, ES_ROWS, m.Event(value="A"), entity),
        f"{entity}, its first event",
        m.upserted(ES_ROWS, entity, m.row("A", previous="", updates=1)),
        UPSERT_HINT,
    )
    await _update(
        ctx,
        m.receive(FROM_EVENT, ES_ROWS, m.Event(value="C"), entity, m.row("AB", "A", 2)),
        f"{entity}, a later event",
        m.upserted(ES_ROWS, entity, m.row("ABC", previous="AB", updates=3)),
        f"{UPSERT_HINT}; the event's row appends its value to the previous row's; {_PREVIOUS}",
    )


@case("view.ignore-change", "model", VIEW)
async def ignore_change(ctx: ModelContext) -> None:
    """An update handler that ignores a change answers an Upsert without a row."""
    m = ViewModel(ctx.model)
    entity = fresh_id("view-ignore")
    state = m.State(value=f"{IGNORE}state")
    event = m.Event(value=f"{IGNORE}event")
    previous = m.row("kept", updates=1)
    await _update(
        ctx,
        m.receive(FROM_STATE, VE_ROWS, state, entity),
        f"{entity}, a state to ignore without a previous row",
        m.ignored(),
        IGNORE_HINT,
    )
    await _update(
        ctx,
        m.receive(FROM_STATE, VE_ROWS, state, entity, previous),
        f"{entity}, a state to ignore with a previous row",
        m.ignored(),
        IGNORE_HINT + "; the previous row must not be sent back",
    )
    await _update(
        ctx,
        m.receive(FROM_EVENT, ES_ROWS, event, entity, previous),
        f"{entity}, an event to ignore",
        m.ignored(),
        IGNORE_HINT,
    )


@case("view.handler-failure", "model", VIEW)
async def handler_failure(ctx: ModelContext) -> None:
    """A failing update handler ends the call with an error status and no Upsert."""
    m = ViewModel(ctx.model)
    entity = fresh_id("view-fail")
    what = f"{entity}, a state whose handler fails"
    stream = await _send(
        ctx, m.receive(FROM_STATE, VE_ROWS, m.State(value=f"{FAIL}boom"), entity), what
    )
    out = await stream.receive_or_error("the end of the call with an error status")
    if out is None:
        raise CaseFailed(
            f"{stream.what}: the frontend ended the call with status OK and no answer.\n"
            f"Likely cause: {_FAILURE}"
        )
    if not isinstance(out, grpc.aio.AioRpcError):
        raise CaseFailed(
            f"{stream.what}: the frontend answered an update whose handler failed:\n"
            f"{show(out)}Likely cause: {_FAILURE}"
        )
    check(
        out.code() != grpc.StatusCode.CANCELLED,
        f"{stream.what}: the call was cancelled ({out.details()}), not failed by the frontend",
    )
    # The failure ends one call, not the frontend's view: the next update is answered.
    after = fresh_id("view-after-fail")
    await _update(
        ctx,
        m.receive(FROM_STATE, VE_ROWS, m.State(value="fine"), after),
        f"{after}, after a failed update",
        m.upserted(VE_ROWS, after, m.row("fine")),
        "a failed update ends its own call only; the frontend must answer later updates",
    )


def _method_options(method: Any) -> Any:
    options = method.options
    if not options.HasExtension(annotations_pb2.method):
        return None
    return options.Extensions[annotations_pb2.method]


@case("view.discovery", "model", VIEW)
async def view_discovery(ctx: ModelContext) -> None:
    """The view is declared as a Views component; its methods keep source, table, query."""
    spec = await discover(ctx.channel)
    types = [c.component_type for c in spec.components if c.service_name == VIEW_MODEL]
    check(
        types == [VIEW],
        f"{VIEW_MODEL} is declared as {types}; a view is declared once, with component_type "
        f"{VIEW!r}",
    )
    files = descriptor_pb2.FileDescriptorSet.FromString(spec.proto)
    declared = {f"{f.package}.{s.name}": s for f in files.file for s in f.service}
    service = declared.get(VIEW_MODEL)
    if service is None:
        raise CaseFailed(f"Spec.proto has no service {VIEW_MODEL}, which discovery declares")
    ours = {f"{f.package}.{s.name}": s for f in ctx.model.files.file for s in f.service}
    theirs = {m.name: m for m in service.method}
    for method in ours[VIEW_MODEL].method:
        actual = theirs.get(method.name)
        check(
            actual is not None,
            f"Spec.proto: {VIEW_MODEL} has no method {method.name}; declared: "
            + ", ".join(sorted(theirs)),
        )
        expected = _method_options(method)
        expect_equal(
            f"the (akkaserverless.method) options of {VIEW_MODEL}.{method.name} in Spec.proto",
            expected,
            _method_options(actual),
            "the frontend must report each view method's options unchanged: the source "
            "(eventing.in: the entity type), the table and transform_updates of an update, "
            "the query string of a query",
        )
