"""The query path: a view's query method answered from the store.

`SELECT *` sends each row as a reply (a stream, or for a unary method the first row and
NOT_FOUND when there is none); `SELECT * AS name` sends one reply holding every row in its
repeated field `name`; a projection builds each reply from the row's columns and the
request's parameters. Rows come from the store in pages (row key order), so a streamed
query holds one page in memory; a unary `* AS name` reply is capped (`MAX_UNARY_ROWS`, and
the largest message the sidecar sends).

With tracing on, each query is a span, `view query <View service>/<Query>`, under the
call's SERVER span: the view, its table, the store's kind and the rows it answered.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from larder_protocol import message_class

from .. import tracing
from ..invoke import InvokeError
from .metrics import ViewMetrics
from .query import ColumnRef, Parameter, Projection, ValidatedQuery
from .spec import ViewQuery, ViewSpec
from .store import TableSchema, ViewStore

MAX_UNARY_ROWS = 10_000
"""Rows one unary `SELECT * AS name` reply may hold; more is refused with a clear error
(declare the method `returns (stream …)` to read them all)."""


def copy_field(source: Message, target: Message, source_field: str, target_field: str) -> None:
    """Copy one field's value (a message, a list, a scalar) from `source` to `target`;
    an unset field with presence stays unset."""
    sfield: Any = source.DESCRIPTOR.fields_by_name[source_field]
    value = getattr(source, source_field)
    if sfield.is_repeated:
        out = getattr(target, target_field)
        if sfield.type == FieldDescriptor.TYPE_MESSAGE and not _is_map(sfield):
            for item in value:
                out.add().CopyFrom(item)
        elif _is_map(sfield):
            for k, v in value.items():
                if sfield.message_type.fields_by_name["value"].type == FieldDescriptor.TYPE_MESSAGE:
                    out[k].CopyFrom(v)
                else:
                    out[k] = v
        else:
            out.extend(value)
        return
    if sfield.has_presence and not source.HasField(source_field):
        return
    if sfield.type == FieldDescriptor.TYPE_MESSAGE:
        getattr(target, target_field).CopyFrom(value)
    else:
        setattr(target, target_field, value)


def _is_map(field: FieldDescriptor) -> bool:
    return bool(
        field.is_repeated
        and field.message_type is not None
        and field.message_type.GetOptions().map_entry
    )


def reshape(row: Message, target: Descriptor) -> Message:
    """`row` as a `target` message: the same message, or the fields `target` shares with
    it by name (the validator checked their types)."""
    if row.DESCRIPTOR.full_name == target.full_name:
        return row
    out = message_class(target)()
    names = row.DESCRIPTOR.fields_by_name
    for f in target.fields:
        if f.name in names:
            copy_field(row, out, f.name, f.name)
    return out


def _walk(message: Message, path: tuple[str, ...]) -> tuple[Message, str] | None:
    """The message holding the last field of `path`, None when a message on the way is
    unset (the value is NULL: the reply field stays unset)."""
    for name in path[:-1]:
        if not message.HasField(name):
            return None
        message = getattr(message, name)
    return message, path[-1]


@dataclass(frozen=True)
class _Served:
    query: ViewQuery
    table: TableSchema

    @property
    def checked(self) -> ValidatedQuery:
        return self.query.checked


class ViewQueries:
    """Serves every query method of every view from `store`."""

    def __init__(
        self,
        views: Mapping[str, ViewSpec],
        tables: Mapping[tuple[str, str], TableSchema],
        store: ViewStore,
        metrics: ViewMetrics,
        *,
        max_reply_bytes: int = 12 * 1024 * 1024,
    ) -> None:
        self._store = store
        self._max_reply_bytes = max_reply_bytes
        self._metrics = metrics
        self._methods: dict[str, _Served] = {}
        for view in views.values():
            for q in view.queries.values():
                table = tables[(view.service, q.checked.query.table.name)]
                self._methods[f"/{view.service}/{q.name}"] = _Served(q, table)

    def serves(self, path: str) -> bool:
        return path in self._methods

    def _served(self, path: str) -> _Served:
        served = self._methods.get(path)
        if served is None:
            raise InvokeError(grpc.StatusCode.UNIMPLEMENTED, f"{path} is not a view query")
        return served

    async def _replies(self, served: _Served, request: Message) -> AsyncIterator[Message]:
        """One reply message per row (for `SELECT *` and projections)."""
        checked = served.checked
        row_class = message_class(checked.row_type)
        selection = checked.query.selection
        async for data in self._store.select(served.table, checked, request):
            row = row_class.FromString(data)
            if isinstance(selection, Projection):
                yield _project(selection, row, request, checked.response_type)
            else:
                yield reshape(row, checked.response_type)

    def _span_attributes(self, served: _Served) -> dict[str, Any]:
        return {
            "larder.view": served.query.service,
            "larder.view.query": served.query.name,
            "larder.view.table": served.table.table,
            "larder.view.store": self._store.kind,
        }

    async def unary(self, path: str, request: Message) -> bytes:
        served = self._served(path)
        started = time.perf_counter()
        outcome = "ok"
        try:
            if not tracing.enabled():
                return (await self._unary(served, request))[0]
            with tracing.span(
                f"view query {served.query.service}/{served.query.name}",
                attributes=self._span_attributes(served),
            ):
                reply, rows = await self._unary(served, request)
                tracing.annotate({"larder.view.rows": rows})
                return reply
        except InvokeError as e:
            outcome = e.code.name.lower()
            raise
        finally:
            self._observe(served, outcome, started)

    async def _unary(self, served: _Served, request: Message) -> tuple[bytes, int]:
        """The reply and how many rows it holds."""
        checked = served.checked
        if checked.result_field is None:
            replies = self._replies(served, request)
            async for reply in replies:
                await replies.aclose()  # type: ignore[attr-defined]  # an async generator
                return reply.SerializeToString(), 1
            raise InvokeError(
                grpc.StatusCode.NOT_FOUND,
                f"the view query {served.query.service}.{served.query.name} selected no row",
            )
        out = message_class(checked.response_type)()
        field = getattr(out, checked.result_field)
        target: Any = checked.response_type.fields_by_name[checked.result_field].message_type
        row_class = message_class(checked.row_type)
        count = size = 0
        async for data in self._store.select(served.table, checked, request):
            count += 1
            size += len(data) + 8  # the row, its tag and length (at most)
            if count > MAX_UNARY_ROWS or size > self._max_reply_bytes:
                what = (
                    f"more than {MAX_UNARY_ROWS} rows"
                    if count > MAX_UNARY_ROWS
                    else f"rows of more than {self._max_reply_bytes} bytes "
                    "(LARDER_MAX_MESSAGE_BYTES)"
                )
                raise InvokeError(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"the view query {served.query.service}.{served.query.name} selects "
                    f"{what}, more than one reply holds; declare it `returns (stream …)` "
                    "with SELECT * to read them all",
                )
            field.add().CopyFrom(reshape(row_class.FromString(data), target))
        return bytes(out.SerializeToString()), count

    async def stream(self, path: str, request: Message) -> AsyncIterator[bytes]:
        served = self._served(path)
        started = time.perf_counter()
        outcome = "ok"
        # Open across the yields, current never (nothing runs under it): `tracing.steps`.
        span = tracing.steps(
            f"view query {served.query.service}/{served.query.name}",
            attributes=self._span_attributes(served) if tracing.recording() else None,
        )
        rows = 0
        error: BaseException | None = None
        try:
            async for reply in self._replies(served, request):
                rows += 1
                yield reply.SerializeToString()
        except Exception as e:
            outcome, error = "error", e
            raise
        except BaseException:
            outcome = "error"
            raise
        finally:
            self._observe(served, outcome, started)
            span.annotate({"larder.view.rows": rows})
            span.end(error)

    def _observe(self, served: _Served, outcome: str, started: float) -> None:
        view, name = served.query.service, served.query.name
        self._metrics.queries.labels(view, name, outcome).inc()
        self._metrics.query_latency.labels(view, name).observe(time.perf_counter() - started)


def _project(
    projection: Projection, row: Message, request: Message, response: Descriptor
) -> Message:
    out: Any = message_class(response)()
    for item in projection.items:
        expression = item.expression
        source: Message = row if isinstance(expression, ColumnRef) else request
        assert isinstance(expression, ColumnRef | Parameter)
        found = _walk(source, expression.path)
        if found is not None:
            holder, name = found
            copy_field(holder, out, name, item.output_name)
    return out  # type: ignore[no-any-return]
