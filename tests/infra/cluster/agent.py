"""The node agent: plays the kubelet's part for one or more Nodes of a test cluster.

It registers the Nodes, watches the pods the scheduler binds to them, runs each
with a PodRunner, writes their status, serves container logs to the API server,
and on stop removes everything it made (containers, namespaces, veths, bridge,
Node and Lease objects).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client, config, watch
from kubernetes_asyncio.client.exceptions import ApiException

from tests.infra.cluster import podspec, runtime
from tests.infra.cluster.containers import Container
from tests.infra.cluster.logserver import LogServer, self_signed
from tests.infra.cluster.netns import Network, NetworkConfig
from tests.infra.cluster.node import NodeHeartbeat
from tests.infra.cluster.pods import PodContext, PodRunner

log = logging.getLogger(__name__)

HOST_IP = "127.0.0.1"
STOP_GRACE_CAP_S = 5.0


@dataclass(frozen=True)
class AgentSettings:
    kubeconfig: Path
    workdir: Path
    api_port: int
    forwarded_ports: tuple[int, ...]
    node_names: tuple[str, ...] = ("larder-node-0",)
    kubelet_ports: tuple[int, ...] = ()
    network: NetworkConfig = field(default_factory=NetworkConfig)


class ApiLookup:
    """podspec.Lookup over the API server."""

    def __init__(self, api: client.ApiClient) -> None:
        self._core: Any = client.CoreV1Api(api)  # dict bodies: see node.NodeHeartbeat

    async def config_map(self, namespace: str, name: str) -> Mapping[str, str] | None:
        try:
            found = await self._core.read_namespaced_config_map(name, namespace)
        except ApiException as e:
            if e.status == 404:
                return None
            raise
        return dict(found.data or {})

    async def secret(self, namespace: str, name: str) -> Mapping[str, str] | None:
        try:
            found = await self._core.read_namespaced_secret(name, namespace)
        except ApiException as e:
            if e.status == 404:
                return None
            raise
        return podspec.decode_secret(dict(found.data or {}))

    async def token(
        self,
        namespace: str,
        account: str,
        pod: Mapping[str, Any],
        audience: str | None,
        seconds: int,
    ) -> str:
        body = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "audiences": [audience] if audience else None,
                "expirationSeconds": max(seconds, 600),
                "boundObjectRef": {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "name": pod["metadata"]["name"],
                    "uid": pod["metadata"]["uid"],
                },
            },
        }
        reply = await self._core.create_namespaced_service_account_token(account, namespace, body)
        return str(reply.status.token)


class NodeAgent:
    def __init__(self, settings: AgentSettings) -> None:
        self.settings = settings
        self.network = Network(settings.network)
        self._api: client.ApiClient | None = None
        self._runners: dict[str, PodRunner] = {}  # by pod uid
        self._stopping: dict[str, asyncio.Task[None]] = {}
        self._heartbeats: list[NodeHeartbeat] = []
        self._log_servers: list[LogServer] = []
        self._watches: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self._api = await config.new_client_from_config(str(self.settings.kubeconfig))
        await self._remove_leftover_containers()
        await self.network.setup()
        lookup = ApiLookup(self._api)
        tls = self_signed(self.settings.workdir / "pki", HOST_IP)
        subnet = self.settings.network.subnet
        for name, port in zip(self.settings.node_names, self.settings.kubelet_ports, strict=True):
            server = LogServer(self._find, HOST_IP, port, tls)
            await server.start()
            self._log_servers.append(server)
            heartbeat = NodeHeartbeat(self._api, name, HOST_IP, port, subnet)
            await heartbeat.register()
            self._heartbeats.append(heartbeat)
            ctx = PodContext(
                node_name=name,
                host_ip=HOST_IP,
                network=self.network,
                lookup=lookup,
                workdir=self.settings.workdir,
                forwarded_ports=self.settings.forwarded_ports,
                api_port=self.settings.api_port,
                write_status=self._write_status,
                record_event=self._record_event,
                container_prefix=self._container_prefix,
            )
            self._watches.append(asyncio.create_task(self._watch(ctx), name=f"watch {name}"))

    def _core_api(self) -> Any:
        # Any: the calls pass plain dict bodies, which the client's stubs do not describe.
        assert self._api is not None
        return client.CoreV1Api(self._api)

    def _find(self, namespace: str, pod: str, container: str) -> Container | None:
        for runner in self._runners.values():
            if runner.namespace == namespace and runner.name == pod:
                return runner.container(container)
        return None

    # -- pods -----------------------------------------------------------------------------

    async def _watch(self, ctx: PodContext) -> None:
        assert self._api is not None
        core = client.CoreV1Api(self._api)
        selector = f"spec.nodeName={ctx.node_name}"
        while True:
            try:
                async with watch.Watch() as stream:
                    async for event in stream.stream(
                        core.list_pod_for_all_namespaces,
                        field_selector=selector,
                        timeout_seconds=300,
                    ):
                        pod = event.get("raw_object") or self._api.sanitize_for_serialization(
                            event["object"]
                        )
                        self._on_pod(str(event["type"]), pod, ctx)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("pod watch of %s failed, restarting: %s", ctx.node_name, e)
                await asyncio.sleep(1.0)

    def _on_pod(self, kind: str, pod: dict[str, Any], ctx: PodContext) -> None:
        uid = str(pod["metadata"]["uid"])
        runner = self._runners.get(uid)
        if kind == "DELETED":
            if runner is not None:
                self._begin_stop(runner, 0.0, delete=False)
            return
        if pod["metadata"].get("deletionTimestamp"):
            if runner is not None:
                grace = pod["metadata"].get("deletionGracePeriodSeconds")
                self._begin_stop(runner, float(grace if grace is not None else runner.grace_s))
            elif uid not in self._stopping:
                # Never started here (or already cleaned): only the final delete is left.
                task = asyncio.create_task(self._final_delete(pod))
                self._stopping[uid] = task
                task.add_done_callback(lambda _t: self._stopping.pop(uid, None))
            return
        phase = (pod.get("status") or {}).get("phase")
        if runner is None and phase not in ("Succeeded", "Failed") and uid not in self._stopping:
            runner = PodRunner(pod, ctx)
            self._runners[uid] = runner
            runner.start()

    def _begin_stop(self, runner: PodRunner, grace: float, *, delete: bool = True) -> None:
        if runner.uid in self._stopping:
            return

        async def stop() -> None:
            try:
                await runner.stop(grace)
                if delete:
                    await self._final_delete(runner.pod)
            finally:
                self._runners.pop(runner.uid, None)

        task = asyncio.create_task(stop(), name=f"stop {runner.namespace}/{runner.name}")
        self._stopping[runner.uid] = task
        task.add_done_callback(lambda _t: self._stopping.pop(runner.uid, None))

    async def _final_delete(self, pod: Mapping[str, Any]) -> None:
        assert self._api is not None
        meta = pod["metadata"]
        with contextlib.suppress(ApiException):
            await self._core_api().delete_namespaced_pod(
                meta["name"],
                meta["namespace"],
                body={"gracePeriodSeconds": 0, "preconditions": {"uid": meta["uid"]}},
            )

    async def _write_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        assert self._api is not None
        await self._core_api().patch_namespaced_pod_status(
            name, namespace, {"status": status}, _content_type="application/merge-patch+json"
        )

    async def _record_event(
        self, pod: Mapping[str, Any], kind: str, reason: str, message: str
    ) -> None:
        assert self._api is not None
        meta = pod["metadata"]
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": "v1",
                "kind": "Pod",
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta["uid"],
            },
            "type": kind,
            "reason": reason,
            "message": message,
            "source": {"component": "kubelet", "host": str(pod["spec"].get("nodeName", ""))},
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
        }
        try:
            await self._core_api().create_namespaced_event(meta["namespace"], body)
        except ApiException as e:
            log.warning("event %s for %s not recorded: %s", reason, meta["name"], e)

    # -- stopping -------------------------------------------------------------------------

    async def close(self) -> None:
        for task in self._watches:
            task.cancel()
        await asyncio.gather(*self._watches, return_exceptions=True)
        for runner in list(self._runners.values()):
            self._begin_stop(runner, min(runner.grace_s, STOP_GRACE_CAP_S), delete=False)
        await asyncio.gather(*list(self._stopping.values()), return_exceptions=True)
        for heartbeat in self._heartbeats:
            await heartbeat.close()
        for server in self._log_servers:
            await server.close()
        await self._remove_leftover_containers()
        await self.network.teardown()
        if self._api is not None:
            await self._api.close()

    @property
    def _container_prefix(self) -> str:
        return f"{self.settings.network.prefix}-"

    async def _remove_leftover_containers(self) -> None:
        for name in await runtime.containers_named(self._container_prefix):
            await runtime.remove_container(name)
