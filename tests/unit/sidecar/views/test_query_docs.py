"""docs/views.md stays true: its example queries parse, its error example is what the
parser prints, and the package's __all__ names every public name."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from larder_sidecar.views import query as query_package
from larder_sidecar.views.query import QuerySyntaxError, parse_query

DOC = Path(__file__).parents[4] / "docs" / "views.md"


def _blocks() -> list[str]:
    """The text of every fenced code block, whatever its language."""
    blocks: list[str] = []
    current: list[str] | None = None
    for line in DOC.read_text().splitlines(keepends=True):
        if line.startswith("```"):
            if current is None:
                current = []
            else:
                blocks.append("".join(current))
                current = None
        elif current is not None:
            current.append(line)
    return blocks


def _example_queries() -> list[str]:
    return [
        line.strip()
        for block in _blocks()
        if not block.startswith("unexpected")  # the error example
        for line in block.splitlines()
        if line.strip().startswith("SELECT")
    ]


@pytest.mark.parametrize("text", _example_queries())
def test_the_documented_example_queries_parse(text: str) -> None:
    assert str(parse_query(text)) == text


def test_the_documented_syntax_error_is_what_the_parser_prints() -> None:
    block = next(b for b in _blocks() if b.startswith("unexpected 'FORM'"))
    with pytest.raises(QuerySyntaxError) as caught:
        parse_query("SELECT * FORM customers")
    assert str(caught.value) + "\n" == block


def test_the_documented_unsupported_message_is_what_the_parser_says() -> None:
    with pytest.raises(QuerySyntaxError) as caught:
        parse_query("SELECT * FROM customers LIMIT 10")
    documented = re.sub(r"\s+", " ", DOC.read_text())
    assert caught.value.message in documented.replace("`", "")


def test_all_names_every_public_name() -> None:
    public = {
        name
        for name, value in vars(query_package).items()
        if not name.startswith("_") and not isinstance(value, type(query_package))
    }
    public -= {"annotations"}
    assert set(query_package.__all__) == public
