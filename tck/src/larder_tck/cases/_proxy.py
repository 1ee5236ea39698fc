"""What the proxy cases share: the protocol's method paths and reading the interceptor's record."""

from __future__ import annotations

from typing import Any

from larder_tck.expect import check, expect_equal
from larder_tck.interceptor import Exchange
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
