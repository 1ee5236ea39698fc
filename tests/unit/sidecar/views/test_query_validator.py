"""The validator: queries checked against the row, request and reply types; every problem
reported at once, each naming its column, parameter, table or reply field."""

from __future__ import annotations

import pytest
from larder_sidecar.views.query import (
    Kind,
    QueryValidationError,
    ValueType,
    parse_query,
    validate_query,
)

from tests.unit.sidecar.views.conftest import ViewTypes

VALID: list[tuple[str, str, bool]] = [
    # (query, reply type, streamed)
    ("SELECT * FROM customers", "Customer", True),
    ("SELECT * FROM customers WHERE name = :customer_name", "Customer", False),
    ("SELECT * FROM customers WHERE address.city = :city", "Customer", True),
    ("SELECT * FROM customers WHERE address.city = 'New York'", "Customer", True),
    ("SELECT * AS results FROM customers WHERE name = :customer_name", "Customers", False),
    # A reply that keeps some of the row's fields.
    ("SELECT * FROM customers", "CustomerSummary", True),
    ("SELECT * AS results FROM customers", "Summaries", False),
    # Projections, with aliases, parameters, nested columns and repeated fields.
    (
        "SELECT :request_id, customer_id AS id, name, tags, address.city FROM customers "
        "WHERE name = :customer_name",
        "Projected",
        True,
    ),
    # Numbers compare across integer and floating types.
    ("SELECT * FROM customers WHERE age >= :min_age AND balance < :min_age", "Customer", True),
    ("SELECT * FROM customers WHERE age > :range.low AND age < 2.5", "Customer", True),
    ("SELECT * FROM customers WHERE score > :max_score AND visits > -1", "Customer", True),
    ("SELECT * FROM customers WHERE age < :age_limit", "Customer", True),
    ("SELECT * FROM customers WHERE nickname = :customer_name", "Customer", True),
    ("SELECT * FROM customers WHERE nickname >= 'a'", "Customer", True),
    ("SELECT * FROM customers WHERE active = :active AND active != FALSE", "Customer", True),
    ("SELECT * FROM customers WHERE status = :status OR status != 'SUSPENDED'", "Customer", True),
    ("SELECT * FROM customers WHERE avatar = :avatar", "Customer", True),
    ("SELECT * FROM customers WHERE joined >= :since", "Customer", True),
    ("SELECT * FROM customers WHERE address IS NULL OR address.geo IS NOT NULL", "Customer", True),
    ("SELECT * FROM customers WHERE NOT (score IS NULL) AND name < 'm'", "Customer", True),
    ("SELECT * FROM products WHERE title = :customer_name", "Product", True),
]


@pytest.mark.parametrize(("text", "response", "streamed"), VALID, ids=[t for t, _, _ in VALID])
def test_valid_queries_validate(types: ViewTypes, text: str, response: str, streamed: bool) -> None:
    validated = types.validate(text, response=response, streamed=streamed)
    assert validated.streamed is streamed
    assert validated.response_type.name == response


def test_the_validated_query_knows_its_shape_and_filter_columns(types: ViewTypes) -> None:
    validated = types.validate(
        "SELECT * AS results FROM customers "
        "WHERE name = :customer_name AND (address.city = :city OR score IS NULL) AND name != 'x'",
        response="Customers",
        streamed=False,
    )
    assert validated.result_field == "results"
    assert validated.row_type.full_name == "larder.viewtest.Customer"
    assert [(c.path, c.type) for c in validated.filter_columns] == [
        (("name",), ValueType(Kind.STRING, "string", nullable=False)),
        (("address", "city"), ValueType(Kind.STRING, "string", nullable=True)),
        (("score",), ValueType(Kind.NUMBER, "int64", nullable=True)),
    ]
    assert types.validate("SELECT * FROM customers").result_field is None


