"""kubectl and helm against the local cluster, with failure messages that show the
pods' events and container logs (what `kubectl describe` and `kubectl logs` would)."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.infra.cluster.cluster import LocalCluster

COMMAND_TIMEOUT_S = 120.0


class KubectlError(AssertionError):
    """A kubectl/helm command failed; the message has its output."""


@dataclass(frozen=True)
class Kubectl:
    cluster: LocalCluster
    namespace: str = "default"
    helm: Path | None = None

    def run(self, *args: str, stdin: str | None = None, check: bool = True) -> str:
        return self._run(["kubectl", "-n", self.namespace, *args], stdin, check)

    def helm_run(self, *args: str) -> str:
        assert self.helm is not None, "this Kubectl was made without a helm binary"
        return self._run([str(self.helm), "--namespace", self.namespace, *args], None, True)

    def _run(self, argv: Sequence[str], stdin: str | None, check: bool) -> str:
        done = subprocess.run(
            list(argv),
            input=stdin,
            env=self.cluster.info.env,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_S,
            check=False,
        )
        if check and done.returncode != 0:
            raise KubectlError(
                f"`{' '.join(argv)}` exited with {done.returncode}:\n{done.stderr}{done.stdout}"
            )
        return done.stdout

    def json(self, *args: str) -> Any:
        return json.loads(self.run(*args, "-o", "json"))

    def pods(self, selector: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.json("get", "pods", "-l", selector)["items"]
        return items

    def apply(self, manifest: str) -> None:
        self.run("apply", "-f", "-", stdin=manifest)

    def diagnose(self, selector: str | None = None) -> str:
        """Every matching pod's status, events and the tail of each container's logs."""
        lines: list[str] = []
        pods = self.pods(selector) if selector else self.json("get", "pods")["items"]
        for pod in pods:
            name = pod["metadata"]["name"]
            lines.append(f"--- pod {name}: phase {pod['status'].get('phase')}")
            lines.extend(
                f"    {status['name']}: ready={status.get('ready')} "
                f"restarts={status.get('restartCount')} state={status.get('state')}"
                for status in [
                    *pod["status"].get("initContainerStatuses", []),
                    *pod["status"].get("containerStatuses", []),
                ]
            )
            events = self.run(
                "get", "events", "--field-selector", f"involvedObject.name={name}", check=False
            )
            lines.append("    events:\n" + _indent(events))
            restarts = {
                s["name"]: s.get("restartCount", 0)
                for s in [
                    *pod["status"].get("initContainerStatuses", []),
                    *pod["status"].get("containerStatuses", []),
                ]
            }
            containers = [
                c["name"]
                for c in [*pod["spec"].get("initContainers", []), *pod["spec"]["containers"]]
            ]
            for container in containers:
                if restarts.get(container):
                    previous = self.run(
                        "logs", name, "-c", container, "--previous", "--tail", "30", check=False
                    )
                    lines.append(f"    logs of {container} (previous run):\n" + _indent(previous))
                logs = self.run("logs", name, "-c", container, "--tail", "30", check=False)
                lines.append(f"    logs of {container}:\n" + _indent(logs))
        return "\n".join(lines)

    def wait_for(
        self,
        what: str,
        condition: Callable[[], bool],
        timeout_s: float,
        selector: str | None = None,
    ) -> None:
        """Poll `condition` (each poll is an API round trip) until true, else fail with
        the pods' diagnosis."""
        deadline = time.monotonic() + timeout_s
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"not {what} within {timeout_s:.0f}s\n{self.diagnose(selector)}"
                )
            time.sleep(0.5)


def _indent(text: str) -> str:
    return "\n".join(f"      {line}" for line in text.strip().splitlines()) or "      (none)"


def ready_pods(pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        p
        for p in pods
        if not p["metadata"].get("deletionTimestamp")
        and any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in p["status"].get("conditions", [])
        )
    ]
