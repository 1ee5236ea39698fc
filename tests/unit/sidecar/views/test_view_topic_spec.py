"""Discovery of views fed from Kafka topics (`eventing.in { topic }`)."""

from __future__ import annotations

import re
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest
from larder_protocol import compile_protos
from larder_sidecar.eventing.settings import KafkaSettings
from larder_sidecar.eventing.spec import EventingSpec, Subscription, read_eventing
from larder_sidecar.model import SpecError, build_model
from larder_sidecar.views.delivery import ViewDelivery
from larder_sidecar.views.metrics import ViewMetrics
from larder_sidecar.views.spec import SourceKind
from larder_sidecar.views.store import MemoryViewStore
from larder_sidecar.views.topic_source import TopicSourceError, TopicSources, topic_feeds
from prometheus_client import CollectorRegistry

from .quotes import PROTO, QUOTES, VOLUMES, compile_quotes, quotes_spec


@pytest.fixture(scope="module")
def quotes(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModuleType, bytes]:
    return compile_quotes(tmp_path_factory.mktemp("quotes"))


def _edited(tmp_path: Path, *edits: tuple[str, str]) -> bytes:
    """The descriptor set of quotes.proto with `edits` (old, new) applied."""
    text = PROTO.read_text()
    for old, new in edits:
        assert old in text
        text = text.replace(old, new)
    proto = tmp_path / "protos" / "larder" / "viewtopic" / "quotes.proto"
    proto.parent.mkdir(parents=True)
    proto.write_text(text)
    desc = tmp_path / "quotes.desc"
    compile_protos([proto], tmp_path, include=[tmp_path / "protos"], descriptor_set_out=desc,
                   python=False)
    return desc.read_bytes()


def test_topic_sources_are_discovered(quotes: tuple[ModuleType, bytes]) -> None:
    model = build_model(quotes_spec(quotes[1]), {(0, 7)})
    (quote,) = model.views[QUOTES].updates
    assert (quote.source, quote.entity_type, quote.table, quote.transform) == (
        SourceKind.TOPIC, "view-quotes", "quotes", False
    )
    # No consumer_group: the view's service name, the same for every pod and restart.
    assert quote.consumer_group == QUOTES
    traded, cancelled = model.views[VOLUMES].updates
    assert (traded.consumer_group, cancelled.consumer_group) == ("volumes", "volumes")
    assert traded.transform and cancelled.transform
    # Update methods are not served, queries are; eventing does not consume them.
    assert model.method(QUOTES, "UpdateQuote") is None
    assert model.method(QUOTES, "Above") is not None
    assert not read_eventing(model).declared
    feeds = topic_feeds(model.views)
    assert [(f.view, f.topic, f.group, len(f.updates)) for f in feeds] == [
        (QUOTES, "view-quotes", QUOTES, 1),
        (VOLUMES, "view-trades", "volumes", 2),
    ]


@pytest.mark.parametrize(
    ("edits", "message"),
    [
        (
            [("rpc UpdateQuote(Quote) returns (Quote)",
              "rpc UpdateQuote(PriceAbove) returns (Quote)")],
            "without transform_updates the topic's message is stored as the row",
        ),
        (
            [('topic: "view-trades" consumer_group: "volumes" };\n    option (akkaserverless'
              '.method).view.update = { table: "volumes" transform_updates: true };\n  }\n'
              '  rpc OnCancelled(Cancelled) returns (Volume) {\n    option (akkaserverless.method)'
              '.eventing.in = { topic: "view-trades" consumer_group: "volumes" };',
              'topic: "view-trades" consumer_group: "volumes" };\n    option (akkaserverless'
              '.method).view.update = { table: "volumes" transform_updates: true };\n  }\n'
              '  rpc OnCancelled(Cancelled) returns (Volume) {\n    option (akkaserverless.method)'
              '.eventing.in = { topic: "view-trades" consumer_group: "other" };')],
            "a view reads a topic in one group",
        ),
        (
            [('consumer_group: "volumes"', f'consumer_group: "{QUOTES}"')],
            f"consumer group '{QUOTES}' is also",
        ),
        (
            [('eventing.in = { topic: "view-quotes" }', 'eventing.in = { topic: "" }')],
            "needs eventing.in naming its source",
        ),
    ],
)
def test_topic_sources_that_cannot_run_are_refused(
    tmp_path: Path, edits: list[tuple[str, str]], message: str
) -> None:
    with pytest.raises(SpecError, match=message):
        build_model(quotes_spec(_edited(tmp_path, *edits)), {(0, 7)})


def _delivery(model: object) -> ViewDelivery:
    views = model.views  # type: ignore[attr-defined]
    return ViewDelivery(
        views, MemoryViewStore(), None, ViewMetrics(CollectorRegistry()),
        load_value=lambda pid: None,  # type: ignore[arg-type,return-value]  # never called
    )


def test_topic_sources_need_kafka_unless_eventing_is_off(
    quotes: tuple[ModuleType, bytes],
) -> None:
    model = build_model(quotes_spec(quotes[1]), {(0, 7)})
    eventing = read_eventing(model)
    with pytest.raises(TopicSourceError, match="no Kafka is configured: set LARDER_KAFKA"):
        TopicSources.for_views(
            model.views, eventing, _delivery(model), KafkaSettings(), CollectorRegistry()
        )
    off = KafkaSettings(turned_off=True)
    assert TopicSources.for_views(
        model.views, eventing, _delivery(model), off, CollectorRegistry()
    ) is None
    on = KafkaSettings(bootstrap_servers="kafka:9092")
    sources = TopicSources.for_views(
        model.views, eventing, _delivery(model), on, CollectorRegistry()
    )
    assert sources is not None and len(sources.feeds) == 2


def test_a_view_may_not_share_its_group_and_topic_with_an_eventing_method(
    quotes: tuple[ModuleType, bytes],
) -> None:
    model = build_model(quotes_spec(quotes[1]), {(0, 7)})
    method = SimpleNamespace(model=SimpleNamespace(path="/shop.Analytics/OnTrade"))
    eventing = EventingSpec(
        (Subscription(method, "view-trades", "volumes"),),  # type: ignore[arg-type]
        (), (),
    )
    with pytest.raises(TopicSourceError, match=re.escape(
        "VolumesView reads 'view-trades' in consumer group 'volumes', which "
        "/shop.Analytics/OnTrade consumes too"
    )):
        TopicSources.for_views(
            model.views, eventing, _delivery(model),
            KafkaSettings(bootstrap_servers="kafka:9092"), CollectorRegistry(),
        )
