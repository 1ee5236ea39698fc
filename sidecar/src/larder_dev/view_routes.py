"""The view routes `larder dev` prints: each view query's HTTP routes and gRPC method, with
an example `curl` that works as printed.

The sidecar answers view queries itself, over gRPC and HTTP; a view's update methods are
fed by the sidecar and not served to clients, so they get no route and no example. Both
come from the services listed through the sidecar's gRPC reflection, whose descriptors
keep the `(akkaserverless.method).view` and `google.api.http` options.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

# Imported for their side effect: parsing a reflected descriptor resolves these options
# only for extensions registered in the default pool.
from akkaserverless import annotations_pb2
from google.api import annotations_pb2 as http_annotations_pb2
from google.protobuf import descriptor_pb2

if TYPE_CHECKING:
    # Only a type here: examples.py imports this module for view_method_kind.
    from larder_dev.examples import ReflectedService

_STRING = descriptor_pb2.FieldDescriptorProto.TYPE_STRING
_BOOL = descriptor_pb2.FieldDescriptorProto.TYPE_BOOL
_MESSAGE = descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE
_VERBS = ("get", "put", "post", "delete", "patch")
# `{field}` or `{field=pattern}` in a path template.
_VARIABLE = re.compile(r"\{([^}=]+)(?:=[^}]*)?\}")
# A `:name` parameter of a view query (nested ones, `:a.b`, by their first name).
_PARAMETER = re.compile(r"(?<![\w:]):([A-Za-z_]\w*)")
_URL_PATH = re.compile(r"localhost:\d+(/[^\s'\"?]*)")


@dataclass(frozen=True)
class HttpRoute:
    verb: str
    """`GET`, `POST`, ... (`custom` rules by their own kind)."""
    path: str
    """The path template, `/product-carts/{product_id}`."""
    body: str = ""
    """The rule's `body`: `*`, a field name, or empty for none."""


@dataclass(frozen=True)
class ViewQuery:
    """One query method of a view, and how to call it."""

    service: str
    """`package.Service` of the view."""
    method: str
    query: str
    streamed: bool
    routes: tuple[HttpRoute, ...]
    """Its `google.api.http` bindings, then the generic `POST /<service>/<method>`."""
    example: str
    """A `curl` that calls it as printed."""

    @property
    def grpc_method(self) -> str:
        return f"{self.service}/{self.method}"


def view_method_kind(method: descriptor_pb2.MethodDescriptorProto) -> str | None:
    """`query`, `update` for a view's methods, None for any other method."""
    # The stubs type extension handles generically, which the generated protocol
    # modules do not give mypy.
    options_message: Any = method.options
    if not options_message.HasExtension(annotations_pb2.method):
        return None
    ext = options_message.Extensions
    options = ext[annotations_pb2.method]
    if not options.HasField("view"):
        return None
    kind = options.view.WhichOneof("update_or_query")
    return str(kind) if kind else None


def _query_text(method: descriptor_pb2.MethodDescriptorProto) -> str:
    ext: Any = method.options.Extensions
    return str(ext[annotations_pb2.method].view.query.query)


def http_routes(method: descriptor_pb2.MethodDescriptorProto) -> list[HttpRoute]:
    """The method's `google.api.http` bindings, the additional ones after the first."""
    options_message: Any = method.options
    if not options_message.HasExtension(http_annotations_pb2.http):
        return []
    ext = options_message.Extensions
    rule = ext[http_annotations_pb2.http]
    routes = []
    for binding in [rule, *rule.additional_bindings]:
        pattern = binding.WhichOneof("pattern")
        if pattern in _VERBS:
            routes.append(HttpRoute(pattern.upper(), getattr(binding, pattern), binding.body))
        elif pattern == "custom":
            routes.append(HttpRoute(binding.custom.kind, binding.custom.path, binding.body))
    return routes


def _example_value(kind: int | None) -> object:
    if kind == _BOOL:
        return True
    if kind is None or kind == _STRING:
        return "example-1"
    return 1  # any number type parses 1, 64-bit ones in JSON too


def _as_text(kind: int | None) -> str:
    """The example value as a path segment or query-string value."""
    value = _example_value(kind)
    return quote(value) if isinstance(value, str) else json.dumps(value)


def _example_curl(
    port: int,
    service: str,
    method: str,
    routes: Sequence[HttpRoute],
    *,
    parameters: dict[str, int],
    field_types: dict[str, int],
) -> str:
    """A request carrying an example value for every parameter of the query (and every
    variable of the path it goes to)."""
    get = next((r for r in routes if r.verb == "GET"), None)
    if get is not None:
        in_path = set(_VARIABLE.findall(get.path))
        path = _VARIABLE.sub(lambda m: _as_text(field_types.get(m.group(1))), get.path)
        rest = [(name, kind) for name, kind in parameters.items() if name not in in_path]
        if rest:
            query = "&".join(f"{name}={_as_text(kind)}" for name, kind in rest)
            return f"curl 'localhost:{port}{path}?{query}'"
        return f"curl localhost:{port}{path}"
    body = json.dumps({name: _example_value(kind) for name, kind in parameters.items()})
    return (f"curl -X POST -H 'Content-Type: application/json' "
            f"localhost:{port}/{service}/{method} -d '{body}'")


def _matches(template: str, command: str, verb: str) -> bool:
    """Whether a README command calls this route (so it can stand as the example)."""
    found = _URL_PATH.search(command)
    if found is None:
        return False
    pattern = "".join(
        "[^/]+" if part.startswith("{") else re.escape(part)
        for part in re.split(r"(\{[^}]*\})", template)
    )
    if re.fullmatch(pattern, found.group(1)) is None:
        return False
    explicit = re.search(r"-X\s*(\w+)", command)
    return (explicit.group(1) if explicit else "GET").upper() == verb


def view_queries(
    services: Iterable[ReflectedService], port: int, readme_examples: Sequence[str] = ()
) -> list[ViewQuery]:
    """Every view query method of `services`, with its routes and an example: the README's
    command for one of its routes if it has one (its values are real), else one made up
    from the query's parameters."""
    queries = []
    for reflected in services:
        full_name = reflected.full_name
        for method in reflected.descriptor.method:
            if view_method_kind(method) != "query":
                continue
            query = _query_text(method)
            request = reflected.inputs.get(method.name)
            field_types = {f.name: int(f.type) for f in request.field} if request else {}
            # The request fields the query names; a nested parameter (`:range.low`) is
            # left unset, which the query reads as NULL: the request stays valid.
            parameters = {name: field_types[name] for name in _PARAMETER.findall(query)
                          if field_types.get(name, _MESSAGE) != _MESSAGE}
            routes = (*http_routes(method),
                      HttpRoute("POST", f"/{full_name}/{method.name}", "*"))
            from_readme = next((c for c in readme_examples for r in routes
                                if _matches(r.path, c, r.verb)), None)
            queries.append(ViewQuery(
                full_name, method.name, query, method.server_streaming, routes,
                from_readme or _example_curl(port, full_name, method.name, routes,
                                             parameters=parameters, field_types=field_types),
            ))
    return queries


def describe(queries: Sequence[ViewQuery]) -> list[str]:
    """The lines `larder dev` prints under its view heading, indented as its examples."""
    lines = []
    for q in queries:
        answer = "streamed; over HTTP a JSON array of the rows" if q.streamed else "unary"
        lines.append(f"{q.grpc_method}: {q.query}")
        lines.append(f"  HTTP: {', '.join(f'{r.verb} {r.path}' for r in q.routes)}")
        lines.append(f"  gRPC: {q.grpc_method} ({answer})")
        lines.append(q.example)
    return lines
