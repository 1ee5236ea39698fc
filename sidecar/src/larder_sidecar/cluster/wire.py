"""The internal protocol's messages (`protocol/proto/larder_internal/v1/peer.proto`) and
their conversions; the one module of the sidecar that imports the generated code. How
they travel: `frames.py`.
"""

from __future__ import annotations

from typing import Any

import grpc
from larder_internal.v1 import peer_pb2

from ..invoke import InvokeError, MetadataPairs
from ..outcome import Outcome, protocol_metadata
from .membership import MemberId
from .shards import ShardMap

ForwardRequest = peer_pb2.ForwardRequest
ForwardReply = peer_pb2.ForwardReply
ReleaseRequest = peer_pb2.ReleaseRequest
ReleaseReply = peer_pb2.ReleaseReply
Redirect = peer_pb2.Redirect
MapView = peer_pb2.MapView
Status = peer_pb2.Status
HttpRequest = peer_pb2.HttpRequest
HttpAnswer = peer_pb2.HttpAnswer

RELEASED = peer_pb2.ReleaseReply.RELEASED
STILL_OWNER = peer_pb2.ReleaseReply.STILL_OWNER

_views: dict[MemberId, tuple[ShardMap, Any]] = {}


def view_of(me: MemberId, shard_map: ShardMap) -> Any:
    """This member's `MapView` of `shard_map`: one object per map (the fingerprint is a
    hash over every member; the transport sends a view again only when the object
    differs). Treat it as read-only."""
    last = _views.get(me)
    if last is not None and last[0] is shard_map:
        return last[1]
    membership = shard_map.membership
    view = MapView(
        sender=me,
        version=membership.version,
        fingerprint=membership.fingerprint,
        shard_count=shard_map.shard_count,
    )
    _views[me] = (shard_map, view)
    return view


def view_key(view: Any) -> tuple[Any, ...]:
    """What makes two `MapView`s the same view."""
    return (view.sender, view.version, view.fingerprint, view.shard_count)


def forward_request(
    *,
    hops: int,
    entity_type: str,
    entity_id: str,
    method: str,
    payload: bytes,
    metadata: MetadataPairs,
    map_version: int,
) -> Any:
    """A `ForwardRequest`; its `metadata` only when there is some (building an empty
    `Metadata` and copying it in costs more per forward than the rest of the request)."""
    request = ForwardRequest(
        hops=hops,
        entity_type=entity_type,
        entity_id=entity_id,
        method=method,
        payload=payload,
        map_version=map_version,
    )
    if metadata:
        request.metadata.CopyFrom(protocol_metadata(metadata))
    return request


def relay_request(
    *,
    hops: int,
    entity_type: str,
    entity_id: str,
    http: Any,
    map_version: int,
) -> Any:
    """A `ForwardRequest` relaying the HTTP request `http` (an `HttpRequest`); `method`
    stays empty, so a receiver that does not know relaying refuses it unrun."""
    return ForwardRequest(
        hops=hops,
        entity_type=entity_type,
        entity_id=entity_id,
        http=http,
        map_version=map_version,
    )


def http_request(
    method: str, path: str, query: str | None, headers: MetadataPairs, body: bytes
) -> Any:
    return HttpRequest(
        method=method,
        path=path,
        query=query or "",
        headers=[peer_pb2.Header(name=name, value=value) for name, value in headers],
        body=body,
    )


def set_headers(http: Any, headers: MetadataPairs) -> None:
    """Replace the header fields of the `HttpRequest` `http`."""
    del http.headers[:]
    http.headers.extend(peer_pb2.Header(name=name, value=value) for name, value in headers)


def http_answer(
    status: int, content_type: str, headers: MetadataPairs, body: bytes
) -> Any:
    return HttpAnswer(
        status=status,
        content_type=content_type,
        headers=[peer_pb2.Header(name=name, value=value) for name, value in headers],
        body=body,
    )


def outcome_message(outcome: Outcome) -> Any:
    message = peer_pb2.Outcome(side_effects=list(outcome.side_effects))
    if outcome.kind is not None:
        getattr(message, outcome.kind).CopyFrom(outcome.message)
    return message


def outcome_of(message: Any) -> Outcome:
    kind = message.WhichOneof("action")
    # The repeated field itself, not a copy: the outcome only reads it.
    return Outcome(kind, getattr(message, kind) if kind else None, message.side_effects)


def error_message(error: InvokeError) -> Any:
    return peer_pb2.Status(code=error.code.value[0], message=error.message)


_CODES = {code.value[0]: code for code in grpc.StatusCode}


def error_of(status: Any) -> InvokeError:
    code = _CODES.get(status.code, grpc.StatusCode.UNKNOWN)
    return InvokeError(code, status.message)


def redirect_of(shard_map: ShardMap, owner: MemberId | None) -> Any:
    member = None if owner is None else shard_map.member(owner)
    return Redirect(
        owner=owner or "",
        address=member.address if member is not None else "",
        version=shard_map.version,
        fingerprint=shard_map.membership.fingerprint,
    )
