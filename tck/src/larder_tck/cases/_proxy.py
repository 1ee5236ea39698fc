"""What the proxy cases share: the protocol's method paths and reading the interceptor's record."""

from __future__ import annotations

from typing import Any

from larder_tck import context as c
from larder_tck import protocol as p
from larder_tck.expect import check, expect_equal
from larder_tck.interceptor import Exchange
from larder_tck.model import ES_MODEL, ES_PKG, pack
from larder_tck.proxy_env import ProxyContext

ES_HANDLE = "/akkaserverless.component.eventsourcedentity.EventSourcedEntities/Handle"
VE_HANDLE = "/akkaserverless.component.valueentity.ValueEntities/Handle"
_ACTIONS = "/akkaserverless.component.action.Actions/"
ACTION_UNARY = _ACTIONS + "HandleUnary"
ACTION_STREAMED_IN = _ACTIONS + "HandleStreamedIn"
ACTION_STREAMED = _ACTIONS + "HandleStreamed"


def streams_of(ctx: ProxyContext, method: str, service: str, entity_id: str) -> list[Exchange]:
    return [
        x
        for x in ctx.interceptor.streams(method)
        if x.requests
        and x.requests[0].init.service_name == service
        and x.requests[0].init.entity_id == entity_id
    ]


def without_metadata(message: Any) -> Any:
    """Commands carry the client's headers as metadata; those are the transport's business."""
    copy = type(message)()
    copy.CopyFrom(message)
    descriptor = copy.DESCRIPTOR
    if "metadata" in descriptor.fields_by_name:  # an ActionCommand
        copy.ClearField("metadata")
    elif "message" in descriptor.oneofs_by_name and copy.WhichOneof("message") == "command":
        copy.command.ClearField("metadata")
    return copy


def expect_traffic(what: str, expected: list[Any], actual: list[Any], hint: str = "") -> None:
    check(
        len(actual) == len(expected),
        f"{what}: the interceptor recorded {len(actual)} messages, expected {len(expected)}:\n"
        + "\n".join(str(m) for m in actual),
    )
    for i, (want, got) in enumerate(zip(expected, actual, strict=True), start=1):
        expect_equal(f"{what}, message {i}", want, without_metadata(got), hint)


def es_messages(ctx: ProxyContext) -> tuple[Any, Any, Any, Any]:
    """The event-sourced model's Request, RequestAction, Response and Persisted classes."""
    m = ctx.model
    return (
        m.message(f"{ES_PKG}.Request"),
        m.message(f"{ES_PKG}.RequestAction"),
        m.message(f"{ES_PKG}.Response"),
        m.message(f"{ES_PKG}.Persisted"),
    )


def reactivation_of_abcdef(ctx: ProxyContext, entity: str) -> list[Any]:
    """What the sidecar sends to re-activate `entity` after it emitted A..E, then F.

    The snapshot taken at event 5 (the model snapshots every 5 events), the event after it, then the
    command that woke the entity up: Process with an empty request.
    """
    request, _, _, persisted = es_messages(ctx)
    init = p.es.EventSourcedInit(service_name=ES_MODEL, entity_id=entity)
    init.snapshot.snapshot_sequence = 5
    init.snapshot.snapshot.CopyFrom(pack(persisted(value="ABCDE")))
    return [
        p.es.EventSourcedStreamIn(init=init),
        p.es.EventSourcedStreamIn(
            event=p.es.EventSourcedEvent(sequence=6, payload=pack(persisted(value="F")))
        ),
        p.es.EventSourcedStreamIn(command=c.command(entity, 1, "Process", request(id=entity))),
    ]
