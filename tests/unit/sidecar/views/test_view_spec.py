"""Discovery of view components: update methods, queries checked, problems reported."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest
from larder_sidecar.model import Kind, SpecError, build_model
from larder_sidecar.views.spec import SourceKind

from .shop import PACKAGE, PROTO, compile_shop, shop_spec


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModuleType, bytes]:
    return compile_shop(tmp_path_factory.mktemp("shop"))


def _broken(tmp_path: Path, old: str, new: str) -> bytes:
    """The shop's descriptor set with one edit of its .proto (compiled in its own package
    directory, so the module of the fixture is not replaced)."""
    text = PROTO.read_text()
    assert old in text
    proto = tmp_path / "protos" / "larder" / "viewshop" / "shop.proto"
    proto.parent.mkdir(parents=True)
    proto.write_text(text.replace(old, new))
    from larder_protocol import compile_protos  # noqa: PLC0415 - only here

    desc = tmp_path / "shop.desc"
    compile_protos([proto], tmp_path, include=[tmp_path / "protos"], descriptor_set_out=desc,
                   python=False)
    return desc.read_bytes()


def test_views_are_discovered_with_their_queries_checked(shop: tuple[ModuleType, bytes]) -> None:
    model = build_model(shop_spec(shop[1]), {(0, 7)})
    items = model.views[f"{PACKAGE}.ItemsView"]
    update, prices = items.updates
    assert (update.source, update.entity_type, update.table, update.transform) == (
        SourceKind.VALUE_ENTITY, "items", "items", False
    )
    assert prices.table == "prices"
    assert sorted(items.queries) == [
        "ByCategoryQuery", "Cheaper", "Names", "OneByName", "PricesBelow"
    ]
    assert [c.path for c in items.filter_columns("prices")] == [("price",)]
    assert [c.path for c in items.filter_columns("items")] == [
        ("category",), ("name",), ("price",)
    ]
    assert items.queries["Cheaper"].checked.result_field == "items"
    balances = model.views[f"{PACKAGE}.BalancesView"]
    assert balances.updates[0].source is SourceKind.EVENT_SOURCED_ENTITY
    assert balances.updates[0].transform
    # Query methods are served (no entity key); update methods are not.
    query = model.method(f"{PACKAGE}.ItemsView", "ByCategoryQuery")
    assert query is not None and query.key is None and query.component.kind is Kind.VIEW
    assert model.method(f"{PACKAGE}.ItemsView", "UpdateItem") is None


def test_an_unsupported_query_is_refused_with_its_clause_and_position(
    shop: tuple[ModuleType, bytes], tmp_path: Path
) -> None:
    spec = shop_spec(_broken(
        tmp_path,
        "SELECT * AS items FROM items WHERE price < :max_price",
        "SELECT * AS items FROM items WHERE price < :max_price ORDER BY name",
    ))
    with pytest.raises(SpecError) as info:
        build_model(spec, {(0, 7)})
    (problem,) = info.value.problems
    assert problem.startswith(f"{PACKAGE}.ItemsView.Cheaper: unexpected 'ORDER' at 1:55")
    assert "in the WHERE clause" in problem
    assert "^^^^^" in problem


def test_a_query_that_does_not_fit_its_messages_is_refused(
    shop: tuple[ModuleType, bytes], tmp_path: Path
) -> None:
    spec = shop_spec(_broken(tmp_path, "WHERE total >= :min", "WHERE total >= :minimum"))
    wanted = r"(?s)BalancesView.AtLeast: .*':minimum' is not in the request.*\(at 1:39\)"
    with pytest.raises(SpecError, match=wanted):
        build_model(spec, {(0, 7)})


def test_sources_must_be_entities_of_this_function(shop: tuple[ModuleType, bytes]) -> None:
    without_items = tuple(c for c in shop_spec.__defaults__[0] if c[1] != "Items")  # type: ignore[index]
    with pytest.raises(SpecError, match="names value_entity 'items', which no entity"):
        build_model(shop_spec(shop[1], without_items), {(0, 7)})


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ('eventing.in = { event_sourced_entity: "accounts" }', "eventing.in = { }",
         "a view update method needs eventing.in naming its source"),
        ('table: "balances" transform_updates: true', 'table: "balances"',
         "an event-sourced source needs transform_updates"),
        ('view.update = { table: "items" }', 'view.update = { }', "view.update names no table"),
        ('view.update = { table: "prices" }', 'view.update = { table: "items" }',
         "UpdateItem already writes table 'items' from larder.viewshop.Item of 'items'"),
    ],
)
def test_update_methods_that_cannot_run_are_refused(
    shop: tuple[ModuleType, bytes], tmp_path: Path, old: str, new: str, message: str
) -> None:
    with pytest.raises(SpecError, match=message):
        build_model(shop_spec(_broken(tmp_path, old, new)), {(0, 7)})
