"""The model of a user function, built once from its discovery `Spec`.

The user's descriptors go into a private `DescriptorPool` so that two user functions'
files (or a user file named like one of ours) can never clash with what this
process imported.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from larder_protocol import (
    ACTION,
    EVENT_SOURCED_ENTITY,
    REPLICATED_ENTITY,
    VALUE_ENTITY,
    VIEW,
    DynamicMessageClass,
    message_class,
)

from .invoke import MetadataPairs, MethodModel
from .protocol import annotations_pb2, discovery_pb2, legacy_entity_key_pb2
from .views.spec import SourceKind, ViewSpec, build_view, check_sources, method_options

TYPE_URL_PREFIX = "type.googleapis.com/"
IDEMPOTENCY_KEY = "idempotency-key"
"""The request header (HTTP `Idempotency-Key`, gRPC metadata) of a client's idempotency
key: every front passes it to the entity, which reads it (`entities/idempotency.py`)."""
ALWAYS_FORWARDED = frozenset({IDEMPOTENCY_KEY, "traceparent", "tracestate"})
"""Request headers every component receives, whatever its `forward_headers`."""

EVENT_SOURCED = EVENT_SOURCED_ENTITY

KEY_SEPARATOR = ","
KEY_ESCAPE = "\\"
DEFAULT_MAX_ENTITY_ID_BYTES = 1024


class Kind(Enum):
    EVENT_SOURCED = EVENT_SOURCED
    VALUE = VALUE_ENTITY
    ACTION = ACTION
    VIEW = VIEW

    @property
    def is_entity(self) -> bool:
        return self in (Kind.EVENT_SOURCED, Kind.VALUE)


class SpecError(ValueError):
    """The discovered spec cannot be served; `problems` lists every reason at once."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__(
            "the user function's discovery spec cannot be served:\n  - " + "\n  - ".join(problems)
        )
        self.problems = tuple(problems)


class KeyError_(LookupError):
    """A request carries no usable entity key: the caller must fix the request."""


class EntityIdTooLong(KeyError_):
    """The entity id a request makes is longer than `LARDER_MAX_ENTITY_ID_BYTES`."""


_KEY_TYPES = {
    FieldDescriptor.TYPE_STRING,
    FieldDescriptor.TYPE_INT32,
    FieldDescriptor.TYPE_INT64,
    FieldDescriptor.TYPE_UINT32,
    FieldDescriptor.TYPE_UINT64,
    FieldDescriptor.TYPE_SINT32,
    FieldDescriptor.TYPE_SINT64,
    FieldDescriptor.TYPE_FIXED32,
    FieldDescriptor.TYPE_FIXED64,
    FieldDescriptor.TYPE_SFIXED32,
    FieldDescriptor.TYPE_SFIXED64,
    FieldDescriptor.TYPE_BOOL,
}


def _escape(value: str) -> str:
    doubled = value.replace(KEY_ESCAPE, KEY_ESCAPE * 2)
    return doubled.replace(KEY_SEPARATOR, KEY_ESCAPE + KEY_SEPARATOR)


@dataclass(frozen=True, slots=True)
class EntityKey:
    """How to read an entity id from a request (fields in field-number order)."""

    fields: tuple[FieldDescriptor, ...]
    max_bytes: int = DEFAULT_MAX_ENTITY_ID_BYTES
    """Longest id in UTF-8 bytes: ids travel into log lines, metrics, journal keys."""

    def extract(self, request: Message) -> str:
        entity_id = self._join(request)
        # Characters first: a string of more characters than bytes allowed is too long
        # whatever it encodes to, and is not encoded just to say so.
        if len(entity_id) > self.max_bytes or len(entity_id.encode()) > self.max_bytes:
            raise EntityIdTooLong(
                f"the entity id in {request.DESCRIPTOR.full_name} is longer than "
                f"{self.max_bytes} bytes ({len(entity_id.encode())}); entity ids are names, "
                "not data (the limit is the sidecar's LARDER_MAX_ENTITY_ID_BYTES)"
            )
        return entity_id

    def _join(self, request: Message) -> str:
        values: list[str] = []
        for f in self.fields:
            value: Any = getattr(request, f.name)
            if f.type == FieldDescriptor.TYPE_BOOL:
                text = "true" if value else "false"
            else:
                text = str(value)
            if f.type == FieldDescriptor.TYPE_STRING and text == "":
                raise KeyError_(
                    f"the request {request.DESCRIPTOR.full_name} has an empty entity key field "
                    f"'{f.name}'; set it to the id of the entity to address"
                )
            values.append(text)
        if len(values) == 1:
            return values[0]
        # Several keys: escape then join, so ("a,b", "c") and ("a", "b,c") differ.
        return KEY_SEPARATOR.join(_escape(v) for v in values)


