"""Keys derived from consumed records: an entity command redelivered is applied once."""

from __future__ import annotations

import logging

import grpc
import pytest
from larder_sidecar.entities.idempotency import ALREADY_APPLIED, KEY_REUSED
from larder_sidecar.eventing.processing import Backoff, RecordProcessor
from larder_sidecar.eventing.settings import KafkaSettingsError, load_kafka_settings
from larder_sidecar.eventing.spec import EventingSpec, Subscription, read_eventing
from larder_sidecar.invoke import InvokeError
from larder_sidecar.model import IDEMPOTENCY_KEY, UserFunctionModel

from .fakes import FakePublisher, FakeRecord, FakeRunner

NO_WAIT = Backoff(initial=0.0, maximum=0.0)
ADD_ITEM = "/evunit.Cart/AddItem"


@pytest.fixture
def spec(model: UserFunctionModel) -> EventingSpec:
    return read_eventing(model)


def sub(spec: EventingSpec, path: str) -> Subscription:
    return next(s for s in spec.subscriptions if s.method.model.path == path)


def add(model: UserFunctionModel, entity: str = "c1") -> bytes:
    return model.methods[ADD_ITEM].input_class(id=entity, amount=2).SerializeToString()


def event(event_id: bytes, source: bytes = b"/shop") -> list[tuple[str, bytes]]:
    return [
        ("ce-specversion", b"1.0"),
        ("ce-type", b"evunit.Add"),
        ("ce-id", event_id),
        ("ce-source", source),
    ]


def key_of(runner: FakeRunner, call: int = 0) -> str | None:
    keys = [v for k, v in runner.calls[call][2] if k == IDEMPOTENCY_KEY]
    assert len(keys) <= 1
    return keys[0] if keys else None


async def test_a_cloudevent_is_keyed_by_source_and_id_wherever_it_lands(
    model: UserFunctionModel, spec: EventingSpec
) -> None:
    runner, publisher = FakeRunner(reply=b"\x08\x05"), FakePublisher()
    processor = RecordProcessor(spec, runner, publisher, backoff=NO_WAIT)
    # A producer's retry: the same event at two offsets; then a different event.
    for record in (
        FakeRecord(add(model), event(b"e-1"), _offset=41),
        FakeRecord(add(model), event(b"e-1"), _offset=42),
        FakeRecord(add(model), event(b"e-2"), _offset=43),
        FakeRecord(add(model), event(b"e-1", b"/other"), _offset=44),
    ):
        await processor.handle(sub(spec, ADD_ITEM), record)
    keys = [key_of(runner, i) for i in range(4)]
    assert keys[0] is not None and keys[0].startswith("ce:")
    assert keys[0] == keys[1]
    assert len({keys[0], keys[2], keys[3]}) == 3
    # The reply to each delivery of one event has one ce-id, so the consumers of the
    # out topic can drop the second; another event's reply has its own.
    ids = [headers["ce-id"] for _, _, _, headers in publisher.published]
    assert ids[0] == ids[1] and len({ids[0], ids[2], ids[3]}) == 3
    assert ids[0].startswith(b"larder-")


async def test_a_record_without_an_event_id_is_keyed_by_its_place(
    model: UserFunctionModel, spec: EventingSpec
) -> None:
    runner, publisher = FakeRunner(), FakePublisher()
    processor = RecordProcessor(spec, runner, publisher, backoff=NO_WAIT)
    headers = [("ce-specversion", b"1.0"), ("ce-type", b"evunit.Add")]
    await processor.handle(sub(spec, ADD_ITEM), FakeRecord(add(model), headers))
    assert key_of(runner) == "kafka:adds/2/41"
    # The reply's id is the place, as before keys existed.
    assert publisher.published[0][3]["ce-id"] == b"adds-2-41"


async def test_a_very_long_topic_name_gives_a_bounded_key(
    model: UserFunctionModel, spec: EventingSpec
) -> None:
    runner, publisher = FakeRunner(), FakePublisher()
    processor = RecordProcessor(spec, runner, publisher, backoff=NO_WAIT)
    record = FakeRecord(add(model), [("ce-type", b"evunit.Add")], _topic="t" * 249)
    await processor.handle(sub(spec, ADD_ITEM), record)
    key = key_of(runner)
    assert key is not None and key.startswith("kafka:") and len(key) <= 256


