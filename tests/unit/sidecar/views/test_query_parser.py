"""The view query parser: every supported form (table-driven, compared as ASTs), canonical
printing, positions, and the exact message, clause and position of each syntax error."""

from __future__ import annotations

import pytest
from larder_sidecar.views.query import (
    And,
    ColumnRef,
    Comparison,
    ComparisonOp,
    IsNull,
    Literal,
    Not,
    Or,
    Parameter,
    Position,
    Projection,
    Query,
    QuerySyntaxError,
    SelectAll,
    SelectItem,
    TableRef,
    parse_query,
)


def col(dotted: str) -> ColumnRef:
    return ColumnRef(tuple(dotted.split(".")))


def param(dotted: str) -> Parameter:
    return Parameter(tuple(dotted.split(".")))


def cmp(column: str, op: str, value: Parameter | Literal) -> Comparison:
    return Comparison(col(column), ComparisonOp(op), value)


def query(where: object = None, selection: object = None, table: str = "customers") -> Query:
    return Query(selection or SelectAll(), TableRef(table), where)  # type: ignore[arg-type]


NAME_IS = cmp("name", "=", param("customer_name"))
CITY_IS = cmp("address.city", "=", param("city"))

VALID: list[tuple[str, Query]] = [
    # The forms the protocol 0.7 SDK documentation shows.
    ("SELECT * FROM customers", query()),
    ("SELECT * FROM customers WHERE name = :customer_name", query(NAME_IS)),
    (
        "SELECT * FROM customers WHERE name = :customer_name AND address.city = :city",
        query(And((NAME_IS, CITY_IS))),
    ),
    (
        "SELECT * FROM customers WHERE address.city = 'New York'",
        query(cmp("address.city", "=", Literal("New York"))),
    ),
    (
        "SELECT * AS results FROM customers WHERE name = :customer_name",
        query(NAME_IS, SelectAll("results")),
    ),
    (
        "SELECT customer_id AS id, name FROM customers WHERE name = :customer_name",
        query(
            NAME_IS,
            Projection((SelectItem(col("customer_id"), "id"), SelectItem(col("name")))),
        ),
    ),
    (
        "SELECT :request_id, customer_id as id, name FROM customers WHERE name = :customer_name",
        query(
            NAME_IS,
            Projection(
                (
                    SelectItem(param("request_id")),
                    SelectItem(col("customer_id"), "id"),
                    SelectItem(col("name")),
                )
            ),
        ),
    ),
    (
        "SELECT * FROM customers WHERE\n"
        "  name = :customer_name AND address.city = 'New York' OR\n"
        "  name = :customer_name AND address.city = 'San Francisco'",
        query(
            Or(
                (
                    And((NAME_IS, cmp("address.city", "=", Literal("New York")))),
                    And((NAME_IS, cmp("address.city", "=", Literal("San Francisco")))),
                )
            )
        ),
    ),
    # Every comparison operator.
    ("SELECT * FROM customers WHERE age != :min_age", query(cmp("age", "!=", param("min_age")))),
    ("SELECT * FROM customers WHERE age < 30", query(cmp("age", "<", Literal(30)))),
    ("SELECT * FROM customers WHERE age <= 30", query(cmp("age", "<=", Literal(30)))),
    ("SELECT * FROM customers WHERE age > 30", query(cmp("age", ">", Literal(30)))),
    ("SELECT * FROM customers WHERE age >= 30", query(cmp("age", ">=", Literal(30)))),
    # Keywords in any case; no spaces needed around operators.
    (
        "select * from customers where name=:customer_name",
        query(NAME_IS),
    ),
    (
        "SeLeCt * FrOm customers WhErE age>=:min_age",
        query(cmp("age", ">=", param("min_age"))),
    ),
    # A value on the left is turned around, the operator mirrored.
    ("SELECT * FROM customers WHERE 30 < age", query(cmp("age", ">", Literal(30)))),
    ("SELECT * FROM customers WHERE :min_age >= age", query(cmp("age", "<=", param("min_age")))),
    ("SELECT * FROM customers WHERE 'x' = name", query(cmp("name", "=", Literal("x")))),
    # Literals.
    ("SELECT * FROM customers WHERE balance > -1.5", query(cmp("balance", ">", Literal(-1.5)))),
    ("SELECT * FROM customers WHERE age > -3", query(cmp("age", ">", Literal(-3)))),
    ("SELECT * FROM customers WHERE balance < 1e3", query(cmp("balance", "<", Literal(1000.0)))),
    ("SELECT * FROM customers WHERE balance < 2.5E-1", query(cmp("balance", "<", Literal(0.25)))),
    ("SELECT * FROM customers WHERE active = TRUE", query(cmp("active", "=", Literal(True)))),
    ("SELECT * FROM customers WHERE active = false", query(cmp("active", "=", Literal(False)))),
    ("SELECT * FROM customers WHERE name = 'O''Hara'", query(cmp("name", "=", Literal("O'Hara")))),
    ("SELECT * FROM customers WHERE name = ''", query(cmp("name", "=", Literal("")))),
    (
        "SELECT * FROM customers WHERE name = 'SELECT * FROM x WHERE'",
        query(cmp("name", "=", Literal("SELECT * FROM x WHERE"))),
    ),
    (
        "SELECT * FROM customers WHERE status = 'ACTIVE'",
        query(cmp("status", "=", Literal("ACTIVE"))),
    ),
    # Nested parameters and columns.
    (
        "SELECT * FROM customers WHERE age >= :range.low AND age <= :range.high",
        query(And((cmp("age", ">=", param("range.low")), cmp("age", "<=", param("range.high"))))),
    ),
    (
        "SELECT * FROM customers WHERE address.geo.lat > 0",
        query(cmp("address.geo.lat", ">", Literal(0))),
    ),
    # NULL tests.
    ("SELECT * FROM customers WHERE score IS NULL", query(IsNull(col("score")))),
    ("SELECT * FROM customers WHERE score is not null", query(IsNull(col("score"), negated=True))),
    (
        "SELECT * FROM customers WHERE address.city IS NOT NULL",
        query(IsNull(col("address.city"), negated=True)),
    ),
    # NOT, parentheses and precedence: OR < AND < NOT.
    (
        "SELECT * FROM customers WHERE NOT active = TRUE",
        query(Not(cmp("active", "=", Literal(True)))),
    ),
    (
        "SELECT * FROM customers WHERE NOT NOT score IS NULL",
        query(Not(Not(IsNull(col("score"))))),
    ),
    (
        "SELECT * FROM customers WHERE a = 1 OR b = 2 AND c = 3",
        query(
            Or(
                (
                    cmp("a", "=", Literal(1)),
                    And((cmp("b", "=", Literal(2)), cmp("c", "=", Literal(3)))),
                )
            )
        ),
    ),
    (
        "SELECT * FROM customers WHERE (a = 1 OR b = 2) AND c = 3",
        query(
            And(
                (
                    Or((cmp("a", "=", Literal(1)), cmp("b", "=", Literal(2)))),
                    cmp("c", "=", Literal(3)),
                )
            )
        ),
    ),
    (
        "SELECT * FROM customers WHERE NOT a = 1 AND b = 2",
        query(And((Not(cmp("a", "=", Literal(1))), cmp("b", "=", Literal(2))))),
    ),
    (
        "SELECT * FROM customers WHERE NOT (a = 1 AND b = 2)",
        query(Not(And((cmp("a", "=", Literal(1)), cmp("b", "=", Literal(2)))))),
    ),
    (
        "SELECT * FROM customers WHERE ((name = :customer_name))",
        query(NAME_IS),
    ),
    # Chains of one kind are flattened, also across parentheses.
    (
        "SELECT * FROM customers WHERE a = 1 AND (b = 2 AND c = 3)",
        query(
            And((cmp("a", "=", Literal(1)), cmp("b", "=", Literal(2)), cmp("c", "=", Literal(3))))
        ),
    ),
    (
        "SELECT * FROM customers WHERE a = 1 OR b = 2 OR c = 3",
        query(
            Or((cmp("a", "=", Literal(1)), cmp("b", "=", Literal(2)), cmp("c", "=", Literal(3))))
        ),
    ),
    # Words that SQL or later protocol versions reserve are plain column names here.
    (
        "SELECT order, limit FROM customers WHERE like = :in",
        query(
            cmp("like", "=", param("in")),
            Projection((SelectItem(col("order")), SelectItem(col("limit")))),
        ),
    ),
    # Whitespace of any kind, including none before the end.
    ("  SELECT\t*\n\nFROM\r\n customers  \n", query()),
    ("SELECT * FROM products", query(table="products")),
]