def test_types_of_columns(types: ViewTypes) -> None:
    columns = types.validate(
        "SELECT * FROM customers WHERE status = 'ACTIVE' AND nickname IS NULL "
        "AND joined IS NULL AND avatar IS NULL AND active IS NULL AND address IS NULL"
    ).filter_columns
    assert [c.type for c in columns] == [
        ValueType(Kind.ENUM, "larder.viewtest.Status", False, "larder.viewtest.Status"),
        ValueType(Kind.STRING, "google.protobuf.StringValue", nullable=True),
        ValueType(Kind.TIMESTAMP, "google.protobuf.Timestamp", nullable=True),
        ValueType(Kind.BYTES, "bytes", nullable=False),
        ValueType(Kind.BOOL, "bool", nullable=False),
        ValueType(Kind.MESSAGE, "larder.viewtest.Address", nullable=True),
    ]


INVALID: list[tuple[str, str, bool, list[tuple[str, str, str]]]] = [
    # (query, reply type, streamed, [(subject, message, position)])
    (
        "SELECT * FROM clients",
        "Customer",
        True,
        [("clients", "the view has no table 'clients' (its tables: customers, products)", "1:15")],
    ),
    (
        "SELECT * FROM customers WHERE nmae = :customer_name",
        "Customer",
        True,
        [
            (
                "nmae",
                "column 'nmae': larder.viewtest.Customer has no field 'nmae' (its fields: "
                "customer_id, email, name, address, age, score, active, status, avatar, nickname, "
                "joined, tags, balance, color, labels, visits)",
                "1:31",
            )
        ],
    ),
    (
        "SELECT * FROM customers WHERE address.town = :city",
        "Customer",
        True,
        [
            (
                "address.town",
                "column 'address.town': larder.viewtest.Address has no field 'town' "
                "(its fields: street, city, geo)",
                "1:31",
            )
        ],
    ),
    (
        "SELECT * FROM customers WHERE name.first = :city",
        "Customer",
        True,
        [
            (
                "name.first",
                "column 'name.first': 'name' is a string, it has no field 'first'",
                "1:31",
            )
        ],
    ),
    (
        "SELECT * FROM customers WHERE tags = :city",
        "Customer",
        True,
        [
            (
                "tags",
                "column 'tags': 'tags' is a repeated field; a query compares single values",
                "1:31",
            )
        ],
    ),
    (
        "SELECT * FROM customers WHERE name = :name",
        "Customer",
        True,
        [
            (
                ":name",
                "parameter ':name' is not in the request larder.viewtest.Filter: "
                "larder.viewtest.Filter has no field 'name' (its fields: customer_name, city, "
                "min_age, max_score, status, color, active, range, since, age_limit, avatar, "
                "tags, request_id, balance, nickname)",
                "1:38",
            )
        ],
    ),
    (
        "SELECT * FROM customers WHERE age > :range.lowest",
        "Customer",
        True,
        [
            (
                ":range.lowest",
                "parameter ':range.lowest' is not in the request larder.viewtest.Filter: "
                "larder.viewtest.Range has no field 'lowest' (its fields: low, high)",
                "1:37",
            )
        ],
    ),
    (
        "SELECT * FROM customers WHERE name = :tags",
        "Customer",
        True,
        [
            (
                ":tags",
                "parameter ':tags' is not in the request larder.viewtest.Filter: "
                "'tags' is a repeated field; a query compares single values",
                "1:38",
            )
        ],
    ),
    (
        "SELECT * FROM customers WHERE age = :customer_name",
        "Customer",
        True,
        [
            (
                ":customer_name",
                "parameter ':customer_name' is string, column 'age' is int32: "
                "they cannot be compared",
                "1:37",
            )
        ],
    ),
    (
        "SELECT * FROM customers WHERE status = :color",
        "Customer",
        True,
        [
            (
                ":color",
                "parameter ':color' is larder.viewtest.Color, column 'status' is "
                "larder.viewtest.Status: they cannot be compared",
                "1:40",
            )
        ],
    ),
    (
        "SELECT * FROM customers WHERE joined > :min_age",
        "Customer",
        True,
        [
            (
                ":min_age",
                "parameter ':min_age' is int64, column 'joined' is google.protobuf.Timestamp: "
                "they cannot be compared",
                "1:40",
            )
        ],
    ),
    (
        "SELECT * FROM customers WHERE address = :range",
        "Customer",
        True,
        [
            (
                "address",
                "column 'address' is a message (larder.viewtest.Address); compare one of its "
                "fields, or test it with IS NULL",
                "1:31",
            )
        ],
    ),
    (
        "SELECT * FROM customers WHERE active < TRUE",
        "Customer",
        True,
        [("active", "'<' does not apply to column 'active' of type bool; use = or !=", "1:31")],
    ),
    (
        "SELECT * FROM customers WHERE status >= :status",
        "Customer",
        True,
        [
            (
                "status",
                "'>=' does not apply to column 'status' of type larder.viewtest.Status; "
                "use = or !=",
                "1:31",
            )
        ],
    ),
    (
        "SELECT * FROM customers WHERE avatar > :avatar",
        "Customer",
        True,
        [("avatar", "'>' does not apply to column 'avatar' of type bytes; use = or !=", "1:31")],
    ),
    (
        "SELECT * FROM customers WHERE age = '30'",
        "Customer",
        True,
        [("'30'", "column 'age' is int32; it cannot be compared with the string '30'", "1:37")],
    ),
    (
        "SELECT * FROM customers WHERE name = 30",
        "Customer",
        True,
        [("30", "column 'name' is string; it cannot be compared with the number 30", "1:38")],
    ),
    (
        "SELECT * FROM customers WHERE age = TRUE",
        "Customer",
        True,
        [("TRUE", "column 'age' is int32; it cannot be compared with the boolean TRUE", "1:37")],
    ),
    (
        "SELECT * FROM customers WHERE status = 'ACTIV'",
        "Customer",
        True,
        [
            (
                "'ACTIV'",
                "'ACTIV' is not a value of larder.viewtest.Status (column 'status'; its values: "
                "STATUS_UNSPECIFIED, ACTIVE, SUSPENDED)",
                "1:40",
            )
        ],
    ),
    (
        "SELECT * FROM customers WHERE status = 1",
        "Customer",
        True,
        [
            (
                "1",
                "column 'status' is larder.viewtest.Status; "
                "it cannot be compared with the number 1",
                "1:40",
            )
        ],
    ),
    (
        "SELECT * FROM customers WHERE joined > '2021-01-01'",
        "Customer",
        True,
        [
            (
                "'2021-01-01'",
                "column 'joined' is google.protobuf.Timestamp; it cannot be compared with the "
                "string '2021-01-01'",
                "1:40",
            )
        ],
    ),
    (
        "SELECT * FROM customers WHERE labels IS NULL",
        "Customer",
        True,
        [
            (
                "labels",
                "column 'labels': 'labels' is a repeated field; a query compares single values",
                "1:31",
            )
        ],
    ),
    # Reply shapes.
    (
        "SELECT * FROM customers",
        "MismatchedSummary",
        True,
        [
            (
                "name",
                "field 'name' is int32 in the reply larder.viewtest.MismatchedSummary "
                "(larder.viewtest.MismatchedSummary) but string in the row type "
                "larder.viewtest.Customer",
                "1:8",
            ),
            (
                "phone",
                "the reply larder.viewtest.MismatchedSummary (larder.viewtest.MismatchedSummary) "
                "has field 'phone', which the row type larder.viewtest.Customer lacks",
                "1:8",
            ),
        ],
    ),
    (
        "SELECT * AS results FROM customers",
        "Customers",
        True,
        [
            (
                "* AS results",
                "'* AS results' collects every row into one reply, so the method cannot "
                "return a stream",
                "1:8",
            )
        ],
    ),
    (
        "SELECT * AS customers FROM customers",
        "Customers",
        False,
        [
            (
                "* AS customers",
                "the reply larder.viewtest.Customers has no field 'customers' for '* AS customers'",
                "1:8",
            )
        ],
    ),
    (
        "SELECT * AS single FROM customers",
        "WrongCollections",
        False,
        [
            (
                "* AS single",
                "field 'single' of the reply larder.viewtest.WrongCollections is "
                "larder.viewtest.Customer; '* AS single' needs a repeated message field",
                "1:8",
            )
        ],
    ),
    (
        "SELECT * AS names FROM customers",
        "WrongCollections",
        False,
        [
            (
                "* AS names",
                "field 'names' of the reply larder.viewtest.WrongCollections is repeated string; "
                "'* AS names' needs a repeated message field",
                "1:8",
            )
        ],
    ),
    (
        "SELECT * AS by_id FROM customers",
        "WrongCollections",
        False,
        [
            (
                "* AS by_id",
                "field 'by_id' of the reply larder.viewtest.WrongCollections is repeated "
                "larder.viewtest.WrongCollections.ByIdEntry; '* AS by_id' needs a repeated "
                "message field",
                "1:8",
            )
        ],
    ),
    (
        "SELECT * AS mismatched FROM customers",
        "WrongCollections",
        False,
        [
            (
                "name",
                "field 'name' is int32 in field 'mismatched' of the reply "
                "(larder.viewtest.MismatchedSummary) but string in the row type "
                "larder.viewtest.Customer",
                "1:8",
            ),
            (
                "phone",
                "field 'mismatched' of the reply (larder.viewtest.MismatchedSummary) has field "
                "'phone', which the row type larder.viewtest.Customer lacks",
                "1:8",
            ),
        ],
    ),
    (
        "SELECT customer_id, email, age AS name, :min_age AS request_id, name AS id, name "
        "FROM customers",
        "Projected",
        True,
        [
            (
                "customer_id",
                "the reply larder.viewtest.Projected has no field 'customer_id' for 'customer_id'",
                "1:8",
            ),
            (
                "email",
                "the reply larder.viewtest.Projected has no field 'email' for 'email'",
                "1:21",
            ),
            ("name", "'age' is int32 but the reply field 'name' is string", "1:28"),
            (
                "request_id",
                "':min_age' is int64 but the reply field 'request_id' is string",
                "1:41",
            ),
            ("name", "two select items fill the reply field 'name'", "1:77"),
        ],
    ),
    (
        "SELECT :nope AS id, adress.city FROM customers",
        "Projected",
        True,
        [
            (
                ":nope",
                "parameter ':nope' is not in the request larder.viewtest.Filter: "
                "larder.viewtest.Filter has no field 'nope' (its fields: customer_name, city, "
                "min_age, max_score, status, color, active, range, since, age_limit, avatar, "
                "tags, request_id, balance, nickname)",
                "1:8",
            ),
            (
                "adress.city",
                "column 'adress.city': larder.viewtest.Customer has no field 'adress' (its "
                "fields: customer_id, email, name, address, age, score, active, status, avatar, "
                "nickname, joined, tags, balance, color, labels, visits)",
                "1:21",
            ),
        ],
    ),
]


