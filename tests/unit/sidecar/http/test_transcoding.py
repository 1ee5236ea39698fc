from __future__ import annotations

import json
from typing import Any

import pytest
from google.protobuf import json_format
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from larder_sidecar.http.routes import RouteTable
from larder_sidecar.http.transcoding import ReplyDecodeError, TranscodeError, Transcoder


def decode(
    table: RouteTable, http_method: str, path: str, query: str | None = None, body: bytes = b""
) -> dict[str, Any]:
    route, bindings = table.match(http_method, path)
    message = Transcoder(route).decode_request(bindings, query, body)
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def reply_bytes(table: RouteTable, http_method: str, path: str, document: dict[str, Any]) -> bytes:
    route, _ = table.match(http_method, path)
    message: Message = GetMessageClass(route.method.output)()
    json_format.ParseDict(document, message)
    return message.SerializeToString()


def encode(table: RouteTable, http_method: str, path: str, document: dict[str, Any]) -> Any:
    route, _ = table.match(http_method, path)
    body, content_type = Transcoder(route).encode_reply(
        reply_bytes(table, http_method, path, document)
    )
    assert content_type == "application/json"
    return json.loads(body)


def test_generic_route_takes_the_whole_body_in_either_spelling(table: RouteTable) -> None:
    path = "/com.example.TurkeyService/StartCooking"
    assert decode(table, "POST", path, body=b'{"turkey_id": "t1", "temperature": 180}') == {
        "turkey_id": "t1",
        "temperature": 180,
    }
    assert decode(table, "POST", path, body=b'{"turkeyId": "t2"}') == {"turkey_id": "t2"}
    assert decode(table, "POST", path, body=b"") == {}


def test_path_variable_wins_over_the_body(table: RouteTable) -> None:
    body = b'{"turkeyId": "from-body", "temperature": 200}'
    assert decode(table, "POST", "/turkeys/from-path/cook", body=body) == {
        "turkey_id": "from-path",
        "temperature": 200,
    }


def test_body_field_and_nested_path_variable(table: RouteTable) -> None:
    body = b'{"title": "Dune", "pages": "412", "author": {"displayName": "F. H."}}'
    assert decode(table, "PATCH", "/v1/shelves/s1/books/b1", query="validateOnly=true",
                  body=body) == {
        "name": "shelves/s1",
        "book": {"id": "b1", "title": "Dune", "pages": "412",
                 "author": {"display_name": "F. H."}},
        "validate_only": True,
    }


def test_query_parameters_nested_repeated_enum_and_wrappers(table: RouteTable) -> None:
    query = (
        "page_size=10&tags=a&tags=b&filter.author=Le%20Guin&filter.genre=FICTION"
        "&filter.years=1969&filter.years=1974"
    )
    assert decode(table, "GET", "/v1/shelves/s1/books", query=query) == {
        "parent": "shelves/s1",
        "page_size": 10,
        "tags": ["a", "b"],
        "filter": {"author": "Le Guin", "genre": "FICTION", "years": [1969, 1974]},
    }
    query = "limit=5&asOf=2024-01-02T03:04:05Z&strict=false"
    assert decode(table, "PATCH", "/v1/shelves/s/books/b", query=query) == {
        "name": "shelves/s",
        "book": {"id": "b"},
        "limit": 5,
        "as_of": "2024-01-02T03:04:05Z",
        "strict": False,
    }


def test_body_field_route_puts_the_body_into_that_field(table: RouteTable) -> None:
    assert decode(table, "SEARCH", "/v1/shelves/s1/books", body=b'{"genre": "HISTORY"}') == {
        "parent": "shelves/s1",
        "filter": {"genre": "HISTORY"},
    }


