"""The view routes `larder dev` prints: which methods are view queries, their HTTP routes and
gRPC method, and an example that works as printed."""

from __future__ import annotations

from typing import Any

from akkaserverless import annotations_pb2
from google.api import annotations_pb2 as http_annotations_pb2
from google.protobuf import descriptor_pb2
from larder_dev.examples import ReflectedService, generic_examples
from larder_dev.view_routes import HttpRoute, describe, view_method_kind, view_queries

F = descriptor_pb2.FieldDescriptorProto
SERVICE = "shop.view.OrdersByCity"
QUERY = "SELECT * AS orders FROM orders WHERE city = :city AND open = :open"


def _method(
    service: descriptor_pb2.ServiceDescriptorProto,
    name: str,
    *,
    query: str | None = None,
    table: str | None = None,
    get: str | None = None,
    streamed: bool = False,
) -> None:
    method = service.method.add(name=name, input_type=f".shop.view.{name}Request",
                                output_type=".shop.view.Orders", server_streaming=streamed)
    ext: Any = method.options.Extensions
    if query is not None:
        ext[annotations_pb2.method].view.query.query = query
    if table is not None:
        ext[annotations_pb2.method].view.update.table = table
        ext[annotations_pb2.method].view.update.transform_updates = True
    if get is not None:
        ext[http_annotations_pb2.http].get = get
        ext[http_annotations_pb2.http].additional_bindings.add(post="/orders/search", body="*")


def _request(*fields: tuple[str, int]) -> descriptor_pb2.DescriptorProto:
    message = descriptor_pb2.DescriptorProto(name="Request")
    for number, (name, kind) in enumerate(fields, 1):
        message.field.add(name=name, number=number, type=kind, label=F.LABEL_OPTIONAL)
    return message


def reflected() -> ReflectedService:
    """A view service as reflection gives it: options travel as serialized bytes."""
    service = descriptor_pb2.ServiceDescriptorProto(name="OrdersByCity")
    _method(service, "OnOrderPlaced", table="orders")
    _method(service, "ByCity", query=QUERY, get="/orders/by-city/{city}")
    _method(service, "Stream", query="SELECT * FROM orders WHERE size > :size.min OR "
                                     "count = :count", streamed=True)
    wire = descriptor_pb2.ServiceDescriptorProto.FromString(service.SerializeToString())
    size = descriptor_pb2.FieldDescriptorProto(name="size", number=3, type=F.TYPE_MESSAGE)
    stream_request = _request(("count", F.TYPE_INT64))
    stream_request.field.append(size)
    inputs = {
        "OnOrderPlaced": _request(("city", F.TYPE_STRING)),
        "ByCity": _request(("city", F.TYPE_STRING), ("open", F.TYPE_BOOL)),
        "Stream": stream_request,
    }
    return ReflectedService(SERVICE, wire, {}, inputs)


def test_the_kind_of_each_method() -> None:
    kinds = {m.name: view_method_kind(m) for m in reflected().descriptor.method}
    assert kinds == {"OnOrderPlaced": "update", "ByCity": "query", "Stream": "query"}
    assert view_method_kind(descriptor_pb2.MethodDescriptorProto(name="Plain")) is None


def test_queries_with_their_routes_and_made_up_examples() -> None:
    by_city, stream = view_queries([reflected()], 9100)
    assert (by_city.grpc_method, by_city.query, by_city.streamed) == (
        f"{SERVICE}/ByCity", QUERY, False)
    assert by_city.routes == (
        HttpRoute("GET", "/orders/by-city/{city}"),
        HttpRoute("POST", "/orders/search", "*"),
        HttpRoute("POST", f"/{SERVICE}/ByCity", "*"),
    )
    # The path takes `city`; the other parameter goes in the query string.
    assert by_city.example == "curl 'localhost:9100/orders/by-city/example-1?open=true'"
    # No GET rule: the generic route with a JSON body; the nested `:size.min` is left out
    # (a missing message parameter is NULL, the request stays valid).
    assert stream.streamed
    assert stream.routes == (HttpRoute("POST", f"/{SERVICE}/Stream", "*"),)
    assert stream.example == (
        "curl -X POST -H 'Content-Type: application/json' "
        f"""localhost:9100/{SERVICE}/Stream -d '{{"count": 1}}'""")


def test_a_readme_command_for_a_route_is_the_example() -> None:
    readme = [
        "curl -X POST localhost:9100/orders/by-city/oslo",  # another verb: not this route
        "curl localhost:9100/orders/by-city/oslo/extra",    # another path
        "curl localhost:9100/orders/by-city/oslo",
    ]
    by_city, _ = view_queries([reflected()], 9100, readme)
    assert by_city.example == "curl localhost:9100/orders/by-city/oslo"


def test_what_is_printed() -> None:
    assert describe(view_queries([reflected()], 9100)) == [
        f"{SERVICE}/ByCity: {QUERY}",
        f"  HTTP: GET /orders/by-city/{{city}}, POST /orders/search, POST /{SERVICE}/ByCity",
        f"  gRPC: {SERVICE}/ByCity (unary)",
        "curl 'localhost:9100/orders/by-city/example-1?open=true'",
        f"{SERVICE}/Stream: SELECT * FROM orders WHERE size > :size.min OR count = :count",
        f"  HTTP: POST /{SERVICE}/Stream",
        f"  gRPC: {SERVICE}/Stream (streamed; over HTTP a JSON array of the rows)",
        "curl -X POST -H 'Content-Type: application/json' "
        f"""localhost:9100/{SERVICE}/Stream -d '{{"count": 1}}'""",
    ]


def test_generic_examples_leave_views_out() -> None:
    # Update methods are not served to clients; queries get their own examples.
    assert generic_examples([reflected()], 9100) == []


def test_path_variables_take_their_fields_type_and_unknown_parameters_are_left_out() -> None:
    service = descriptor_pb2.ServiceDescriptorProto(name="OrdersByYear")
    # ':ghost' sits in a string literal: not a parameter, and no request field either.
    _method(service, "ByYear", query="SELECT * FROM orders WHERE year = :year AND "
                                     "note = ' :ghost'", get="/orders/{shard}/by-year")
    request = _request(("shard", F.TYPE_INT32), ("year", F.TYPE_INT64))
    (by_year,) = view_queries([ReflectedService("shop.view.OrdersByYear", service, {},
                                                {"ByYear": request})], 9100)
    assert by_year.example == "curl 'localhost:9100/orders/1/by-year?year=1'"
