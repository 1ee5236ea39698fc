"""One record's fate: command, retries in place, publication, rejection."""

from __future__ import annotations

import logging

import grpc
import pytest
from larder_sidecar.eventing.processing import Backoff, RecordProcessor
from larder_sidecar.eventing.producer import PublishFailed
from larder_sidecar.eventing.spec import EventingSpec, Subscription, read_eventing
from larder_sidecar.invoke import InvokeError
from larder_sidecar.model import UserFunctionModel

from .fakes import FakePublisher, FakeRecord, FakeRunner

NO_WAIT = Backoff(initial=0.0, maximum=0.0)
CE = [("ce-specversion", b"1.0"), ("ce-type", b"evunit.Add")]


@pytest.fixture
def spec(model: UserFunctionModel) -> EventingSpec:
    return read_eventing(model)


def sub(spec: EventingSpec, path: str) -> Subscription:
    return next(s for s in spec.subscriptions if s.method.model.path == path)


def add(model: UserFunctionModel, entity: str = "c1", amount: int = 2) -> bytes:
    return model.methods["/evunit.Cart/AddItem"].input_class(
        id=entity, amount=amount
    ).SerializeToString()


async def test_command_then_reply_published_with_the_entity_as_key(
    model: UserFunctionModel, spec: EventingSpec
) -> None:
    runner, publisher = FakeRunner(reply=b"\x08\x05"), FakePublisher()
    processor = RecordProcessor(spec, runner, publisher, backoff=NO_WAIT)
    await processor.handle(sub(spec, "/evunit.Cart/AddItem"), FakeRecord(add(model), CE))
    assert [c[:2] for c in runner.calls] == [("/evunit.Cart/AddItem", add(model))]
    [(topic, value, key, headers)] = publisher.published
    assert (topic, value, key) == ("totals", b"\x08\x05", b"c1")
    # Deterministic: a redelivered record yields a reply with the same id.
    assert headers["ce-id"] == b"adds-2-41"
    assert headers["ce-subject"] == b"c1"


async def test_transient_failures_retry_in_place_then_succeed(
    model: UserFunctionModel, spec: EventingSpec, caplog: pytest.LogCaptureFixture
) -> None:
    runner = FakeRunner(errors=[
        InvokeError(grpc.StatusCode.UNAVAILABLE, "journal down"),
        InvokeError(grpc.StatusCode.ABORTED, "another writer"),
    ])
    publisher = FakePublisher(failures=[PublishFailed("broker away", retriable=True)])
    processor = RecordProcessor(spec, runner, publisher, backoff=NO_WAIT)
    with caplog.at_level(logging.WARNING):
        await processor.handle(sub(spec, "/evunit.Cart/AddItem"), FakeRecord(add(model), CE))
    assert len(runner.calls) == 3
    assert len(publisher.published) == 1
    assert "adds[2]@41 failed with UNAVAILABLE (journal down); retrying" in caplog.text
    assert "publishing the result of adds[2]@41 to 'totals' failed" in caplog.text


async def test_user_failure_is_logged_and_skipped_without_a_dead_letter_topic(
    model: UserFunctionModel, spec: EventingSpec, caplog: pytest.LogCaptureFixture
) -> None:
    runner = FakeRunner(errors=[InvokeError(grpc.StatusCode.UNKNOWN, "no such item")])
    publisher = FakePublisher()
    processor = RecordProcessor(spec, runner, publisher, backoff=NO_WAIT)
    await processor.handle(sub(spec, "/evunit.Cart/AddItem"), FakeRecord(add(model), CE))
    assert len(runner.calls) == 1
    assert publisher.published == []
    assert ("record adds[2]@41 for /evunit.Cart/AddItem rejected (UNKNOWN): no such item; "
            "skipped") in caplog.text


async def test_malformed_record_goes_to_the_dead_letter_topic_as_it_came(
    model: UserFunctionModel, spec: EventingSpec, caplog: pytest.LogCaptureFixture
) -> None:
    runner, publisher = FakeRunner(), FakePublisher()
    processor = RecordProcessor(spec, runner, publisher, "dlq", backoff=NO_WAIT)
    record = FakeRecord(b"\xff", CE, _key=b"k")
    await processor.handle(sub(spec, "/evunit.Cart/AddItem"), record)
    assert runner.calls == []
    [(topic, value, key, headers)] = publisher.published
    assert (topic, value, key) == ("dlq", b"\xff", b"k")
    assert headers["ce-type"] == b"evunit.Add"
    assert headers["larder-error-reason"] == b"malformed"
    assert headers["larder-error-source"] == b"adds[2]@41"
    assert headers["larder-error-method"] == b"/evunit.Cart/AddItem"
    assert b"not a valid evunit.Add" in headers["larder-error-detail"]
    assert "sent to dead-letter topic 'dlq'" in caplog.text


async def test_action_without_out_publishes_nothing(
    model: UserFunctionModel, spec: EventingSpec
) -> None:
    runner, publisher = FakeRunner(), FakePublisher()
    processor = RecordProcessor(spec, runner, publisher, backoff=NO_WAIT)
    record = FakeRecord(b"hi", [("ce-datacontenttype", b"text/plain")], _topic="words")
    await processor.handle(sub(spec, "/evunit.Echo/Say"), record)
    assert runner.calls[0][0] == "/evunit.Echo/Say"
    assert publisher.published == []


def test_backoff_doubles_up_to_its_maximum() -> None:
    delays = Backoff(0.1, 0.5).delays()
    assert [round(next(delays), 2) for _ in range(5)] == [0.1, 0.2, 0.4, 0.5, 0.5]
