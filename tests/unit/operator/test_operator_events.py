"""Events: who reports them, their type, and what they say."""

from __future__ import annotations

from typing import Any

from larder_operator.events import EventPoster, EventType, condition_event, event_body
from larder_operator.kube import ClusterError
from larder_operator.status import READY, Condition, Reason

BODY = {
    "apiVersion": "larder.dev/v1alpha1",
    "kind": "StatefulFunction",
    "metadata": {"name": "cart", "namespace": "shop", "uid": "u1"},
}


def test_an_event_names_larder_operator_and_the_object() -> None:
    event = event_body(BODY, EventType.WARNING, "InvalidSpec", "bad", now="t1", instance="op-0")
    assert event["source"] == {"component": "larder-operator"}
    assert event["reportingComponent"] == "larder-operator"
    assert event["reportingInstance"] == "op-0"
    assert event["involvedObject"] == {
        "apiVersion": "larder.dev/v1alpha1",
        "kind": "StatefulFunction",
        "name": "cart",
        "namespace": "shop",
        "uid": "u1",
    }
    assert event["metadata"] == {"generateName": "cart.", "namespace": "shop"}
    assert (event["type"], event["reason"], event["message"]) == ("Warning", "InvalidSpec", "bad")


def test_a_long_message_keeps_its_start_and_end() -> None:
    message = "start " + "x" * 5000 + " end"
    cut = event_body(BODY, EventType.NORMAL, "R", message, now="t", instance="i")["message"]
    assert len(cut) <= 1024
    assert cut.startswith("start ") and cut.endswith(" end")


def test_good_news_is_normal_bad_news_a_warning() -> None:
    up = Condition(READY, True, Reason.AVAILABLE, "2/2 pods ready")
    down = Condition(READY, False, Reason.PODS_NOT_READY, "1/2")
    assert condition_event(up) == (EventType.NORMAL, "Available", "Ready=True: 2/2 pods ready")
    assert condition_event(down) == (EventType.WARNING, "PodsNotReady", "Ready=False: 1/2")


class _Refusing:
    async def create(self, path: str, obj: dict[str, Any]) -> dict[str, Any]:
        raise ClusterError("POST failed with HTTP 403")


async def test_a_failed_post_is_logged_not_raised(caplog: Any) -> None:
    poster = EventPoster(_Refusing(), "op-0")  # type: ignore[arg-type]
    await poster.post(BODY, EventType.NORMAL, "Available", "fine", "t1")
    assert "could not post the Event Normal Available" in caplog.text