async def test_the_records_own_key_wins(model: UserFunctionModel, spec: EventingSpec) -> None:
    runner, publisher = FakeRunner(), FakePublisher()
    processor = RecordProcessor(spec, runner, publisher, backoff=NO_WAIT)
    headers = [*event(b"e-1"), (IDEMPOTENCY_KEY, b"client-chosen")]
    await processor.handle(sub(spec, ADD_ITEM), FakeRecord(add(model), headers))
    assert key_of(runner) == "client-chosen"


async def test_actions_and_a_turned_off_switch_get_no_key(
    model: UserFunctionModel, spec: EventingSpec
) -> None:
    runner, publisher = FakeRunner(), FakePublisher()
    processor = RecordProcessor(spec, runner, publisher, backoff=NO_WAIT)
    record = FakeRecord(b"hi", [("ce-datacontenttype", b"text/plain")], _topic="words")
    await processor.handle(sub(spec, "/evunit.Echo/Say"), record)
    assert key_of(runner) is None

    off = RecordProcessor(spec, runner, publisher, backoff=NO_WAIT, deduplicate=False)
    await off.handle(sub(spec, ADD_ITEM), FakeRecord(add(model), event(b"e-1")))
    assert key_of(runner, 1) is None


async def test_an_event_applied_before_whose_reply_was_not_kept_is_finished_quietly(
    model: UserFunctionModel, spec: EventingSpec, caplog: pytest.LogCaptureFixture
) -> None:
    applied = InvokeError(
        grpc.StatusCode.ALREADY_EXISTS,
        f"{ALREADY_APPLIED} 'ce:x' was applied already; its reply (70000 bytes) was larger",
    )
    runner, publisher = FakeRunner(errors=[applied]), FakePublisher()
    processor = RecordProcessor(spec, runner, publisher, "dlq", backoff=NO_WAIT)
    with caplog.at_level(logging.WARNING):
        await processor.handle(sub(spec, ADD_ITEM), FakeRecord(add(model), event(b"e-1")))
    assert publisher.published == []  # neither a reply nor a dead letter
    assert "was applied before" in caplog.text and "not published again" in caplog.text


async def test_a_user_failure_with_already_exists_is_still_rejected(
    model: UserFunctionModel, spec: EventingSpec
) -> None:
    failure = InvokeError(grpc.StatusCode.ALREADY_EXISTS, "item exists")
    runner, publisher = FakeRunner(errors=[failure]), FakePublisher()
    processor = RecordProcessor(spec, runner, publisher, "dlq", backoff=NO_WAIT)
    await processor.handle(sub(spec, ADD_ITEM), FakeRecord(add(model), event(b"e-1")))
    [(topic, _, _, headers)] = publisher.published
    assert topic == "dlq" and headers["larder-error-detail"] == b"item exists"


async def test_a_reused_event_id_is_dead_lettered_naming_the_producers_fault(
    model: UserFunctionModel, spec: EventingSpec
) -> None:
    reused = InvokeError(grpc.StatusCode.FAILED_PRECONDITION, f"{KEY_REUSED}: this entity")
    runner, publisher = FakeRunner(errors=[reused]), FakePublisher()
    processor = RecordProcessor(spec, runner, publisher, "dlq", backoff=NO_WAIT)
    await processor.handle(sub(spec, ADD_ITEM), FakeRecord(add(model), event(b"e-1")))
    [(topic, _, _, headers)] = publisher.published
    assert topic == "dlq"
    assert b"same pair, which CloudEvents requires to be unique" in headers["larder-error-detail"]


def test_the_switch_is_parsed_and_checked() -> None:
    assert load_kafka_settings({}).deduplicate is True
    assert load_kafka_settings({"LARDER_KAFKA_DEDUPLICATE": "off"}).deduplicate is False
    with pytest.raises(KafkaSettingsError, match="LARDER_KAFKA_DEDUPLICATE='maybe'"):
        load_kafka_settings({"LARDER_KAFKA_DEDUPLICATE": "maybe"})
