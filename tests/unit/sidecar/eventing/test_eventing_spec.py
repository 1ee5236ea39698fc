"""Reading `(akkaserverless.method).eventing` from the discovered descriptors."""

from __future__ import annotations

import pytest
from larder_sidecar.eventing import Eventing, EventingError, KafkaSettings
from larder_sidecar.eventing.spec import read_eventing
from larder_sidecar.model import UserFunctionModel


def test_subscriptions_publications_groups_and_problems(model: UserFunctionModel) -> None:
    spec = read_eventing(model)
    subs = {(s.method.model.path, s.topic, s.consumer_group) for s in spec.subscriptions}
    assert subs == {
        ("/evunit.Cart/AddItem", "adds", "carts"),
        ("/evunit.Echo/Say", "words", "evunit.Echo"),  # the service is the default group
        ("/evunit.Echo/Anything", "anything", "evunit.Echo"),
    }
    assert [(p.method.model.path, p.topic) for p in spec.publications] == [
        ("/evunit.Cart/AddItem", "totals")
    ]
    assert spec.groups()["evunit.Echo"].keys() == {"words", "anything"}
    assert spec.problems == ()
    assert spec.declared


def test_unsupported_sources_are_refused(model_with_journal_source: UserFunctionModel) -> None:
    assert read_eventing(model_with_journal_source).problems == (
        "evunit.Projection.FromJournal: eventing.in from an event sourced entity is not "
        "supported by this sidecar yet (only topics)",
    )
    with pytest.raises(EventingError, match=r"FromJournal: eventing\.in from an event sourced"):
        Eventing.for_model(model_with_journal_source, KafkaSettings(bootstrap_servers="k:9092"))


def test_eventing_without_kafka_is_a_clear_start_up_error(model: UserFunctionModel) -> None:
    with pytest.raises(EventingError) as caught:
        Eventing.for_model(model, KafkaSettings())
    assert str(caught.value) == (
        "/evunit.Cart/AddItem, /evunit.Echo/Anything, /evunit.Echo/Say use eventing (Kafka "
        "topics), but no Kafka is configured: set LARDER_KAFKA_BOOTSTRAP_SERVERS (or "
        "bootstrap.servers in LARDER_KAFKA_PROPERTIES_FILE), or LARDER_EVENTING=off to serve "
        "them without topics"
    )


def test_eventing_turned_off_serves_without_topics(model: UserFunctionModel) -> None:
    assert Eventing.for_model(model, KafkaSettings(turned_off=True)) is None


def test_kafka_settings_make_an_eventing(model: UserFunctionModel) -> None:
    eventing = Eventing.for_model(model, KafkaSettings(bootstrap_servers="k:1"))
    assert eventing is not None
    assert len(eventing.spec.subscriptions) == 3
