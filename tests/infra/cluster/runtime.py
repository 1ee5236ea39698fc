"""Containers from buildah's local image store, run inside a pod's network namespace.

A container here is a buildah working container (its own copy-on-write root
filesystem) and, while it runs, one `ip netns exec <ns> buildah run --isolation
chroot` process in its own process group, so SIGKILL reaches the whole tree. SIGTERM
goes to the container's own first process only, as the kubelet's runtime sends it:
buildah's chroot helper answers a SIGTERM of its own by killing the container at once,
so a SIGTERM to the whole group would never let a container shut down gracefully.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.infra.cluster.commands import CommandError, run, run_quietly


class ImageMissingError(LookupError):
    """The image is not in the local store and pulling is not possible here."""


@dataclass(frozen=True)
class ImageConfig:
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    workdir: str = ""
    user: str = ""


def image_config_from_inspect(document: Mapping[str, Any]) -> ImageConfig:
    config = (document.get("OCIv1") or {}).get("config") or {}
    env: list[tuple[str, str]] = []
    for item in config.get("Env") or ():
        name, _, value = str(item).partition("=")
        env.append((name, value))
    return ImageConfig(
        entrypoint=tuple(config.get("Entrypoint") or ()),
        cmd=tuple(config.get("Cmd") or ()),
        env=tuple(env),
        workdir=str(config.get("WorkingDir") or ""),
        user=str(config.get("User") or ""),
    )


def resolve_argv(
    image: ImageConfig, command: Sequence[str] | None, args: Sequence[str] | None
) -> list[str]:
    """Kubernetes' rule: `command` replaces ENTRYPOINT (and drops CMD), `args` replaces CMD."""
    if command:
        return [*command, *(args or ())]
    return [*image.entrypoint, *(args if args else image.cmd)]


async def image_config(reference: str) -> ImageConfig:
    try:
        out = await run(["buildah", "inspect", "--type", "image", reference])
    except CommandError as e:
        raise ImageMissingError(f"image {reference!r} is not in the local store") from e
    return image_config_from_inspect(json.loads(out))


async def create_container(name: str, reference: str) -> None:
    await run_quietly(["buildah", "rm", name])
    try:
        await run(
            ["buildah", "from", "--pull=never", "--quiet", "--name", name, reference], limit_s=300
        )
    except CommandError as e:
        raise ImageMissingError(f"image {reference!r} is not in the local store: {e}") from e


async def container_rootfs(name: str) -> Path:
    return Path((await run(["buildah", "mount", name])).strip())


def resolve_in_rootfs(rootfs: Path, path: str) -> str:
    """`path` with the image's symlinks resolved, confined to the image.

    buildah's chroot isolation mounts its own tmpfs on /run, so a bind mount at
    /var/run/... (a symlink to /run on Debian) would be hidden; mounting at the
    resolved /run/... puts it where the container's processes look.
    """
    parts = [p for p in path.split("/") if p]
    resolved: list[str] = []
    hops = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        if part == ".":
            continue
        candidate = rootfs.joinpath(*resolved, part)
        if candidate.is_symlink() and hops < 40:
            hops += 1
            target = os.readlink(candidate)
            if target.startswith("/"):
                resolved = []
            parts = [p for p in target.split("/") if p] + parts
            continue
        resolved.append(part)
    return "/" + "/".join(resolved)


async def remove_container(name: str) -> None:
    await run_quietly(["buildah", "rm", name], limit_s=120)


async def containers_named(prefix: str) -> list[str]:
    out = await run(["buildah", "containers", "--format", "{{.ContainerName}}"])
    return [n for n in out.split() if n.startswith(prefix)]


@dataclass(frozen=True)
class RunSpec:
    container: str
    netns: str
    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()
    workdir: str = ""
    user: str = ""
    mounts: tuple[tuple[str, str], ...] = ()  # (host path, container path)
    hostname: str = ""
    log_path: Path = field(default=Path("/dev/null"))

    def command_line(self) -> list[str]:
        argv = ["ip", "netns", "exec", self.netns, "buildah", "run", "--isolation", "chroot"]
        for name, value in self.env:
            argv += ["--env", f"{name}={value}"]
        if self.workdir:
            argv += ["--workingdir", self.workdir]
        if self.user:
            argv += ["--user", self.user]
        if self.hostname:
            argv += ["--hostname", self.hostname]
        for host, target in self.mounts:
            argv += ["--volume", f"{host}:{target}"]
        return [*argv, self.container, "--", *self.argv]


class RunningProcess:
    """One run of a container's process; its output appends to the container's log."""

    def __init__(self, spec: RunSpec, process: asyncio.subprocess.Process) -> None:
        self.spec = spec
        self._process = process

    @classmethod
    async def start(cls, spec: RunSpec) -> RunningProcess:
        spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        with spec.log_path.open("ab") as log:
            process = await asyncio.create_subprocess_exec(
                *spec.command_line(),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
                env={"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")},
            )
        return cls(spec, process)

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def returncode(self) -> int | None:
        return self._process.returncode

    async def wait(self) -> int:
        return await self._process.wait()

    def signal(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._process.pid, signum)

    def terminate(self) -> None:
        """SIGTERM to the container's first process(es), past buildah's own processes;
        to the whole group when none is found (it has not started yet, or has ended)."""
        targets = _container_processes(self._process.pid)
        if not targets:
            self.signal(signal.SIGTERM)
            return
        for pid in targets:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGTERM)

    async def stop(self, grace_s: float) -> int:
        """SIGTERM, then SIGKILL after the grace period; returns the exit code."""
        if self._process.returncode is None:
            self.terminate()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._process.wait()), grace_s)
        # Also after a clean exit: a child that left the group's leader behind dies too.
        self.signal(signal.SIGKILL)
        return await self._process.wait()


# What runs a container rather than being it: `ip netns exec` (it execs buildah), buildah,
# and buildah's chroot helpers (re-executed from a memfd, hence their command name).
_RUNTIME_COMMANDS = ("ip", "buildah")
_RUNTIME_PREFIX = "memfd:buildah"


def _container_processes(pid: int) -> list[int]:
    """The first descendants of `pid` that are not the runtime's own processes."""
    found: list[int] = []
    for child in _children(pid):
        try:
            command = Path(f"/proc/{child}/comm").read_text().strip()
        except OSError:
            continue
        if command in _RUNTIME_COMMANDS or command.startswith(_RUNTIME_PREFIX):
            found.extend(_container_processes(child))
        else:
            found.append(child)
    return found


def _children(pid: int) -> list[int]:
    children: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return children
    for task in tasks:
        with contextlib.suppress(OSError, ValueError):
            children.extend(
                int(c) for c in Path(f"/proc/{pid}/task/{task}/children").read_text().split()
            )
    return children
