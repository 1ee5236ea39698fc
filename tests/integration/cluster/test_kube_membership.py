"""Kubernetes membership against a real API server, as the function's ServiceAccount.

The ServiceAccount, Role and RoleBinding are the operator's own rendering, so these tests
also prove that the Role grants what membership calls, and no more. There is no kubelet
here, so the EndpointSlices are written by the test, as the EndpointSlice controller
would write them for the headless Service.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_asyncio import config as kube_config
from kubernetes_asyncio.client import ApiClient, Configuration
from larder_operator.children import (
    FunctionRef,
    headless_service_name,
    render_children,
    sidecar_account_name,
)
from larder_operator.settings import OperatorSettings
from larder_sidecar.cluster.kube_membership import (
    ApiEndpointSlices,
    EndpointSliceApi,
    KubernetesMembership,
    MembershipUnavailableError,
    SliceEvent,
)
from larder_sidecar.cluster.membership import Member, MemberId, Membership

from tests.infra.kube import KubeControlPlane

FUNCTION = "cart"
SERVICE = headless_service_name(FUNCTION)
ACCOUNT = sidecar_account_name(FUNCTION)


def kubectl(kube: KubeControlPlane, *args: str, stdin: str | None = None) -> str:
    done = subprocess.run(
        ["kubectl", *args],
        input=stdin,
        env=kube.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, f"kubectl {' '.join(args)} failed: {done.stderr}"
    return done.stdout


class Cluster:
    """One namespace with the operator's RBAC for `cart` and its headless Service."""

    def __init__(self, kube: KubeControlPlane, namespace: str, directory: Path) -> None:
        self.kube = kube
        self.namespace = namespace
        self._directory = directory

    def kubeconfig_for(self, account: str) -> Path:
        """A kubeconfig that acts as `account`, with a fresh token."""
        token = kubectl(
            self.kube, "create", "token", account, "-n", self.namespace, "--duration=1h"
        ).strip()
        config = yaml.safe_load(self.kube.kubeconfig.read_text())
        user = config["contexts"][0]["context"]["user"]
        config["users"] = [{"name": user, "user": {"token": token}}]
        path = self._directory / f"{account}.kubeconfig"
        path.write_text(yaml.safe_dump(config))
        return path

    async def apply(self, manifest: dict[str, Any]) -> None:
        await asyncio.to_thread(
            kubectl, self.kube, "apply", "-n", self.namespace, "-f", "-", stdin=json.dumps(manifest)
        )

    async def delete(self, kind: str, name: str) -> None:
        await asyncio.to_thread(kubectl, self.kube, "delete", kind, name, "-n", self.namespace)

    def can(self, account: str, verb: str, resource: str) -> bool:
        done = subprocess.run(
            [
                "kubectl", "auth", "can-i", verb, resource, "-n", self.namespace,
                f"--as=system:serviceaccount:{self.namespace}:{account}",
            ],
            env=self.kube.env, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        return done.stdout.strip() == "yes"


@pytest.fixture
def cluster(kube: KubeControlPlane, tmp_path: Path) -> Iterator[Cluster]:
    namespace = f"membership-{uuid.uuid4().hex[:8]}"
    kubectl(kube, "create", "namespace", namespace)
    children = render_children(
        FunctionRef(FUNCTION, namespace, "uid-unused"),
        {"containers": [{"name": "fn", "image": "example/cart:1"}]},
        None,
        None,
        OperatorSettings(sidecar_image="larder:test"),
    )
    rbac = [children.service_account, children.role, children.role_binding]
    for obj in rbac:
        # No StatefulFunction owns them here; the garbage collector would delete them.
        del obj["metadata"]["ownerReferences"]
    # The headless Service as the operator renders it, minus the selector: without one the
    # EndpointSlice controller leaves the slices to this test.
    service = {**children.headless_service}
    del service["metadata"]["ownerReferences"]
    service["spec"] = {k: v for k, v in service["spec"].items() if k != "selector"}
    kubectl(kube, "apply", "-f", "-", stdin=yaml.safe_dump_all([*rbac, service]))
    kubectl(kube, "create", "serviceaccount", "nobody", "-n", namespace)
    try:
        yield Cluster(kube, namespace, tmp_path)
    finally:
        kubectl(kube, "delete", "namespace", namespace, "--wait=false")


def endpoint(
    pod: str, ip: str, *, ready: bool = True, serving: bool = True, terminating: bool = False
) -> dict[str, Any]:
    return {
        "addresses": [ip],
        "conditions": {"ready": ready, "serving": serving, "terminating": terminating},
        "targetRef": {"kind": "Pod", "name": pod},
    }


def endpoint_slice(name: str, *endpoints: dict[str, Any], service: str = SERVICE) -> dict[str, Any]:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/service-name": service,
                "endpointslice.kubernetes.io/managed-by": "larder-tests",
            },
        },
        "addressType": "IPv4",
        "ports": [{"name": "internal", "port": 9604, "protocol": "TCP"}],
        "endpoints": list(endpoints),
    }


def api_as(
    cluster: Cluster, account: str
) -> contextlib.AbstractAsyncContextManager[EndpointSliceApi]:
    kubeconfig = cluster.kubeconfig_for(account)

    @contextlib.asynccontextmanager
    async def connect() -> AsyncIterator[EndpointSliceApi]:
        configuration = Configuration()
        await kube_config.load_kube_config(
            config_file=str(kubeconfig), client_configuration=configuration
        )
        client = ApiClient(configuration)
        try:
            yield ApiEndpointSlices(client, cluster.namespace, SERVICE)
        finally:
            await client.close()

    return connect()


async def next_snapshot(snapshots: AsyncGenerator[Membership, None]) -> Membership:
    return await asyncio.wait_for(anext(snapshots), timeout=30)