@pytest.mark.parametrize(
    ("http_method", "path", "query", "body", "problem"),
    [
        ("POST", "/com.example.TurkeyService/StartCooking", None, b'{"turkey": "x"}',
         'no field named "turkey"'),
        ("POST", "/com.example.TurkeyService/StartCooking", None, b'{"temperature": "hot"}',
         "temperature"),
        ("POST", "/com.example.TurkeyService/StartCooking", None, b'{"turkey_id": ',
         "not valid JSON"),
        ("POST", "/com.example.TurkeyService/StartCooking", None, b'["t1"]',
         "must be a JSON object"),
        ("POST", "/com.example.TurkeyService/StartCooking", None, b"\xff\xfe",
         "not valid JSON"),
        ("POST", "/com.example.TurkeyService/StartCooking", "x=1", b"{}",
         "whole request from the body"),
        ("GET", "/v1/books", "nope=1", None, "'nope' does not name a field"),
        ("GET", "/v1/books", "page_size=ten", None, "page_size"),
        ("GET", "/v1/books", "page_size=1&page_size=2", None, "is repeated, but its field is not"),
        ("GET", "/v1/books", "filter=x", None, "message or map field"),
        ("GET", "/v1/books", "labels=x", None, "message or map field"),
        ("GET", "/v1/shelves/s1/books", "parent=x", None, "the path already sets"),
        ("PATCH", "/v1/shelves/s/books/b", "validate_only=maybe", b"{}", "true or false"),
        ("PATCH", "/v1/shelves/s/books/b", "book.title=x", b"{}", "takes from the body"),
        ("PATCH", "/v1/shelves/s/books/b", None, b'{"pages": 1.5}', "pages"),
    ],
)
def test_bad_input_is_a_transcode_error_naming_the_problem(
    table: RouteTable, http_method: str, path: str, query: str | None, body: bytes | None,
    problem: str,
) -> None:
    with pytest.raises(TranscodeError, match=problem):
        decode(table, http_method, path, query=query, body=body or b"")


def test_reply_uses_camel_case_and_includes_defaults(table: RouteTable) -> None:
    assert encode(table, "GET", "/turkeys/t1", {"turkeyId": "t1"}) == {
        "turkeyId": "t1",
        "inOven": False,
        "temperature": 0,
        "tags": [],
    }


def test_response_body_renders_one_field(table: RouteTable) -> None:
    books = {"books": [{"id": "b1", "pages": "10"}], "nextPageToken": "n"}
    rendered = encode(table, "GET", "/v1/shelves/s/books", books)
    assert isinstance(rendered, list)
    assert rendered[0]["id"] == "b1"
    assert rendered[0]["pages"] == "10"
    # A message field renders as its object, even when unset.
    assert encode(table, "GET", "/v1/curated/x", books) == {"name": "", "displayName": ""}
    assert encode(table, "GET", "/v1/curated/x", {"curator": {"name": "Ann"}}) == {
        "name": "Ann",
        "displayName": "",
    }


def test_http_body_reply_is_sent_raw(table: RouteTable) -> None:
    route, _ = table.match("GET", "/files/a.txt")
    payload = reply_bytes(table, "GET", "/files/a.txt",
                          {"contentType": "text/plain", "data": "aGVsbG8="})
    assert Transcoder(route).encode_reply(payload) == (b"hello", "text/plain")


def test_reply_that_is_not_the_output_type_is_reported(table: RouteTable) -> None:
    route, _ = table.match("GET", "/turkeys/t1")
    with pytest.raises(ReplyDecodeError, match=r"com\.example\.Turkey"):
        Transcoder(route).encode_reply(b"\xff\xff\xff")


def test_reply_fields_are_in_declaration_order_at_every_depth(table: RouteTable) -> None:
    # As protobuf's canonical JSON prints them: declaration order, whether a field is set
    # or printed for its default value.
    reply = {
        "books": [{"pages": "10", "author": {"displayName": "Ann"}, "rating": 4.5}],
        "curator": {"displayName": "Bo"},
    }
    route, _ = table.match("POST", "/com.example.Library/SearchBooks")
    payload = reply_bytes(table, "POST", "/com.example.Library/SearchBooks", reply)
    body, _ = Transcoder(route).encode_reply(payload)
    assert body == (
        b'{"books":[{"id":"","title":"","pages":"10","author":{"name":"","displayName":"Ann"},'
        b'"tags":[],"genre":"GENRE_UNSPECIFIED","cover":"","rating":4.5,"labels":{}}],'
        b'"nextPageToken":"","curator":{"name":"","displayName":"Bo"}}'
    )
    # Also the one field a response_body rule renders.
    books = encode(table, "GET", "/v1/shelves/s/books", reply)
    assert list(books[0]) == [
        "id", "title", "pages", "author", "tags", "genre", "cover", "rating", "labels",
    ]
    assert list(encode(table, "GET", "/v1/curated/x", reply)) == ["name", "displayName"]