@dataclass(frozen=True, slots=True)
class Component:
    service: str
    kind: Kind
    entity_type: str
    """For entities: the type name persistence ids use (the service name when unset)."""
    passivation_timeout: float | None
    """Seconds, as announced by the user function; None means the sidecar default."""
    forward_headers: frozenset[str]
    """Lower-cased names of the client's request headers the component receives as
    metadata; other request headers stay in the sidecar."""

    def forwarded(self, headers: MetadataPairs) -> MetadataPairs:
        """The request headers this component asked for (names as lower-cased by the
        fronts), and those that always travel, asked for or not: the idempotency key and
        the W3C trace context (so the function and the sidecar's spans continue the
        client's trace)."""
        if not self.forward_headers:
            return tuple((k, v) for k, v in headers if k in ALWAYS_FORWARDED)
        return [(k, v) for k, v in headers if k in self.forward_headers or k in ALWAYS_FORWARDED]


@dataclass(frozen=True, slots=True)
class Method:
    """A method plus what the sidecar needs at run time to call it."""

    model: MethodModel
    component: Component
    input_class: DynamicMessageClass
    output_class: DynamicMessageClass
    key: EntityKey | None
    input_type_url: str

    def parse(self, payload: bytes) -> Message:
        return self.input_class.FromString(payload)


@dataclass(frozen=True, slots=True)
class ServiceInfo:
    service_name: str
    service_version: str
    support_library: str
    protocol_version: tuple[int, int]


@dataclass(frozen=True)
class UserFunctionModel:
    pool: descriptor_pool.DescriptorPool
    file_set: descriptor_pb2.FileDescriptorSet
    components: Mapping[str, Component]
    methods: Mapping[str, Method]
    """By gRPC path, `/package.Service/Method`."""
    info: ServiceInfo
    views: Mapping[str, ViewSpec] = field(default_factory=dict)
    """View components by service name; their query methods are in `methods`, their
    update methods are not (the sidecar calls those, never a client)."""

    def method(self, service: str, name: str) -> Method | None:
        return self.methods.get(f"/{service}/{name}")

    @property
    def method_models(self) -> list[MethodModel]:
        return [m.model for m in self.methods.values()]

    @property
    def service_names(self) -> list[str]:
        return list(self.components)


def _dependency_order(
    files: Iterable[descriptor_pb2.FileDescriptorProto],
) -> list[descriptor_pb2.FileDescriptorProto]:
    by_name = {f.name: f for f in files}
    ordered: list[descriptor_pb2.FileDescriptorProto] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        if name in seen or name not in by_name:
            return
        seen.add(name)
        for dep in by_name[name].dependency:
            visit(dep)
        ordered.append(by_name[name])

    for name in by_name:
        visit(name)
    return ordered


def _key_fields(
    message: Descriptor, protos: Mapping[str, descriptor_pb2.DescriptorProto]
) -> list[FieldDescriptor]:
    proto = protos.get(message.full_name)
    if proto is None:
        return []
    marked: set[str] = set()
    for f in proto.field:
        opts = f.options
        ext: Any = opts.Extensions
        if ext[annotations_pb2.field].entity_key or ext[legacy_entity_key_pb2.legacy_entity_key]:
            marked.add(f.name)
    return sorted((f for f in message.fields if f.name in marked), key=lambda f: f.number)


def _message_protos(
    files: Iterable[descriptor_pb2.FileDescriptorProto],
) -> dict[str, descriptor_pb2.DescriptorProto]:
    out: dict[str, descriptor_pb2.DescriptorProto] = {}

    def walk(prefix: str, messages: Iterable[descriptor_pb2.DescriptorProto]) -> None:
        for m in messages:
            name = f"{prefix}{m.name}"
            out[name] = m
            walk(name + ".", m.nested_type)

    for f in files:
        walk(f"{f.package}." if f.package else "", f.message_type)
    return out