@pytest.mark.parametrize(("text", "expected"), VALID, ids=[text for text, _ in VALID])
def test_valid_queries_parse_to_their_ast(text: str, expected: Query) -> None:
    parsed = parse_query(text)
    assert parsed == expected
    assert parsed.text == text


@pytest.mark.parametrize("text", [text for text, _ in VALID], ids=[text for text, _ in VALID])
def test_the_canonical_form_parses_back_to_the_same_query(text: str) -> None:
    parsed = parse_query(text)
    assert parse_query(str(parsed)) == parsed


def test_literals_of_different_types_differ() -> None:
    assert parse_query("SELECT * FROM c WHERE a = 1") != parse_query(
        "SELECT * FROM c WHERE a = TRUE"
    )
    assert parse_query("SELECT * FROM c WHERE a = 1") != parse_query(
        "SELECT * FROM c WHERE a = 1.0"
    )
    assert parse_query("SELECT * FROM c WHERE a = 0") != parse_query(
        "SELECT * FROM c WHERE a = FALSE"
    )
    assert Literal(True) == Literal(True) and hash(Literal(1)) == hash(Literal(1))


def test_canonical_form() -> None:
    text = (
        "select :request_id, customer_id as id from customers "
        "where not (a=1 or b is null) and c<'x'"
    )
    assert str(parse_query(text)) == (
        "SELECT :request_id, customer_id AS id FROM customers "
        "WHERE NOT (a = 1 OR b IS NULL) AND c < 'x'"
    )


