"""What a view component declares, read from its methods' `(akkaserverless.method)` options
at discovery: update methods (source, table, `transform_updates`) and query methods, every
query parsed and checked against the view's messages before the sidecar becomes ready.

Imports nothing of the sidecar above the query language: `model.py` calls it while it
builds the user function's model.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import Descriptor, ServiceDescriptor

from ..protocol import annotations_pb2
from .query import FilterColumn, QueryError, ValidatedQuery, parse_query, validate_query

TYPE_URL_PREFIX = "type.googleapis.com/"
_METHOD_OPTION: Any = annotations_pb2.method  # untyped generated extension


class SourceKind(enum.Enum):
    """Where an update method's messages come from (`eventing.in`)."""

    VALUE_ENTITY = "value_entity"
    EVENT_SOURCED_ENTITY = "event_sourced_entity"
    TOPIC = "topic"
    """A Kafka topic's CloudEvents; the row key is the record's `ce-subject`."""


@dataclass(frozen=True)
class ViewUpdate:
    """An update method: the changes of one entity type become rows of one table."""

    service: str
    name: str
    source: SourceKind
    entity_type: str
    """The source's entity type, as `eventing.in` names it; the topic for topic sources."""
    table: str
    transform: bool
    """`transform_updates`: the user function's `Views/Handle` makes the row."""
    input: Descriptor
    output: Descriptor
    consumer_group: str = ""
    """Topic sources: the Kafka consumer group (`eventing.in.consumer_group`, else the
    view's service name)."""

    @property
    def input_type_url(self) -> str:
        return TYPE_URL_PREFIX + self.input.full_name

    @property
    def path(self) -> str:
        return f"/{self.service}/{self.name}"


@dataclass(frozen=True)
class ViewQuery:
    """A query method, its query checked against the table's row type."""

    service: str
    name: str
    checked: ValidatedQuery


@dataclass(frozen=True)
class ViewSpec:
    """One view component."""

    service: str
    tables: Mapping[str, Descriptor]
    """Table name to row type (the output type of the table's update methods)."""
    updates: tuple[ViewUpdate, ...]
    queries: Mapping[str, ViewQuery] = field(default_factory=dict)
    """By method name."""

    def filter_columns(self, table: str) -> tuple[FilterColumn, ...]:
        """Every column any query of `table` filters on, each path once, in a stable
        order: what storage extracts at write time and indexes."""
        seen: dict[tuple[str, ...], FilterColumn] = {}
        for name in sorted(self.queries):
            checked = self.queries[name].checked
            if checked.query.table.name == table:
                for column in checked.filter_columns:
                    seen.setdefault(column.path, column)
        return tuple(seen[path] for path in sorted(seen))


def method_options(file_set: descriptor_pb2.FileDescriptorSet) -> dict[str, Any]:
    """`(akkaserverless.method)` options by gRPC path `/package.Service/Method`."""
    out: dict[str, Any] = {}
    for f in file_set.file:
        prefix = f"{f.package}." if f.package else ""
        for service in f.service:
            for m in service.method:
                if m.options.HasExtension(_METHOD_OPTION):
                    out[f"/{prefix}{service.name}/{m.name}"] = m.options.Extensions[
                        _METHOD_OPTION
                    ]
    return out


def _updates(
    service: ServiceDescriptor, options: Mapping[str, Any], problems: list[str]
) -> Iterator[ViewUpdate]:
    for md in service.methods:
        opts = options.get(f"/{service.full_name}/{md.name}")
        if opts is None or not opts.HasField("view") or not opts.view.HasField("update"):
            continue
        where = f"{service.full_name}.{md.name}"
        update = opts.view.update
        if not update.table:
            problems.append(f"{where}: view.update names no table")
            continue
        if md.client_streaming or md.server_streaming:
            problems.append(f"{where}: a view update method cannot be streamed")
            continue
        source: Any = getattr(opts.eventing, "in") if opts.HasField("eventing") else None
        which = source.WhichOneof("source") if source is not None else None
        if which not in ("value_entity", "event_sourced_entity", "topic") or not getattr(
            source, which
        ):
            problems.append(
                f"{where}: a view update method needs eventing.in naming its source, "
                '{ value_entity: "<entity type>" }, { event_sourced_entity: "..." } '
                'or { topic: "..." }'
            )
            continue
        kind = SourceKind(which)
        if not update.transform_updates and kind is SourceKind.TOPIC:
            if md.input_type.full_name != md.output_type.full_name:
                problems.append(
                    f"{where}: without transform_updates the topic's message is stored as "
                    f"the row, so the input {md.input_type.full_name} and the output (row "
                    f"type) {md.output_type.full_name} must be the same message; or set "
                    "transform_updates: true and make the row in an update handler"
                )
                continue
        elif not update.transform_updates:
            if kind is SourceKind.EVENT_SOURCED_ENTITY:
                problems.append(
                    f"{where}: an event-sourced source needs transform_updates: true (an "
                    "event is not a row; the user function's update handler makes one)"
                )
                continue
            if md.input_type.full_name != md.output_type.full_name:
                problems.append(
                    f"{where}: without transform_updates the entity's state is stored as the "
                    f"row, so the input {md.input_type.full_name} and the output (row type) "
                    f"{md.output_type.full_name} must be the same message"
                )
                continue
        yield ViewUpdate(
            service=service.full_name,
            name=md.name,
            source=kind,
            entity_type=getattr(source, which),
            table=update.table,
            transform=update.transform_updates,
            input=md.input_type,
            output=md.output_type,
            consumer_group=(source.consumer_group or service.full_name)
            if kind is SourceKind.TOPIC
            else "",
        )


