"""Relaying HTTP to the owner: the lean path for an HTTP/JSON command whose entity another
sidecar owns.

On the forwarding sidecar the front reads only the entity key (from a path variable, or
the key field of the JSON body, one `json.loads`), asks the router for the owner and, if
it is a peer, sends it the request as received (`ShardedRouter.relay`: method, raw path
and query, the header fields, the body) and writes the owner's encoded answer back. No
JSON ⇄ protobuf transcoding and no dispatcher here: the owner does those once, with its
own HTTP front (`serve_relayed`), so a relayed answer is the owner's local answer, byte
for byte. The router keeps what forwarding keeps: the per-entity turn, the map version
and redirects, the hop limit, hand-off waits, UNAVAILABLE for a silent peer, the
forward span and the forwarded-commands metrics.

Whenever the key cannot be read cheaply and surely (several key fields, a key that is not
a string, a key set from the query or inside a body field, a body that is not a JSON
object...), the request takes the front's ordinary path, which forwards the transcoded
command (`PeerOwner.submit`); so does one an owner of an older release refuses.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Protocol

import grpc
from google.protobuf.descriptor import FieldDescriptor
from larder_sidecar import tracing
from larder_sidecar.cluster import wire
from larder_sidecar.cluster.sharded import RelayedHttp
from larder_sidecar.invoke import InvokeError
from larder_sidecar.model import Method

from .hop import HOP_HEADERS
from .routes import Bindings, Route
from .status import error_body, http_status

# The request's own header fields are relayed, content-type included (the owner's front
# checks it); those of this hop are not.
_NOT_RELAYED = HOP_HEADERS


class RelayRouter(Protocol):
    """The part of `ShardedRouter` the relay uses (a fake in unit tests)."""

    async def relay(self, entity_type: str, entity_id: str, http: RelayedHttp) -> Any | None:
        """The owner's `ForwardReply`, or None if this sidecar serves the entity."""
        ...


class Relayed:
    """The answer to relay: status, content type, header fields, body (the front's
    `HttpResponse` is built from it; this module cannot import the front's dispatch,
    which imports this one)."""

    __slots__ = ("body", "content_type", "headers", "status")

    def __init__(
        self, status: int, content_type: str, headers: list[tuple[str, str]], body: bytes
    ) -> None:
        self.status = status
        self.content_type = content_type
        self.headers = headers
        self.body = body


class _KeyReader:
    """Where a route's requests carry their entity key, read without transcoding."""

    __slots__ = ("body_names", "entity_type", "max_bytes", "path_field")

    def __init__(
        self,
        entity_type: str,
        path_field: tuple[str, ...] | None,
        body_names: tuple[str, str] | None,
        max_bytes: int,
    ) -> None:
        self.entity_type = entity_type
        self.path_field = path_field
        """The key's field path if a path variable sets it (the path wins over the body)."""
        self.body_names = body_names
        """(proto name, JSON name) of the key field in a whole-body JSON object."""
        self.max_bytes = max_bytes

    def read(self, bindings: Bindings, query: str | None, body: bytes) -> str | None:
        """The entity id, or None: let the front's ordinary path decide (and answer any
        mistake in the request the way it always does)."""
        entity_id: Any = None
        if self.path_field is not None:
            for field_path, text in bindings:
                if field_path == self.path_field:
                    entity_id = text
        elif self.body_names is not None and not query:
            if not body:
                return None
            try:
                document = json.loads(body)
            except (ValueError, RecursionError):
                return None
            if not isinstance(document, dict):
                return None
            name, json_name = self.body_names
            if name in document:
                if json_name != name and json_name in document:
                    return None  # both spellings: the transcoder's to refuse
                entity_id = document[name]
            else:
                entity_id = document.get(json_name)
        if not isinstance(entity_id, str) or not entity_id:
            return None
        if len(entity_id) > self.max_bytes or len(entity_id.encode()) > self.max_bytes:
            return None
        return entity_id


def _key_reader(route: Route, method: Method | None) -> _KeyReader | None:
    if method is None or method.key is None or not method.component.kind.is_entity:
        return None
    if route.streaming or len(method.key.fields) != 1:
        return None
    field = method.key.fields[0]
    if field.type != FieldDescriptor.TYPE_STRING:
        # An integer key's id is its value's text, which JSON may spell several ways.
        return None
    entity_type = method.component.entity_type
    for variable in route.template.variables:
        if variable.field_path == (field.name,):
            return _KeyReader(entity_type, variable.field_path, None, method.key.max_bytes)
    if route.body == "*":
        return _KeyReader(entity_type, None, (field.name, field.json_name), method.key.max_bytes)
    return None


class HttpRelay:
    """The forwarding side: relays a matched request if a peer owns its entity."""

    def __init__(self, router: RelayRouter, methods: Mapping[str, Method]) -> None:
        self._router = router
        self._methods = methods
        self._readers: dict[int, _KeyReader | None] = {}

    async def relay(
        self,
        route: Route,
        bindings: Bindings,
        *,
        method: str,
        path: str,
        query: str | None,
        headers: list[tuple[str, str]],
        body: bytes,
    ) -> Relayed | None:
        """The owner's answer, or None: serve the request here (this sidecar owns the
        entity, the key is not read cheaply, or the owner does not take relays)."""
        key = id(route)
        if key in self._readers:
            reader = self._readers[key]
        else:
            reader = self._readers[key] = _key_reader(
                route, self._methods.get(route.method.path)
            )
        if reader is None:
            return None
        entity_id = reader.read(bindings, query, body)
        if entity_id is None:
            return None
        relayed = [(name, value) for name, value in headers if name not in _NOT_RELAYED]
        http = (method, path, query, relayed, body)
        try:
            if not tracing.enabled():
                reply = await self._router.relay(reader.entity_type, entity_id, http)
            else:
                # The span the dispatcher would open for the command here: the forward's
                # CLIENT span goes under it, the owner's spans under that.
                model = route.method
                with tracing.span(
                    model.path,
                    tracing.SpanKind.SERVER,
                    parent=tracing.extract(relayed),
                    attributes={"rpc.service": model.service, "rpc.method": model.name},
                ):
                    reply = await self._router.relay(reader.entity_type, entity_id, http)
        except InvokeError as e:
            return _error(e.code, e.message)
        if reply is None:
            return None
        if reply.WhichOneof("result") == "http":
            answer = reply.http
            return Relayed(
                answer.status,
                answer.content_type,
                [(h.name, h.value) for h in answer.headers],
                answer.body,
            )
        error = wire.error_of(reply.error)
        if error.code is grpc.StatusCode.UNIMPLEMENTED:
            # An owner that does not take relays (an older release, or still starting).
            return None
        return _error(error.code, error.message)


def _error(code: grpc.StatusCode, message: str) -> Relayed:
    return Relayed(http_status(code), "application/json", [], error_body(code, message))
