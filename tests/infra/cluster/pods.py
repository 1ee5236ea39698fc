"""One pod on the node: its network namespace, volumes, containers in the kubelet's
order, its status, and its graceful end.

Order of a pod's life, as the kubelet does it: sandbox (namespace + veth), volumes,
init containers one by one (a native sidecar - an init container with
`restartPolicy: Always` - counts as done once started and keeps running), then the
main containers together. On deletion: main containers get SIGTERM and the grace
period, then the sidecars in reverse order, then the sandbox goes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.infra.cluster import podspec, runtime
from tests.infra.cluster.containers import Container, Launch, StartError, now
from tests.infra.cluster.forward import LoopbackForwarder
from tests.infra.cluster.netns import Network, PodNetwork

log = logging.getLogger(__name__)

CONTAINER_PREFIX = "lrd-"
STATUS_COALESCE_S = 0.1


@dataclass(frozen=True)
class PodContext:
    """What every pod on a node shares."""

    node_name: str
    host_ip: str
    network: Network
    lookup: podspec.Lookup
    workdir: Path
    # Host loopback ports a pod reaches at its own 127.0.0.1 (API server, Cassandra).
    forwarded_ports: tuple[int, ...]
    api_port: int
    write_status: Callable[[str, str, dict[str, Any]], Awaitable[None]]
    record_event: Callable[[Mapping[str, Any], str, str, str], Awaitable[None]]
    # Names of this agent's buildah containers start with it (cleanup finds only its own).
    container_prefix: str = CONTAINER_PREFIX


def _resolved_target(rootfs: Path, target: str) -> str:
    path, colon, options = target.partition(":")
    return runtime.resolve_in_rootfs(rootfs, path) + colon + options


def pod_key(uid: str) -> str:
    return uid.replace("-", "")[:8]


class PodRunner:
    def __init__(self, pod: Mapping[str, Any], ctx: PodContext) -> None:
        self.pod = pod
        self.ctx = ctx
        meta = pod["metadata"]
        self.name = str(meta["name"])
        self.namespace = str(meta["namespace"])
        self.uid = str(meta["uid"])
        self.key = pod_key(self.uid)
        self.dir = ctx.workdir / "pods" / f"{self.namespace}_{self.name}_{self.key}"
        spec = pod["spec"]
        self.restart_policy = str(spec.get("restartPolicy", "Always"))
        self.grace_s = float(spec.get("terminationGracePeriodSeconds", 30))
        self.init: list[Container] = []
        self.main: list[Container] = []
        for c in spec.get("initContainers") or ():
            kind = "sidecar" if c.get("restartPolicy") == "Always" else "init"
            self.init.append(self._container(c, kind))
        for c in spec.get("containers") or ():
            self.main.append(self._container(c, "main"))
        self.ip = ""
        self.phase = "Pending"
        self.start_time = now()
        self.initialized = False
        self.network: PodNetwork | None = None
        self._forwarder: LoopbackForwarder | None = None
        self._volumes: dict[str, Path] = {}
        self._conditions: dict[str, dict[str, Any]] = {}
        self._dirty = asyncio.Event()
        self._progress = asyncio.Event()
        self._tasks: dict[str, asyncio.Task[int]] = {}
        self._lifecycle: asyncio.Task[None] | None = None
        self._status_writer: asyncio.Task[None] | None = None
        self._stopped = asyncio.Event()

    def _container(self, spec: Mapping[str, Any], kind: str) -> Container:
        name = str(spec["name"])
        return Container(
            spec,
            kind,
            f"{self.ctx.container_prefix}{self.key}-{name}",
            self.dir / "logs" / name,
            self._on_change,
            self._event,
        )

    async def _event(self, kind: str, reason: str, message: str) -> None:
        await self.ctx.record_event(self.pod, kind, reason, message)

    def _on_change(self) -> None:
        self._dirty.set()
        self._progress.set()

    def container(self, name: str) -> Container | None:
        return next((c for c in [*self.init, *self.main] if c.name == name), None)

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        self._status_writer = asyncio.create_task(self._write_status_loop())
        self._lifecycle = asyncio.create_task(self._run())
        self._dirty.set()

    async def _run(self) -> None:
        try:
            await self._sandbox()
            for container in self.init:
                if container.kind == "sidecar":
                    await self._start_sidecar(container)
                else:
                    code = await container.supervise(
                        self._preparer(container), self.ip, self._restart_init, self._grace
                    )
                    if code != 0:
                        await self._finish("Failed")
                        return
            self.initialized = True
            self._dirty.set()
            for container in self.main:
                self._tasks[container.name] = asyncio.create_task(
                    container.supervise(
                        self._preparer(container), self.ip, self._restart_main, self._grace
                    )
                )
            codes = await asyncio.gather(*(self._tasks[c.name] for c in self.main))
            await self._finish("Succeeded" if all(code == 0 for code in codes) else "Failed")
        except asyncio.CancelledError:
            raise
        except Exception as e:
            log.exception("pod %s/%s failed in the node agent", self.namespace, self.name)
            await self.ctx.record_event(self.pod, "Warning", "FailedCreatePodSandBox", str(e))
            for container in [*self.init, *self.main]:
                if "running" not in container.state:
                    container.wait_with("CreateContainerError", str(e))

    async def _sandbox(self) -> None:
        self.network = await self.ctx.network.add_pod(self.key)
        self.ip = self.network.ip
        self._forwarder = LoopbackForwarder(self.network.namespace, self.ctx.forwarded_ports)
        await self._forwarder.start()
        self._dirty.set()
        facts = podspec.PodFacts.of(self.pod, self.ip, self.ctx.host_ip)
        while True:
            try:
                self._volumes = await podspec.materialize_volumes(
                    self.pod, facts, self.ctx.lookup, self.dir / "volumes"
                )
                return
            except podspec.ConfigError as e:
                for container in [*self.init, *self.main]:
                    container.wait_with("CreateContainerConfigError", str(e))
                await self.ctx.record_event(self.pod, "Warning", "FailedMount", str(e))
                await asyncio.sleep(2.0)

    async def _start_sidecar(self, container: Container) -> None:
        task = asyncio.create_task(
            container.supervise(self._preparer(container), self.ip, lambda _code: True, self._grace)
        )
        self._tasks[container.name] = task
        task.add_done_callback(lambda _t: self._progress.set())
        # The next init container starts once this one has started (startup probe passed).
        while not container.started and not task.done():
            self._progress.clear()
            await self._progress.wait()

    def _restart_init(self, code: int) -> bool:
        return code != 0 and self.restart_policy != "Never"

    def _restart_main(self, code: int) -> bool:
        if self.restart_policy == "Always":
            return True
        return self.restart_policy == "OnFailure" and code != 0

    def _grace(self) -> float:
        return self.grace_s

    def _preparer(self, container: Container) -> Callable[[int], Awaitable[Launch]]:
        async def prepare(run: int) -> Launch:
            return await self._prepare(container, run)

        return prepare

    async def _prepare(self, container: Container, run: int) -> Launch:
        spec = container.spec
        image = str(spec.get("image", ""))
        policy = str(spec.get("imagePullPolicy", "IfNotPresent"))
        try:
            config = await runtime.image_config(image)
        except runtime.ImageMissingError:
            if policy == "Never":
                message = f'Container image "{image}" is not present with pull policy of Never'
                await self.ctx.record_event(self.pod, "Warning", "ErrImageNeverPull", message)
                raise StartError("ErrImageNeverPull", message) from None
            message = (
                f'Failed to pull image "{image}": this test node has no registry; '
                "build the image into the local buildah store"
            )
            await self.ctx.record_event(self.pod, "Warning", "Failed", message)
            raise StartError("ErrImagePull", message) from None
        facts = podspec.PodFacts.of(self.pod, self.ip, self.ctx.host_ip)
        service_env = [
            ("KUBERNETES_SERVICE_HOST", "127.0.0.1"),
            ("KUBERNETES_SERVICE_PORT", str(self.ctx.api_port)),
            ("KUBERNETES_SERVICE_PORT_HTTPS", str(self.ctx.api_port)),
            ("HOSTNAME", self.name),
        ]
        try:
            env = await podspec.container_env(spec, facts, self.ctx.lookup, service_env)
            mounts = podspec.container_mounts(spec, self._volumes)
        except podspec.ConfigError as e:
            await self.ctx.record_event(self.pod, "Warning", "Failed", f"Error: {e}")
            raise StartError("CreateContainerConfigError", str(e)) from e
        values = dict(env)
        argv = runtime.resolve_argv(
            config,
            [podspec.expand(a, values) for a in spec.get("command") or ()],
            [podspec.expand(a, values) for a in spec.get("args") or ()],
        )
        if not argv:
            raise StartError("CreateContainerError", "no command specified")
        if run == 0:
            await runtime.create_container(container.buildah_name, image)
            await self.ctx.record_event(
                self.pod, "Normal", "Created", f"Created container {container.name}"
            )
        await self.ctx.record_event(
            self.pod, "Normal", "Started", f"Started container {container.name}"
        )
        assert self.network is not None
        rootfs = await runtime.container_rootfs(container.buildah_name)
        mounts = [(host, _resolved_target(rootfs, target)) for host, target in mounts]
        return Launch(
            runtime.RunSpec(
                container=container.buildah_name,
                netns=self.network.namespace,
                argv=tuple(argv),
                env=tuple(env),
                workdir=str(spec.get("workingDir") or ""),
                user=podspec.run_as(self.pod, spec),
                mounts=tuple(mounts),
                log_path=container.log_path(run),
            ),
            image_id=image,
        )

    async def _finish(self, phase: str) -> None:
        self.phase = phase
        await self._stop_containers(self.grace_s)
        self._dirty.set()

    # -- stopping -------------------------------------------------------------------------

    async def stop(self, grace_s: float | None = None) -> None:
        """Graceful stop: main containers, then sidecars in reverse; then the sandbox."""
        grace = self.grace_s if grace_s is None else grace_s
        if self._lifecycle is not None:
            self._lifecycle.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._lifecycle
        await self._stop_containers(grace)
        await self._teardown()
        if self._status_writer is not None:
            self._status_writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._status_writer
        self._stopped.set()

    async def _stop_containers(self, grace: float) -> None:
        # Supervisors must not restart what is being stopped: cancel them first.
        began = asyncio.get_running_loop().time()
        for container in self.main:
            await self._cancel_supervisor(container)
        await asyncio.gather(*(c.stop(grace) for c in self.main))
        for container in reversed(self.init):
            await self._cancel_supervisor(container)
            # As the kubelet does: native sidecars share what is left of the grace period
            # (at least 2 s), so a sidecar that hands work over before it exits has time.
            left = max(grace - (asyncio.get_running_loop().time() - began), 2.0)
            await container.stop(left if container.kind == "sidecar" else 0.0)

    async def _cancel_supervisor(self, container: Container) -> None:
        task = self._tasks.get(container.name)
        if task is None or task.done():
            return
        # Cancelling a supervisor while its process runs would orphan the process; stop
        # it through the container, then cancel the loop around it.
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task

    async def _teardown(self) -> None:
        if self._forwarder is not None:
            await self._forwarder.close()
        for container in [*self.init, *self.main]:
            await runtime.remove_container(container.buildah_name)
        if self.network is not None:
            await self.ctx.network.remove_pod(self.network, self.key)
        shutil.rmtree(self.dir / "volumes", ignore_errors=True)

    async def wait_stopped(self) -> None:
        await self._stopped.wait()

    # -- status ---------------------------------------------------------------------------

    async def _write_status_loop(self) -> None:
        while True:
            await self._dirty.wait()
            await asyncio.sleep(STATUS_COALESCE_S)
            self._dirty.clear()
            try:
                await self.ctx.write_status(self.namespace, self.name, self.status())
            except Exception as e:  # the next change retries; a gone pod stops the runner
                log.warning("status of %s/%s not written: %s", self.namespace, self.name, e)

    def _condition(self, kind: str, value: bool, reason: str = "") -> dict[str, Any]:
        status = "True" if value else "False"
        previous = self._conditions.get(kind)
        if previous is None or previous["status"] != status:
            previous = {"type": kind, "status": status, "lastTransitionTime": now()}
            if reason:
                previous["reason"] = reason
            self._conditions[kind] = previous
        return previous

    def status(self) -> dict[str, Any]:
        main_running = all("running" in c.state for c in self.main) and bool(self.main)
        if self.phase == "Pending" and self.initialized and main_running:
            self.phase = "Running"
        sidecars_ready = all(c.ready for c in self.init if c.kind == "sidecar")
        ready = self.phase == "Running" and sidecars_ready and all(c.ready for c in self.main)
        not_ready = "" if ready else "ContainersNotReady"
        status: dict[str, Any] = {
            "phase": self.phase,
            "hostIP": self.ctx.host_ip,
            "hostIPs": [{"ip": self.ctx.host_ip}],
            "startTime": self.start_time,
            "conditions": [
                self._condition("PodReadyToStartContainers", bool(self.ip)),
                self._condition(
                    "Initialized",
                    self.initialized,
                    "" if self.initialized else "ContainersNotInitialized",
                ),
                self._condition("ContainersReady", ready, not_ready),
                self._condition("Ready", ready, not_ready),
                self._condition("PodScheduled", True),
            ],
            "initContainerStatuses": [c.status() for c in self.init],
            "containerStatuses": [c.status() for c in self.main],
        }
        if self.ip:
            status["podIP"] = self.ip
            status["podIPs"] = [{"ip": self.ip}]
        return status
