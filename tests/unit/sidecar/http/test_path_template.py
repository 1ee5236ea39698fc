from __future__ import annotations

import pytest
from larder_sidecar.http.path_template import TemplateError, parse_template


def segments(path: str) -> list[str]:
    return path[1:].split("/")


def test_literal_template_has_no_variables() -> None:
    template = parse_template("/com.example.TurkeyService/StartCooking")
    assert template.is_literal
    assert template.variables == ()
    assert template.match(segments("/com.example.TurkeyService/StartCooking")) == []
    assert template.match(segments("/com.example.TurkeyService/Other")) is None


def test_simple_variable_binds_one_segment() -> None:
    template = parse_template("/turkeys/{turkey_id}")
    assert template.match(segments("/turkeys/t1")) == [(("turkey_id",), "t1")]
    assert template.match(segments("/turkeys/t1/extra")) is None
    assert template.match(segments("/turkeys")) is None
    assert template.match(segments("/turkeys/")) is None


def test_nested_field_paths_and_sub_patterns() -> None:
    template = parse_template("/v1/{name=shelves/*}/books/{book.id}")
    assert template.match(segments("/v1/shelves/s1/books/b2")) == [
        (("name",), "shelves/s1"),
        (("book", "id"), "b2"),
    ]
    assert template.match(segments("/v1/racks/s1/books/b2")) is None


def test_double_wildcard_takes_the_rest_including_nothing() -> None:
    template = parse_template("/files/{path=**}")
    assert template.has_tail
    assert template.match(segments("/files/a/b/c.txt")) == [(("path",), "a/b/c.txt")]
    assert template.match(segments("/files/a")) == [(("path",), "a")]
    assert template.match(segments("/files")) == [(("path",), "")]


def test_anonymous_wildcards_match_without_binding() -> None:
    template = parse_template("/v1/*/items/**")
    assert template.match(segments("/v1/x/items/a/b")) == []
    assert template.match(segments("/v1/x/things/a")) is None


def test_custom_verb() -> None:
    template = parse_template("/v1/{name=shelves/*/books/*}:cancel")
    assert template.verb == "cancel"
    assert template.match(segments("/v1/shelves/s/books/b:cancel")) == [
        (("name",), "shelves/s/books/b")
    ]
    assert template.match(segments("/v1/shelves/s/books/b")) is None
    assert template.match(segments("/v1/shelves/s/books/b:undo")) is None


def test_percent_decoding_single_versus_multi_segment() -> None:
    single = parse_template("/turkeys/{turkey_id}")
    assert single.match(segments("/turkeys/big%20bird%2Fone")) == [
        (("turkey_id",), "big bird/one")
    ]
    multi = parse_template("/files/{path=**}")
    # %2F stays encoded in a multi-segment value so it is not confused with a separator.
    assert multi.match(segments("/files/a%20b/c%2Fd")) == [(("path",), "a b/c%2Fd")]


def test_specificity_prefers_literals() -> None:
    literal = parse_template("/v1/books/{id}")
    wildcard = parse_template("/v1/{parent}/{id}")
    tail = parse_template("/v1/{rest=**}")
    ordered = sorted([tail, wildcard, literal], key=lambda t: t.specificity)
    assert ordered == [literal, wildcard, tail]


@pytest.mark.parametrize(
    ("source", "problem"),
    [
        ("turkeys/{id}", "does not start with '/'"),
        ("/turkeys/{id", "unbalanced"),
        ("/turkeys/id}", "unbalanced"),
        ("/a/{x={y}}", "cannot nest"),
        ("/a//b", "empty segment"),
        ("/a/**/b", "must be the last"),
        ("/a/{1x}", "not a field path"),
        ("/a/{x}/{x}", "twice"),
        ("/a/b*c", "bad literal"),
        ("/a/b:", "empty custom verb"),
    ],
)
def test_invalid_templates_are_rejected_with_the_reason(source: str, problem: str) -> None:
    with pytest.raises(TemplateError, match=problem):
        parse_template(source)