def test_nodes_know_their_positions() -> None:
    parsed = parse_query("SELECT *\nFROM customers\nWHERE name = :customer_name\n  AND 3 < age")
    assert parsed.selection.position == Position(1, 8, 7)  # type: ignore[union-attr]
    assert parsed.table.position == Position(2, 6, 14)
    assert isinstance(parsed.where, And)
    first, second = parsed.where.operands
    assert isinstance(first, Comparison) and isinstance(second, Comparison)
    assert first.column.position == Position(3, 7, 30)
    assert first.value.position == Position(3, 14, 37)
    assert second.position == Position(4, 7, 58)  # where the predicate's text begins
    assert second.column.position == Position(4, 11, 62)


def test_the_query_lists_its_filter_columns_and_parameters() -> None:
    parsed = parse_query(
        "SELECT :request_id, name FROM customers "
        "WHERE name = :customer_name AND (age > :min_age OR name = 'x') AND score IS NULL"
    )
    assert [c.dotted for c in parsed.filter_columns()] == ["name", "age", "score"]
    assert [str(p) for p in parsed.parameters()] == [":request_id", ":customer_name", ":min_age"]


INVALID: list[tuple[str, str, str]] = [
    # (query, the message's first line, the clause)
    ("SELECT * FORM customers", "unexpected 'FORM' at 1:10: expected FROM", "SELECT"),
    ("", "unexpected end of query at 1:1: expected SELECT", "SELECT"),
    ("SELEC * FROM customers", "unexpected 'SELEC' at 1:1: expected SELECT", "SELECT"),
    (
        "SELECT FROM customers",
        "unexpected 'FROM' at 1:8: expected '*', a column or a parameter",
        "SELECT",
    ),
    ("SELECT * FROM", "unexpected end of query at 1:14: expected a table name", "FROM"),
    ("SELECT * FROM where", "unexpected 'where' at 1:15: expected a table name", "FROM"),
    ("SELECT *", "unexpected end of query at 1:9: expected FROM", "SELECT"),
    ("SELECT * AS FROM customers", "unexpected 'FROM' at 1:13: expected a name after AS", "SELECT"),
    (
        "SELECT *, name FROM customers",
        "unexpected ',' at 1:9: expected FROM ('*' stands alone)",
        "SELECT",
    ),
    (
        "SELECT * AS results, name FROM customers",
        "unexpected ',' at 1:20: expected FROM ('* AS name' stands alone)",
        "SELECT",
    ),
    (
        "SELECT name, * FROM customers",
        "unexpected '*' at 1:14: expected a column or a parameter ('*' stands alone)",
        "SELECT",
    ),
    (
        "SELECT name, FROM customers",
        "unexpected 'FROM' at 1:14: expected '*', a column or a parameter",
        "SELECT",
    ),
    (
        "SELECT address. FROM customers",
        "unexpected 'FROM' at 1:17: expected a field name after '.'",
        "SELECT",
    ),
    (
        "SELECT * AS customers, has_more() AS more FROM customers",
        "unexpected ',' at 1:22: expected FROM ('* AS name' stands alone)",
        "SELECT",
    ),
    (
        "SELECT has_more() AS more FROM customers",
        "unexpected 'has_more' at 1:8: "
        "functions (like has_more()) are not supported at protocol 0.7",
        "SELECT",
    ),
    (
        "SELECT * FROM customers WHERE",
        "unexpected end of query at 1:30: expected a column, a parameter or a literal",
        "WHERE",
    ),
    (
        "SELECT * FROM customers WHERE name",
        "unexpected end of query at 1:35: "
        "expected a comparison (=, !=, <, <=, >, >=) or IS [NOT] NULL",
        "WHERE",
    ),
    (
        "SELECT * FROM customers WHERE name =",
        "unexpected end of query at 1:37: expected a column, a parameter or a literal",
        "WHERE",
    ),
    (
        "SELECT * FROM customers WHERE name = :",
        "unexpected ':' at 1:38: a parameter needs a name right after ':' (like :name)",
        "WHERE",
    ),
    (
        "SELECT * FROM customers WHERE name = : name",
        "unexpected ':' at 1:38: a parameter needs a name right after ':' (like :name)",
        "WHERE",
    ),
    (
        "SELECT * FROM customers WHERE name = 'New York",
        'unexpected "\'New York" at 1:38: the string literal is never closed',
        "WHERE",
    ),
    (
        'SELECT * FROM customers WHERE name = "New York"',
        "unexpected '\"' at 1:38: string literals are quoted with single quotes ('New York')",
        "WHERE",
    ),
    (
        "SELECT * FROM customers WHERE name == 'x'",
        "unexpected '=' at 1:37: expected a column, a parameter or a literal",
        "WHERE",
    ),
    (
        "SELECT * FROM customers WHERE name <> 'x'",
        "unexpected '<>' at 1:36: write '!=' for 'not equal'",
        "WHERE",
    ),
    (
        "SELECT * FROM customers WHERE name = 'x' AND",
        "unexpected end of query at 1:45: expected a column, a parameter or a literal",
        "WHERE",
    ),
    (
        "SELECT * FROM customers WHERE name = 'x' name = 'y'",
        "unexpected 'name' at 1:42: expected AND, OR or the end of the query",
        "WHERE",
    ),
    (
        "SELECT * FROM customers WHERE (name = 'x'",
        "unexpected end of query at 1:42: expected AND, OR or ')'",
        "WHERE",
    ),
    (
        "SELECT * FROM customers WHERE name = 'x')",
        "unexpected ')' at 1:41: expected AND, OR or the end of the query",
        "WHERE",
    ),
    (
        "SELECT * FROM customers WHERE ()",
        "unexpected ')' at 1:32: expected a column, a parameter or a literal",
        "WHERE",
    ),
    (
        "SELECT * FROM customers WHERE name IS",
        "unexpected end of query at 1:38: expected NULL",
        "WHERE",
    ),
    (
        "SELECT * FROM customers WHERE name IS NOT 'x'",
        "unexpected \"'x'\" at 1:43: expected NULL",
        "WHERE",
    ),
    (
        "SELECT * FROM customers WHERE :a IS NULL",
        "unexpected ':a' at 1:31: IS NULL and IS NOT NULL test a column",
        "WHERE",
    ),
    (
        "SELECT * FROM customers WHERE name = NULL",
        "unexpected 'NULL' at 1:38: "
        "a comparison with NULL is never true; write IS NULL or IS NOT NULL",
        "WHERE",
    ),
    (
        "SELECT * FROM customers WHERE name = email",
        "unexpected 'email' at 1:38: "
        "a column is compared with a parameter or a literal, not with another column",
        "WHERE",
    ),
    (
        "SELECT * FROM customers WHERE :a = 'x'",
        "unexpected ':a' at 1:31: a comparison needs a column on one side",
        "WHERE",
    ),
    (
        "SELECT * FROM customers WHERE 1 = 1",
        "unexpected '1' at 1:31: a comparison needs a column on one side",
        "WHERE",
    ),
    (
        "SELECT * FROM customers WHERE age > - 'x'",
        "unexpected \"'x'\" at 1:39: expected a number after '-'",
        "WHERE",
    ),
    (
        "SELECT * FROM customers WHERE name = 'x';",
        "unexpected ';' at 1:41: this character has no meaning in a view query",
        "WHERE",
    ),
    (
        "SELECT * FROM customers WHERE lower(name) = 'x'",
        "unexpected 'lower' at 1:31: functions are not supported at protocol 0.7",
        "WHERE",
    ),
    (
        "SELECT * FROM customers customer",
        "unexpected 'customer' at 1:25: expected WHERE or the end of the query",
        "FROM",
    ),
    (
        "SELECT * FROM customers, products",
        "unexpected ',' at 1:24: expected WHERE or the end of the query",
        "FROM",
    ),
    # Multi-line queries: line and column of the line the problem is on.
    (
        "SELECT *\nFROM customers\nWHERE name = :customer_name\n  ANDD age > 3",
        "unexpected 'ANDD' at 4:3: expected AND, OR or the end of the query",
        "WHERE",
    ),
    ("SELECT *\n  FORM customers", "unexpected 'FORM' at 2:3: expected FROM", "SELECT"),
]