@pytest.mark.parametrize(
    ("text", "response", "streamed", "problems"), INVALID, ids=[t for t, _, _, _ in INVALID]
)
def test_invalid_queries_name_every_problem(
    types: ViewTypes,
    text: str,
    response: str,
    streamed: bool,
    problems: list[tuple[str, str, str]],
) -> None:
    with pytest.raises(QueryValidationError) as caught:
        types.validate(text, response=response, streamed=streamed)
    found = [(p.subject, p.message, str(p.position)) for p in caught.value.problems]
    assert found == problems


def test_every_problem_is_reported_at_once(types: ViewTypes) -> None:
    text = (
        "SELECT * AS results FROM customers\n"
        "WHERE nmae = :customer_name AND age = :city AND status = 'NOPE' OR active > FALSE"
    )
    with pytest.raises(QueryValidationError) as caught:
        types.validate(text, response="Customers", streamed=True)
    assert [(p.subject, str(p.position)) for p in caught.value.problems] == [
        ("nmae", "2:7"),
        (":city", "2:39"),
        ("'NOPE'", "2:58"),
        ("active", "2:68"),
        ("* AS results", "1:8"),
    ]
    rendered = str(caught.value)
    assert rendered.startswith(f"the view query has 5 problems: {text!r}\n")
    assert (
        "  - parameter ':city' is string, column 'age' is int32: they cannot be compared "
        "(at 2:39)\n"
        "    WHERE nmae = :customer_name AND age = :city AND status = 'NOPE' OR active > FALSE\n"
        "                                          ^^^^^\n"
    ) in rendered


def test_a_query_built_without_text_reports_its_canonical_form(types: ViewTypes) -> None:
    query = parse_query("select * from nowhere")
    bare = type(query)(query.selection, query.table, query.where)
    with pytest.raises(QueryValidationError, match="'SELECT \\* FROM nowhere'"):
        validate_query(
            bare,
            tables={},
            request=types.descriptor("Filter"),
            response=types.descriptor("Customer"),
            streamed=True,
        )
