"""The internal protocol's messages (`protocol/proto/larder_internal/v1/peer.proto`) and
their conversions; the one module of the sidecar that imports the generated code.

Both ends use gRPC's generic handlers with these messages' own (de)serializers, so the
typed `_pb2` stubs are all the generated code the sidecar needs.
"""

from __future__ import annotations

from typing import Any

import grpc
from larder_internal.v1 import peer_pb2

from ..invoke import InvokeError
from ..outcome import Outcome
from .membership import MemberId
from .shards import ShardMap

SERVICE = "larder.internal.v1.Peer"
FORWARD = f"/{SERVICE}/Forward"
RELEASE = f"/{SERVICE}/Release"

ForwardRequest = peer_pb2.ForwardRequest
ForwardReply = peer_pb2.ForwardReply
ReleaseRequest = peer_pb2.ReleaseRequest
ReleaseReply = peer_pb2.ReleaseReply
Redirect = peer_pb2.Redirect
MapView = peer_pb2.MapView

RELEASED = peer_pb2.ReleaseReply.RELEASED
STILL_OWNER = peer_pb2.ReleaseReply.STILL_OWNER

# Keepalive pings on busy connections notice a peer that went silent mid-call (its pod
# vanished without closing the connection) within seconds instead of the OS's TCP
# timeout; the server allows them.
CHANNEL_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.keepalive_time_ms", 5_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 0),
    ("grpc.http2.max_pings_without_data", 0),
    # A peer that (re)started is reached within CONNECT_WAIT (peers.py): the channel
    # tries to connect again at least twice a second.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 400),
]
SERVER_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 4_000),
    ("grpc.http2.max_ping_strikes", 0),
]


def view_of(me: MemberId, shard_map: ShardMap) -> Any:
    """This member's `MapView`, sent with every call."""
    membership = shard_map.membership
    return MapView(
        sender=me,
        version=membership.version,
        fingerprint=membership.fingerprint,
        shard_count=shard_map.shard_count,
    )


def outcome_message(outcome: Outcome) -> Any:
    message = peer_pb2.Outcome(side_effects=list(outcome.side_effects))
    if outcome.kind is not None:
        getattr(message, outcome.kind).CopyFrom(outcome.message)
    return message


def outcome_of(message: Any) -> Outcome:
    kind = message.WhichOneof("action")
    return Outcome(kind, getattr(message, kind) if kind else None, list(message.side_effects))


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