UNSUPPORTED: list[tuple[str, str, str]] = [
    # (query, what is named as unsupported, where)
    ("SELECT * FROM customers ORDER BY name", "ORDER BY", "1:25"),
    ("SELECT * FROM customers WHERE a = 1 ORDER BY name", "ORDER BY", "1:37"),
    ("SELECT * FROM customers LIMIT 10", "paging (LIMIT, OFFSET)", "1:25"),
    ("SELECT * FROM customers OFFSET :start_from LIMIT :max", "paging (LIMIT, OFFSET)", "1:25"),
    ("SELECT * FROM customers WHERE a = 1 LIMIT 10", "paging (LIMIT, OFFSET)", "1:37"),
    ("SELECT * FROM customers GROUP BY name", "GROUP BY", "1:25"),
    ("SELECT * FROM customers JOIN products", "JOIN", "1:25"),
    ("SELECT * FROM customers WHERE name LIKE 'A%'", "LIKE", "1:36"),
    ("SELECT * FROM customers WHERE name IN ('a', 'b')", "IN", "1:36"),
    ("SELECT * FROM customers WHERE name NOT IN ('a')", "NOT IN", "1:36"),
    ("SELECT * FROM customers WHERE age BETWEEN 1 AND 2", "BETWEEN", "1:35"),
]