def build_model(
    spec: Any,
    accepted_versions: Iterable[tuple[int, int]],
    *,
    max_entity_id_bytes: int = DEFAULT_MAX_ENTITY_ID_BYTES,
) -> UserFunctionModel:
    """Validate `spec` (a discovery `Spec`) and build the model; raise SpecError listing
    every problem."""
    problems: list[str] = []
    si = spec.service_info
    version = (si.protocol_major_version, si.protocol_minor_version)
    accepted = sorted(set(accepted_versions))
    if version not in accepted:
        problems.append(
            f"protocol version {version[0]}.{version[1]} announced by "
            f"{si.support_library_name or 'the support library'} {si.support_library_version} is "
            f"not supported; this sidecar speaks {', '.join(f'{a}.{b}' for a, b in accepted)}"
        )
    file_set = descriptor_pb2.FileDescriptorSet()
    try:
        file_set.ParseFromString(spec.proto)
    except Exception as e:
        raise SpecError([f"the descriptor set in Spec.proto cannot be decoded: {e}"]) from e
    pool = descriptor_pool.DescriptorPool()
    for file_proto in _dependency_order(file_set.file):
        try:
            pool.Add(file_proto)
        except Exception as e:
            problems.append(f"descriptor file {file_proto.name} cannot be loaded: {e}")
    protos = _message_protos(file_set.file)
    components: dict[str, Component] = {}
    methods: dict[str, Method] = {}
    views: dict[str, ViewSpec] = {}
    options = method_options(file_set)
    if not spec.components:
        problems.append("the spec declares no components")
    for c in spec.components:
        try:
            kind = Kind(c.component_type)
        except ValueError:
            if c.component_type == REPLICATED_ENTITY:
                problems.append(
                    f"{c.service_name}: component type {c.component_type} is not supported by "
                    "this sidecar yet"
                )
            else:
                problems.append(f"{c.service_name}: unknown component type {c.component_type!r}")
            continue
        try:
            service = pool.FindServiceByName(c.service_name)
        except KeyError:
            problems.append(
                f"{c.service_name}: the service is not in the spec's descriptors; the user "
                "function must include its .proto (with imports) in the descriptor set"
            )
            continue
        timeout: float | None = None
        forward_headers: Iterable[str] = ()
        entity_type = c.service_name
        if c.WhichOneof("component_settings") == "entity":
            es = c.entity
            entity_type = es.entity_type or c.service_name
            if "|" in entity_type:
                # The journal's persistence id is `<entity type>|<entity id>`; a '|' in the
                # type would make two entities' ids collide.
                problems.append(
                    f"{c.service_name}: entity type {entity_type!r} contains '|', which "
                    "entity types may not contain (it separates type and id in the journal)"
                )
                continue
            forward_headers = es.forward_headers
            if es.passivation_strategy.WhichOneof("strategy") == "timeout":
                ms = es.passivation_strategy.timeout.timeout
                timeout = ms / 1000.0 if ms > 0 else None
        elif c.WhichOneof("component_settings") == "component":
            forward_headers = c.component.forward_headers
        component = Component(
            c.service_name,
            kind,
            entity_type,
            timeout,
            frozenset(h.lower() for h in forward_headers),
        )
        components[c.service_name] = component
        view: ViewSpec | None = None
        if kind is Kind.VIEW:
            view = build_view(service, options, problems)
            if view is None:
                continue
            views[c.service_name] = view
        for md in service.methods:
            if view is not None and md.name not in view.queries:
                continue  # an update method: the sidecar calls it, clients do not
            key: EntityKey | None = None
            if kind.is_entity:
                fields = _key_fields(md.input_type, protos)
                bad = [f.name for f in fields if f.type not in _KEY_TYPES or f.is_repeated]
                if not fields:
                    problems.append(
                        f"{c.service_name}.{md.name}: its input {md.input_type.full_name} has no "
                        "field marked [(akkaserverless.field).entity_key = true]"
                    )
                    continue
                if bad:
                    problems.append(
                        f"{c.service_name}.{md.name}: entity key field(s) {', '.join(bad)} must be "
                        "singular strings, integers or booleans"
                    )
                    continue
                if md.client_streaming or md.server_streaming:
                    problems.append(
                        f"{c.service_name}.{md.name}: streamed methods are only supported "
                        "on actions"
                    )
                    continue
                key = EntityKey(tuple(fields), max_entity_id_bytes)
            model = MethodModel(
                service=c.service_name,
                name=md.name,
                component_type=c.component_type,
                descriptor=md,
                input=md.input_type,
                output=md.output_type,
                client_streaming=md.client_streaming,
                server_streaming=md.server_streaming,
            )
            methods[model.path] = Method(
                model=model,
                component=component,
                input_class=message_class(md.input_type),
                output_class=message_class(md.output_type),
                key=key,
                input_type_url=TYPE_URL_PREFIX + md.input_type.full_name,
            )
    check_sources(
        list(views.values()),
        {
            c.entity_type: SourceKind.VALUE_ENTITY
            if c.kind is Kind.VALUE
            else SourceKind.EVENT_SOURCED_ENTITY
            for c in components.values()
            if c.kind.is_entity
        },
        problems,
    )
    if problems:
        raise SpecError(problems)
    return UserFunctionModel(
        pool=pool,
        file_set=file_set,
        components=components,
        methods=methods,
        info=ServiceInfo(
            service_name=si.service_name,
            service_version=si.service_version,
            support_library=f"{si.support_library_name} {si.support_library_version}".strip(),
            protocol_version=version,
        ),
        views=views,
    )


def proxy_info(version: tuple[int, int], proxy_version: str) -> Any:
    """The `ProxyInfo` sent with Discover (a non-zero version: 0.0 is a version probe)."""
    return discovery_pb2.ProxyInfo(
        protocol_major_version=version[0],
        protocol_minor_version=version[1],
        proxy_name="larder-sidecar",
        proxy_version=proxy_version,
        supported_entity_types=[EVENT_SOURCED, VALUE_ENTITY, ACTION, VIEW],
        dev_mode=False,
    )
