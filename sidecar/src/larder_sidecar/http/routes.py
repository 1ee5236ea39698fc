"""The route table: every HTTP binding of every method, compiled once at start.

Bindings come from each method's `google.api.http` rule (and its
`additional_bindings`) plus a generic `POST /<package.Service>/<Method>` per method.
Paths without variables are found with one dict lookup; templated ones are bucketed
by segment count and tried most-specific first.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from larder_sidecar.invoke import MethodModel

from .path_template import PathTemplate, TemplateError, parse_template

ANY_METHOD = "*"
"""A `custom` rule of kind `*` binds every HTTP method."""

Bindings = list[tuple[tuple[str, ...], str]]


class HttpRuleError(ValueError):
    """The user's `google.api.http` options are invalid; every problem is listed. Fix the proto."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__(
            "invalid google.api.http options:\n" + "\n".join(f"  - {p}" for p in problems)
        )
        self.problems = tuple(problems)


@dataclass(frozen=True, slots=True)
class Route:
    http_method: str
    template: PathTemplate
    method: MethodModel
    body: str
    """`""` (no body), `"*"` (the whole request) or the name of one request field."""
    response_body: str
    """`""` (the whole reply) or the name of one reply field."""
    generic: bool = False
    """True for the `POST /<package.Service>/<Method>` route every method gets."""

    @property
    def streaming(self) -> bool:
        return self.method.client_streaming or self.method.server_streaming


class RouteNotFound(LookupError):
    def __init__(self, path: str) -> None:
        super().__init__(f"no method is bound to path {path}")
        self.path = path


class MethodNotAllowed(LookupError):
    def __init__(self, http_method: str, path: str, allowed: Sequence[str]) -> None:
        super().__init__(
            f"{http_method} is not allowed on {path}; allowed: {', '.join(allowed)}"
        )
        self.allowed = tuple(allowed)


@dataclass(slots=True)
class _MethodRoutes:
    """The routes for one HTTP method."""

    exact: dict[str, Route] = field(default_factory=dict)
    by_length: dict[int, list[Route]] = field(default_factory=dict)
    tails: list[Route] = field(default_factory=list)


class RouteTable:
    def __init__(self, routes: Iterable[Route]) -> None:
        self.routes = tuple(routes)
        self._by_method: dict[str, _MethodRoutes] = {}
        for route in self.routes:
            table = self._by_method.setdefault(route.http_method, _MethodRoutes())
            template = route.template
            if template.is_literal:
                table.exact.setdefault(template.source, route)
            elif template.has_tail:
                table.tails.append(route)
            else:
                table.by_length.setdefault(template.fixed_length, []).append(route)
        for table in self._by_method.values():
            table.tails.sort(key=lambda r: r.template.specificity)
            for bucket in table.by_length.values():
                bucket.sort(key=lambda r: r.template.specificity)

    def match(self, http_method: str, path: str) -> tuple[Route, Bindings]:
        """Find the route for a request; raise RouteNotFound or MethodNotAllowed."""
        found = self._match_method(http_method, path)
        if found is None and http_method != ANY_METHOD:
            found = self._match_method(ANY_METHOD, path)
        if found is not None:
            return found
        allowed = [
            name
            for name in sorted(self._by_method)
            if name not in (http_method, ANY_METHOD) and self._match_method(name, path)
        ]
        if allowed:
            raise MethodNotAllowed(http_method, path, allowed)
        raise RouteNotFound(path)

    def _match_method(self, http_method: str, path: str) -> tuple[Route, Bindings] | None:
        table = self._by_method.get(http_method)
        if table is None:
            return None
        route = table.exact.get(path)
        if route is not None:
            return route, []
        segments = path[1:].split("/")
        for route in table.by_length.get(len(segments), ()):
            bindings = route.template.match(segments)
            if bindings is not None:
                return route, bindings
        for route in table.tails:
            bindings = route.template.match(segments)
            if bindings is not None:
                return route, bindings
        return None


def http_rule(method: MethodModel) -> http_pb2.HttpRule | None:
    """The method's `google.api.http` option, or None.

    The descriptors come from a private pool, where the extension is not the one
    registered by `annotations_pb2`; re-parsing the serialized options into the
    default pool's `MethodOptions` makes it readable.
    """
    raw = method.descriptor.GetOptions().SerializeToString()
    if not raw:
        return None
    options = descriptor_pb2.MethodOptions.FromString(raw)
    if not options.HasExtension(annotations_pb2.http):
        return None
    rule: http_pb2.HttpRule = options.Extensions[annotations_pb2.http]
    return rule


