"""One container of a pod: its buildah container, its runs, restarts, probes and status.

Restarts follow the kubelet: a back-off that doubles from `BACKOFF_BASE_S` up to
`BACKOFF_CAP_S` (shorter than the kubelet's 10 s / 300 s so tests see several
restarts quickly), reset after a run that lasted `BACKOFF_RESET_S`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.infra.cluster import runtime
from tests.infra.cluster.probes import ProbeTiming, run_probe

BACKOFF_BASE_S = 1.0
BACKOFF_CAP_S = 20.0
BACKOFF_RESET_S = 60.0


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class StartError(Exception):
    """The container could not be started; `reason` is the kubelet's waiting reason."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


@dataclass(frozen=True)
class Launch:
    """How to start one run of the container, resolved by the pod (env, mounts, argv)."""

    spec: runtime.RunSpec
    image_id: str


class Container:
    def __init__(
        self,
        spec: Mapping[str, Any],
        kind: str,
        buildah_name: str,
        log_dir: Path,
        changed: Callable[[], None],
        event: Callable[[str, str, str], Awaitable[None]],
    ) -> None:
        self.spec = spec
        self.name = str(spec["name"])
        self.kind = kind  # "init", "sidecar" or "main"
        self.buildah_name = buildah_name
        self.log_dir = log_dir
        self._changed = changed
        self._event = event
        self.state: dict[str, Any] = {"waiting": {"reason": "ContainerCreating"}}
        self.last_state: dict[str, Any] = {}
        self.restart_count = 0
        self.ready = False
        self.started = False
        self.image_id = ""
        self.process: runtime.RunningProcess | None = None
        self.exit_code: int | None = None
        self._liveness_failed: str | None = None
        self._kill = asyncio.Event()
        self._kill_grace_s = 0.0

    # -- status -------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        status: dict[str, Any] = {
            "name": self.name,
            "image": str(self.spec.get("image", "")),
            "imageID": self.image_id,
            "ready": self.ready,
            "restartCount": self.restart_count,
            "started": self.started,
            "state": self.state,
            "lastState": self.last_state,
        }
        if self.process is not None or self.exit_code is not None:
            status["containerID"] = f"buildah://{self.buildah_name}"
        return status

    def wait_with(self, reason: str, message: str = "") -> None:
        self.state = {"waiting": {"reason": reason, **({"message": message} if message else {})}}
        self.ready = False
        self._changed()

    def log_path(self, run: int) -> Path:
        return self.log_dir / f"{run}.log"

    # -- one run ------------------------------------------------------------------------

    async def run_once(self, launch: Launch, ip: str, grace_s: Callable[[], float]) -> int:
        """Start the process, probe it while it runs, and return its exit code."""
        self.image_id = launch.image_id
        self.process = await runtime.RunningProcess.start(launch.spec)
        started_at = now()
        self.state = {"running": {"startedAt": started_at}}
        self.started = "startupProbe" not in self.spec
        self.ready = False
        self._liveness_failed = None
        self._changed()
        self._kill = asyncio.Event()
        process = self.process
        probes = asyncio.create_task(self._probe_loop(ip, grace_s))
        exited = asyncio.create_task(process.wait())
        killed = asyncio.create_task(self._kill.wait())
        try:
            await asyncio.wait({exited, killed}, return_when=asyncio.FIRST_COMPLETED)
            if killed.done():
                await process.stop(self._kill_grace_s)
            code = await exited
        finally:
            for task in (probes, exited, killed):
                task.cancel()
            await asyncio.gather(probes, exited, killed, return_exceptions=True)
        self.ready = False
        self.started = False
        self.exit_code = code
        reason = "Completed" if code == 0 else "Error"
        terminated: dict[str, Any] = {
            "exitCode": code,
            "reason": reason,
            "startedAt": started_at,
            "finishedAt": now(),
            "containerID": f"buildah://{self.buildah_name}",
        }
        if self._liveness_failed:
            terminated["message"] = self._liveness_failed
        self.state = {"terminated": terminated}
        self._changed()
        return code

    async def _probe_loop(self, ip: str, grace_s: Callable[[], float]) -> None:
        startup = self.spec.get("startupProbe")
        if startup:
            await self._until_passes(startup, ip)
            self.started = True
            self._changed()
        tasks = []
        if self.spec.get("readinessProbe"):
            tasks.append(self._readiness(self.spec["readinessProbe"], ip))
        else:
            # Without a readiness probe a running container is ready (sidecars included).
            self.ready = True
            self._changed()
        if self.spec.get("livenessProbe"):
            tasks.append(self._liveness(self.spec["livenessProbe"], ip, grace_s))
        await asyncio.gather(*tasks)

    async def _until_passes(self, probe: Mapping[str, Any], ip: str) -> None:
        timing = ProbeTiming.of(probe)
        await asyncio.sleep(timing.initial_delay_s)
        failures = 0
        while True:
            result = await run_probe(probe, self.spec, ip)
            if result.ok:
                return
            failures += 1
            if failures >= timing.failure_threshold:
                self._kill_for(f"Startup probe failed: {result.detail}", 0.0)
                return
            await asyncio.sleep(timing.period_s)

    async def _readiness(self, probe: Mapping[str, Any], ip: str) -> None:
        timing = ProbeTiming.of(probe)
        await asyncio.sleep(timing.initial_delay_s)
        successes = failures = 0
        while True:
            result = await run_probe(probe, self.spec, ip)
            if result.ok:
                successes, failures = successes + 1, 0
                if successes >= timing.success_threshold and not self.ready:
                    self.ready = True
                    self._changed()
            else:
                successes, failures = 0, failures + 1
                if failures >= timing.failure_threshold and self.ready:
                    self.ready = False
                    self._changed()
            await asyncio.sleep(timing.period_s)

    async def _liveness(
        self, probe: Mapping[str, Any], ip: str, grace_s: Callable[[], float]
    ) -> None:
        timing = ProbeTiming.of(probe)
        await asyncio.sleep(timing.initial_delay_s)
        failures = 0
        while True:
            result = await run_probe(probe, self.spec, ip)
            failures = 0 if result.ok else failures + 1
            if failures >= timing.failure_threshold:
                self._kill_for(f"Liveness probe failed: {result.detail}", grace_s())
                return
            await asyncio.sleep(timing.period_s)

    def _kill_for(self, why: str, grace_s: float) -> None:
        self._liveness_failed = f"{why}; the container will be restarted"
        # run_once waits for this event next to the process's exit and stops it.
        self._kill_grace_s = grace_s
        self._kill.set()

    async def stop(self, grace_s: float) -> None:
        if self.process is not None and self.process.returncode is None:
            await self.process.stop(grace_s)

    # -- supervision ---------------------------------------------------------------------

    async def supervise(
        self,
        prepare: Callable[[int], Awaitable[Launch]],
        ip: str,
        restart: Callable[[int], bool],
        grace_s: Callable[[], float],
    ) -> int:
        """Run, restarting per `restart(exit_code)` with back-off; the final exit code."""
        backoff = BACKOFF_BASE_S
        while True:
            try:
                launch = await prepare(self.restart_count)
            except StartError as e:
                self.wait_with(e.reason, str(e))
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_CAP_S)
                if e.reason == "ErrImagePull":
                    self.wait_with("ImagePullBackOff", str(e))
                continue
            began = time.monotonic()
            code = await self.run_once(launch, ip, grace_s)
            if not restart(code):
                return code
            if time.monotonic() - began > BACKOFF_RESET_S:
                backoff = BACKOFF_BASE_S
            self.last_state = self.state
            self.restart_count += 1
            message = f"back-off {backoff:g}s restarting failed container={self.name}"
            self.wait_with("CrashLoopBackOff", message)
            await self._event(
                "Warning", "BackOff", f"Back-off restarting failed container: {message}"
            )
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_CAP_S)