def member(pod: str, ip: str, terminating: bool = False) -> Member:
    return Member(MemberId(pod), f"{ip}:9604", terminating)


async def test_snapshots_follow_the_endpoint_conditions(cluster: Cluster) -> None:
    a, b, c = (
        endpoint("cart-a", "10.1.0.1"),
        endpoint("cart-b", "10.1.0.2"),
        endpoint("cart-c", "10.1.0.3"),
    )
    await cluster.apply(endpoint_slice("cart-internal-1", a, b))
    await cluster.apply(endpoint_slice("other-1", endpoint("other-z", "10.1.0.9"), service="other"))
    api = api_as(cluster, ACCOUNT)
    source = KubernetesMembership(cluster.namespace, SERVICE, api=lambda: api)
    async with contextlib.aclosing(source.snapshots()) as snapshots:
        first = await next_snapshot(snapshots)
        assert (first.version, first.members) == (
            1,
            (member("cart-a", "10.1.0.1"), member("cart-b", "10.1.0.2")),
        )

        # The pod is deleted: serving drops, terminating rises; `ready` stays true because
        # the headless Service publishes not-ready addresses.
        leaving = endpoint("cart-b", "10.1.0.2", ready=True, serving=False, terminating=True)
        await cluster.apply(endpoint_slice("cart-internal-1", a, leaving))
        second = await next_snapshot(snapshots)
        assert second.version == 2
        assert second.members[1] == member("cart-b", "10.1.0.2", terminating=True)
        assert second.active == ("cart-a",)

        await cluster.apply(endpoint_slice("cart-internal-2", c))
        third = await next_snapshot(snapshots)
        assert [m.id for m in third.members] == ["cart-a", "cart-b", "cart-c"]

        # The pod is gone.
        await cluster.apply(endpoint_slice("cart-internal-1", a))
        fourth = await next_snapshot(snapshots)
        assert fourth.members == (member("cart-a", "10.1.0.1"), member("cart-c", "10.1.0.3"))

        # Another Service's slice changes nothing; the next snapshot is the next real change.
        await cluster.apply(endpoint_slice("other-1", service="other"))
        await cluster.delete("endpointslice", "cart-internal-2")
        fifth = await next_snapshot(snapshots)
        assert (fifth.version, fifth.members) == (5, (member("cart-a", "10.1.0.1"),))


class CountingApi:
    """The real API, counting lists and watches (the first watch, and each resumed one)."""

    def __init__(self, api: EndpointSliceApi) -> None:
        self._api = api
        self.lists = 0
        self.watches: asyncio.Queue[str] = asyncio.Queue()

    async def list(self) -> tuple[list[Mapping[str, Any]], str]:
        self.lists += 1
        return await self._api.list()

    async def watch(self, resource_version: str) -> AsyncIterator[SliceEvent]:
        self.watches.put_nowait(resource_version)
        async for event in self._api.watch(resource_version):
            yield event


async def test_watches_the_server_ends_are_resumed_without_a_new_list(cluster: Cluster) -> None:
    await cluster.apply(endpoint_slice("cart-internal-1", endpoint("cart-a", "10.1.0.1")))
    kubeconfig = cluster.kubeconfig_for(ACCOUNT)
    counting: list[CountingApi] = []

    @contextlib.asynccontextmanager
    async def connect() -> AsyncIterator[EndpointSliceApi]:
        configuration = Configuration()
        await kube_config.load_kube_config(
            config_file=str(kubeconfig), client_configuration=configuration
        )
        async with ApiClient(configuration) as client:
            # The server ends each watch after 2 s.
            api = CountingApi(ApiEndpointSlices(client, cluster.namespace, SERVICE, 2))
            counting.append(api)
            yield api

    # A source makes progress while its consumer waits for the next snapshot: consume in
    # a task of its own, as the sidecar will.
    received: asyncio.Queue[Membership] = asyncio.Queue()

    async def consume() -> None:
        source = KubernetesMembership(cluster.namespace, SERVICE, api=connect)
        async with contextlib.aclosing(source.snapshots()) as snapshots:
            async for snapshot in snapshots:
                received.put_nowait(snapshot)

    consumer = asyncio.create_task(consume())
    try:
        assert (await asyncio.wait_for(received.get(), 30)).version == 1
        (api,) = counting
        resumed_from = [await asyncio.wait_for(api.watches.get(), 30) for _ in range(3)]
        await cluster.apply(
            endpoint_slice(
                "cart-internal-1", endpoint("cart-a", "10.1.0.1"), endpoint("cart-b", "10.1.0.2")
            )
        )
        second = await asyncio.wait_for(received.get(), 30)
        assert [m.id for m in second.members] == ["cart-a", "cart-b"]
        assert api.lists == 1
        assert all(resumed_from), resumed_from
    finally:
        consumer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await consumer


async def test_the_operators_role_grants_reading_endpointslices_and_nothing_else(
    cluster: Cluster,
) -> None:
    for verb in ("get", "list", "watch"):
        assert cluster.can(ACCOUNT, verb, "endpointslices.discovery.k8s.io")
    for verb, resource in (
        ("create", "endpointslices.discovery.k8s.io"),
        ("list", "pods"),
        ("list", "services"),
        ("get", "secrets"),
    ):
        assert not cluster.can(ACCOUNT, verb, resource), (verb, resource)


async def test_without_the_role_membership_says_what_is_missing(cluster: Cluster) -> None:
    async with api_as(cluster, "nobody") as api:
        with pytest.raises(MembershipUnavailableError) as caught:
            await api.list()
    message = str(caught.value)
    assert "HTTP 403" in message
    assert "needs get, list and watch on discovery.k8s.io endpointslices" in message