def build_route_table(methods: Sequence[MethodModel]) -> RouteTable:
    """Compile every method's bindings; raise HttpRuleError listing every invalid one."""
    routes: list[Route] = []
    problems: list[str] = []
    for method in methods:
        routes.append(
            Route(
                http_method="POST",
                template=parse_template(method.path),
                method=method,
                body="*",
                response_body="",
                generic=True,
            )
        )
        rule = http_rule(method)
        if rule is None:
            continue
        for binding in (rule, *rule.additional_bindings):
            route = _route_for(method, binding, problems)
            if route is not None:
                routes.append(route)
    unique: list[Route] = []
    seen: dict[tuple[str, str], Route] = {}
    for route in routes:
        key = (route.http_method, route.template.source)
        other = seen.setdefault(key, route)
        if other is route:
            unique.append(route)
        elif other.method.path != route.method.path:
            problems.append(
                f"{route.http_method} {route.template.source} is bound by both "
                f"{other.method.path} and {route.method.path}"
            )
    if problems:
        raise HttpRuleError(problems)
    return RouteTable(unique)


def _route_for(
    method: MethodModel, rule: http_pb2.HttpRule, problems: list[str]
) -> Route | None:
    where = f"{method.path}"
    pattern = rule.WhichOneof("pattern")
    if pattern is None:
        problems.append(f"{where}: a binding has no HTTP method and path")
        return None
    if pattern == "custom":
        http_method, path = rule.custom.kind.upper(), rule.custom.path
    else:
        http_method, path = pattern.upper(), getattr(rule, pattern)
    if not http_method:
        problems.append(f"{where}: custom binding {path!r} has no kind")
        return None
    try:
        template = parse_template(path)
    except TemplateError as e:
        problems.append(f"{where}: {e}")
        return None
    before = len(problems)
    for variable in template.variables:
        leaf = _resolve(method.input, variable.field_path)
        if leaf is None:
            problems.append(
                f"{where}: path {path!r} binds {'.'.join(variable.field_path)!r}, "
                f"which is not a field of {method.input.full_name}"
            )
        elif leaf.is_repeated or _is_plain_message(leaf):
            problems.append(
                f"{where}: path {path!r} binds {'.'.join(variable.field_path)!r}, "
                "which is not a single scalar field"
            )
    if rule.body not in ("", "*") and method.input.fields_by_name.get(rule.body) is None:
        problems.append(
            f"{where}: body {rule.body!r} is not a field of {method.input.full_name}"
        )
    if rule.response_body and method.output.fields_by_name.get(rule.response_body) is None:
        problems.append(
            f"{where}: response_body {rule.response_body!r} is not a field of "
            f"{method.output.full_name}"
        )
    if any(b.additional_bindings for b in rule.additional_bindings):
        problems.append(f"{where}: additional_bindings cannot nest")
    if len(problems) != before:
        return None
    return Route(
        http_method=http_method,
        template=template,
        method=method,
        body=rule.body,
        response_body=rule.response_body,
    )


WRAPPER_TYPES = frozenset(
    f"google.protobuf.{name}"
    for name in (
        "DoubleValue",
        "FloatValue",
        "Int64Value",
        "UInt64Value",
        "Int32Value",
        "UInt32Value",
        "BoolValue",
        "StringValue",
        "BytesValue",
    )
)
TEXT_MESSAGE_TYPES = frozenset(
    {"google.protobuf.Timestamp", "google.protobuf.Duration", "google.protobuf.FieldMask"}
)
"""Message types whose JSON form is a string, so a path or query value can set them."""


def _is_plain_message(leaf: FieldDescriptor) -> bool:
    if leaf.message_type is None:
        return False
    name = leaf.message_type.full_name
    return name not in WRAPPER_TYPES and name not in TEXT_MESSAGE_TYPES


def _resolve(message: Descriptor, field_path: Sequence[str]) -> FieldDescriptor | None:
    current: Descriptor | None = message
    leaf: FieldDescriptor | None = None
    for name in field_path:
        if current is None:
            return None
        leaf = current.fields_by_name.get(name)
        if leaf is None:
            return None
        current = leaf.message_type
    return leaf