@pytest.mark.parametrize(("text", "message", "clause"), INVALID, ids=[t for t, _, _ in INVALID])
def test_syntax_errors_say_what_where_and_what_was_expected(
    text: str, message: str, clause: str
) -> None:
    with pytest.raises(QuerySyntaxError) as caught:
        parse_query(text)
    assert caught.value.message == message
    assert caught.value.clause == clause
    line, column = message.split(" at ", 1)[1].split(":")[:2]
    assert (caught.value.position.line, caught.value.position.column) == (int(line), int(column))


@pytest.mark.parametrize(("text", "feature", "at"), UNSUPPORTED, ids=[t for t, _, _ in UNSUPPORTED])
def test_unsupported_clauses_and_operators_are_named(text: str, feature: str, at: str) -> None:
    with pytest.raises(QuerySyntaxError) as caught:
        parse_query(text)
    assert f" at {at}: {feature} is not part of the view query language at protocol 0.7" in (
        caught.value.message
    )


def test_the_error_shows_the_line_with_a_caret_under_the_token() -> None:
    with pytest.raises(QuerySyntaxError) as caught:
        parse_query("SELECT *\n  FORM customers")
    assert str(caught.value) == (
        "unexpected 'FORM' at 2:3: expected FROM\n"
        "  in the SELECT clause of the view query:\n"
        "      FORM customers\n"
        "      ^^^^"
    )


def test_an_error_at_the_end_of_a_last_empty_line_shows_that_line() -> None:
    with pytest.raises(QuerySyntaxError) as caught:
        parse_query("SELECT *\r\n")
    assert str(caught.value) == (
        "unexpected end of query at 2:1: expected FROM\n"
        "  in the SELECT clause of the view query:\n"
        "    \n"
        "    ^"
    )


def test_syntax_errors_are_value_errors() -> None:
    with pytest.raises(ValueError, match="expected FROM"):
        parse_query("SELECT * FORM customers")