def build_view(
    service: ServiceDescriptor, options: Mapping[str, Any], problems: list[str]
) -> ViewSpec | None:
    """Read one view component; append every problem to `problems` (None if any)."""
    before = len(problems)
    updates = tuple(_updates(service, options, problems))
    tables: dict[str, Descriptor] = {}
    writers: dict[tuple[str, SourceKind, str, str], str] = {}
    groups: dict[str, ViewUpdate] = {}
    for u in updates:
        other = writers.setdefault((u.table, u.source, u.entity_type, u.input.full_name), u.name)
        if other != u.name:
            problems.append(
                f"{u.service}.{u.name}: {other} already writes table {u.table!r} from "
                f"{u.input.full_name} of {u.entity_type!r}; each change would be applied "
                "twice to the same row, keep one of them"
            )
        if u.source is SourceKind.TOPIC:
            # The view's progress in a topic is one offset per partition, so one group
            # reads the topic for the whole view.
            first = groups.setdefault(u.entity_type, u)
            if first.consumer_group != u.consumer_group:
                problems.append(
                    f"{u.service}.{u.name}: topic {u.entity_type!r} is read in consumer "
                    f"group {u.consumer_group!r} here and {first.consumer_group!r} by "
                    f"{first.name}; a view reads a topic in one group, give them the same "
                    "consumer_group"
                )
        row = tables.setdefault(u.table, u.output)
        if row.full_name != u.output.full_name:
            problems.append(
                f"{u.service}.{u.name}: table {u.table!r} holds {row.full_name} rows (another "
                f"update method returns it), this method returns {u.output.full_name}; every "
                "update method of a table returns its row type"
            )
    queries: dict[str, ViewQuery] = {}
    for md in service.methods:
        where = f"{service.full_name}.{md.name}"
        opts = options.get(f"/{service.full_name}/{md.name}")
        view = opts.view if opts is not None and opts.HasField("view") else None
        if view is None or not (view.HasField("update") or view.HasField("query")):
            problems.append(
                f"{where}: every method of a view is a view.update or a view.query "
                "(akkaserverless.method option)"
            )
            continue
        if not view.HasField("query"):
            continue
        if md.client_streaming:
            problems.append(f"{where}: a view query cannot take a stream of requests")
            continue
        try:
            checked = validate_query(
                parse_query(view.query.query),
                tables=tables,
                request=md.input_type,
                response=md.output_type,
                streamed=md.server_streaming,
            )
        except QueryError as e:
            problems.append(f"{where}: {e}")
            continue
        queries[md.name] = ViewQuery(service.full_name, md.name, checked)
    if not updates and len(problems) == before:
        problems.append(f"{service.full_name}: a view needs at least one view.update method")
    if len(problems) != before:
        return None
    return ViewSpec(service.full_name, tables, updates, queries)


def check_sources(
    views: Sequence[ViewSpec], entity_kinds: Mapping[str, SourceKind], problems: list[str]
) -> None:
    """Every source names an entity type this function serves, of the right kind; no two
    views read topics in one consumer group (Kafka would split the partitions between
    them, each view seeing only part of the topic)."""
    group_of: dict[str, str] = {}
    for view in views:
        for group in sorted({u.consumer_group for u in view.updates if u.consumer_group}):
            other = group_of.setdefault(group, view.service)
            if other != view.service:
                problems.append(
                    f"{view.service}: consumer group {group!r} is also {other}'s; each view "
                    "reads its topics in a consumer group of its own (eventing.in."
                    "consumer_group)"
                )
    for view in views:
        for u in view.updates:
            if u.source is SourceKind.TOPIC:
                continue  # any topic may feed a view
            kind = entity_kinds.get(u.entity_type)
            if kind is None:
                known = ", ".join(sorted(entity_kinds)) or "none"
                problems.append(
                    f"{u.service}.{u.name}: eventing.in names {u.source.value} "
                    f"{u.entity_type!r}, which no entity of this function has as its entity "
                    f"type (its entity types: {known})"
                )
            elif kind is not u.source:
                problems.append(
                    f"{u.service}.{u.name}: eventing.in names {u.source.value} "
                    f"{u.entity_type!r}, but that entity type is a "
                    f"{kind.value.replace('_', ' ')}"
                )
