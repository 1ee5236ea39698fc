from __future__ import annotations

from pathlib import Path

import pytest
from larder_sidecar.http import HttpRuleError
from larder_sidecar.http.routes import (
    MethodNotAllowed,
    RouteNotFound,
    RouteTable,
    build_route_table,
    http_rule,
)
from larder_sidecar.invoke import MethodModel

from .protos import by_path, compile_descriptor_set, method_models


def test_http_rule_is_read_from_a_private_pool(methods: list[MethodModel]) -> None:
    rule = http_rule(by_path(methods, "/com.example.Library/ListBooks"))
    assert rule is not None
    assert rule.get == "/v1/{parent=shelves/*}/books"
    assert rule.response_body == "books"
    assert [b.get for b in rule.additional_bindings] == ["/v1/books", "/v1/curated/{parent=**}"]
    assert http_rule(by_path(methods, "/com.example.TurkeyService/Baste")) is None


def test_generic_route_for_every_method(table: RouteTable, methods: list[MethodModel]) -> None:
    for method in methods:
        route, bindings = table.match("POST", method.path)
        assert route.method is method
        assert route.generic
        assert route.body == "*"
        assert bindings == []


@pytest.mark.parametrize(
    ("http_method", "path", "method", "bindings"),
    [
        ("GET", "/turkeys/t1", "/com.example.TurkeyService/GetTurkey", [(("turkey_id",), "t1")]),
        ("POST", "/turkeys/t1/cook", "/com.example.TurkeyService/StartCooking",
         [(("turkey_id",), "t1")]),
        ("PATCH", "/v1/shelves/s1/books/b1", "/com.example.Library/UpdateBook",
         [(("name",), "shelves/s1"), (("book", "id"), "b1")]),
        ("GET", "/v1/shelves/s1/books", "/com.example.Library/ListBooks",
         [(("parent",), "shelves/s1")]),
        ("GET", "/v1/books", "/com.example.Library/ListBooks", []),
        ("GET", "/v1/curated/a/b", "/com.example.Library/ListBooks", [(("parent",), "a/b")]),
        ("DELETE", "/v1/shelves/s/books/b", "/com.example.Library/DeleteBook",
         [(("name",), "shelves/s/books/b")]),
        ("POST", "/v1/shelves/s/books/b:cancel", "/com.example.Library/CancelBook",
         [(("name",), "shelves/s/books/b")]),
        ("PUT", "/v1/books/b9", "/com.example.Library/PutBook", [(("id",), "b9")]),
        ("SEARCH", "/v1/shelves/s1/books", "/com.example.Library/SearchBooks",
         [(("parent",), "shelves/s1")]),
        ("GET", "/files/x/y.txt", "/com.example.Library/GetFile", [(("path",), "x/y.txt")]),
    ],
)
def test_rule_routes_match(
    table: RouteTable,
    http_method: str,
    path: str,
    method: str,
    bindings: list[tuple[tuple[str, ...], str]],
) -> None:
    route, bound = table.match(http_method, path)
    assert route.method.path == method
    assert bound == bindings


def test_unknown_path_is_not_found(table: RouteTable) -> None:
    with pytest.raises(RouteNotFound, match="/nowhere"):
        table.match("GET", "/nowhere")


def test_known_path_with_wrong_method_lists_the_allowed_ones(table: RouteTable) -> None:
    with pytest.raises(MethodNotAllowed) as raised:
        table.match("DELETE", "/v1/shelves/s1/books")
    assert raised.value.allowed == ("GET", "SEARCH")
    with pytest.raises(MethodNotAllowed) as raised:
        table.match("GET", "/com.example.TurkeyService/StartCooking")
    assert raised.value.allowed == ("POST",)


def test_invalid_rules_are_all_reported_at_once(tmp_path: Path) -> None:
    protos = tmp_path / "protos"
    protos.mkdir()
    (protos / "bad.proto").write_text(
        """
        syntax = "proto3";
        package bad;
        import "google/api/annotations.proto";
        message Req { string id = 1; Inner inner = 2; repeated string tags = 3; }
        message Inner { string x = 1; }
        message Resp { string id = 1; }
        service Bad {
          rpc A(Req) returns (Resp) { option (google.api.http) = { get: "/a/{nope}" }; }
          rpc B(Req) returns (Resp) {
            option (google.api.http) = { post: "/b" body: "missing" response_body: "gone" };
          }
          rpc C(Req) returns (Resp) { option (google.api.http) = { get: "/c/{inner}" }; }
          rpc D(Req) returns (Resp) { option (google.api.http) = { get: "/d/{tags}" }; }
          rpc E(Req) returns (Resp) { option (google.api.http) = { get: "no-slash" }; }
          rpc F(Req) returns (Resp) { option (google.api.http) = { get: "/a/{id}" }; }
          rpc G(Req) returns (Resp) { option (google.api.http) = { get: "/a/{id}" }; }
        }
        """
    )
    methods = method_models(compile_descriptor_set(tmp_path / "out", protos))
    with pytest.raises(HttpRuleError) as raised:
        build_route_table(methods)
    problems = raised.value.problems
    assert any("'nope'" in p and "/bad.Bad/A" in p for p in problems)
    assert any("body 'missing'" in p for p in problems)
    assert any("response_body 'gone'" in p for p in problems)
    assert any("'inner'" in p and "not a single scalar" in p for p in problems)
    assert any("'tags'" in p and "not a single scalar" in p for p in problems)
    assert any("no-slash" in p for p in problems)
    assert any("bound by both /bad.Bad/F and /bad.Bad/G" in p for p in problems)
    assert len(problems) == 7
