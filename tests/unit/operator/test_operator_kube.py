"""How API errors are told apart: the object is at fault, it changed meanwhile, or retry."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes_asyncio.client.exceptions import ApiException
from larder_operator.kube import (
    ApiCluster,
    ClusterError,
    ConflictError,
    RejectedError,
    collection_path,
)

DEPLOYMENT = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "cart", "namespace": "ns"},
}


class _Client:
    """Answers every call with one API error, as kubernetes_asyncio raises it."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.body = json.dumps({"kind": "Status", "message": message, "code": status}).encode()

    async def call_api(self, *args: Any, **kwargs: Any) -> Any:
        error = ApiException(status=self.status, reason="Refused")
        error.body = self.body
        raise error


def _cluster(status: int, message: str) -> ApiCluster:
    return ApiCluster(_Client(status, message))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("status", "message"),
    [
        (422, 'Deployment.apps "cart" is invalid: ...volumeMounts[0].name: Not found: "data"'),
        (400, "the object could not be decoded"),
        (
            500,
            "failed to convert new object (ns/cart; apps/v1, Kind=Deployment) to proper "
            "version: unable to convert unstructured object to apps/v1, Kind=Deployment: "
            "quantities must match the regular expression",
        ),
    ],
)
async def test_the_object_at_fault_is_a_rejection_with_the_servers_words(
    status: int, message: str
) -> None:
    with pytest.raises(RejectedError) as caught:
        await _cluster(status, message).apply(dict(DEPLOYMENT))
    assert caught.value.api_message == message
    assert f"HTTP {status}" in str(caught.value)


async def test_a_server_failure_is_worth_retrying() -> None:
    with pytest.raises(ClusterError) as caught:
        await _cluster(500, "etcdserver: request timed out").apply(dict(DEPLOYMENT))
    assert not isinstance(caught.value, RejectedError)


async def test_a_stale_write_is_a_conflict() -> None:
    with pytest.raises(ConflictError):
        await _cluster(409, "the object has been modified").patch("/x", {"metadata": {}})


async def test_gone_is_none_or_empty_not_an_error() -> None:
    assert await _cluster(404, "not found").patch("/x", {"metadata": {}}) is None
    assert await _cluster(404, "not found").list("/x") == []
    await _cluster(404, "not found").delete("/x", "uid-1")


async def test_deleting_what_was_replaced_meanwhile_is_a_conflict() -> None:
    with pytest.raises(ConflictError):
        await _cluster(409, "Precondition failed: UID in precondition: uid-1").delete(
            "/x", "uid-1"
        )


class _Recorder:
    """Answers every call with an empty list and keeps what was asked."""

    def __init__(self) -> None:
        self.calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    async def call_api(self, *args: Any, **kwargs: Any) -> Any:
        self.calls.append((args, kwargs))
        return {"items": []}


async def test_a_label_selector_is_a_query_parameter_and_delete_has_a_precondition() -> None:
    client = _Recorder()
    cluster = ApiCluster(client)  # type: ignore[arg-type]
    await cluster.list("/apis/apps/v1/namespaces/ns/replicasets", "larder.dev/function=cart")
    await cluster.delete("/apis/policy/v1/namespaces/ns/poddisruptionbudgets/cart", "uid-1")
    (list_args, list_kwargs), (delete_args, delete_kwargs) = client.calls
    assert list_args[:2] == ("/apis/apps/v1/namespaces/ns/replicasets", "GET")
    assert list_kwargs["query_params"] == [("labelSelector", "larder.dev/function=cart")]
    assert delete_args[1] == "DELETE"
    assert delete_kwargs["body"]["preconditions"] == {"uid": "uid-1"}


def test_collection_paths() -> None:
    assert collection_path("v1", "Event", "ns") == "/api/v1/namespaces/ns/events"
    assert collection_path("larder.dev/v1alpha1", "StatefulFunction", "ns") == (
        "/apis/larder.dev/v1alpha1/namespaces/ns/statefulfunctions"
    )
