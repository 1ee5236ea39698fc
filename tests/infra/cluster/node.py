"""A Node object kept alive the way a kubelet keeps it: Ready status and a Lease."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import platform
from datetime import UTC, datetime
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

log = logging.getLogger(__name__)

LEASE_NAMESPACE = "kube-node-lease"
LEASE_DURATION_S = 40
RENEW_EVERY_S = 10.0


def _micro_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def node_body(name: str, host_ip: str, kubelet_port: int, pod_cidr: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64" if platform.machine() == "x86_64" else "arm64",
                "larder.dev/test-node": "true",
            },
        },
        "spec": {"podCIDR": pod_cidr, "podCIDRs": [pod_cidr]},
    }


def node_status(host_ip: str, kubelet_port: int) -> dict[str, Any]:
    cpus = str(os.cpu_count() or 1)
    resources = {"cpu": cpus, "memory": "8Gi", "pods": "110", "ephemeral-storage": "50Gi"}
    stamp = _now()

    def condition(kind: str, status: str, reason: str, message: str) -> dict[str, Any]:
        return {
            "type": kind,
            "status": status,
            "reason": reason,
            "message": message,
            "lastHeartbeatTime": stamp,
            "lastTransitionTime": stamp,
        }

    return {
        "capacity": resources,
        "allocatable": resources,
        "addresses": [{"type": "InternalIP", "address": host_ip}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": kubelet_port}},
        "nodeInfo": {
            "machineID": "",
            "systemUUID": "",
            "bootID": "",
            "kernelVersion": platform.release(),
            "osImage": "larder test node agent",
            "containerRuntimeVersion": "buildah://",
            "kubeletVersion": "v0.0.0-larder",
            "kubeProxyVersion": "",
            "operatingSystem": "linux",
            "architecture": "amd64" if platform.machine() == "x86_64" else "arm64",
        },
        "conditions": [
            condition("Ready", "True", "KubeletReady", "the larder node agent posts ready status"),
            condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "ok"),
            condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "ok"),
            condition("PIDPressure", "False", "KubeletHasSufficientPID", "ok"),
        ],
    }


class NodeHeartbeat:
    """Registers the Node and renews its Lease and Ready status until closed."""

    def __init__(
        self, api: client.ApiClient, name: str, host_ip: str, kubelet_port: int, pod_cidr: str
    ) -> None:
        # Typed as Any: these calls pass plain dicts, which the client accepts but its
        # stubs (model classes only) do not describe.
        self._core: Any = client.CoreV1Api(api)
        self._coordination: Any = client.CoordinationV1Api(api)
        self.name = name
        self._host_ip = host_ip
        self._kubelet_port = kubelet_port
        self._pod_cidr = pod_cidr
        self._task: asyncio.Task[None] | None = None

    async def register(self) -> None:
        body = node_body(self.name, self._host_ip, self._kubelet_port, self._pod_cidr)
        with contextlib.suppress(ApiException):
            await self._core.delete_node(self.name)  # a leftover of an earlier agent
        await self._core.create_node(body)
        await self._post_status()
        await self._renew_lease()
        self._task = asyncio.create_task(self._loop(), name=f"heartbeat {self.name}")

    async def _post_status(self) -> None:
        await self._core.patch_node_status(
            self.name,
            {"status": node_status(self._host_ip, self._kubelet_port)},
            _content_type="application/merge-patch+json",
        )

    async def _renew_lease(self) -> None:
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self.name, "namespace": LEASE_NAMESPACE},
            "spec": {
                "holderIdentity": self.name,
                "leaseDurationSeconds": LEASE_DURATION_S,
                "renewTime": _micro_now(),
            },
        }
        try:
            await self._coordination.patch_namespaced_lease(
                self.name,
                LEASE_NAMESPACE,
                {"spec": body["spec"]},
                _content_type="application/merge-patch+json",
            )
        except ApiException as e:
            if e.status != 404:
                raise
            await self._coordination.create_namespaced_lease(LEASE_NAMESPACE, body)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(RENEW_EVERY_S)
            try:
                await self._renew_lease()
                await self._post_status()
            except (ApiException, OSError) as e:
                log.warning("node %s: heartbeat failed, retrying: %s", self.name, e)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(ApiException, OSError):
            await self._coordination.delete_namespaced_lease(self.name, LEASE_NAMESPACE)
        with contextlib.suppress(ApiException, OSError):
            await self._core.delete_node(self.name)
