"""`larder dev`'s supervisor with stand-in children: its shutdown is bounded whatever a
child does, and a relay that fails stops the run."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import os
import random
import re
import signal
import socket
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from larder_dev.function import FunctionSpec
from larder_dev.run import DevRunError, DevRunner, DevSettings

# Ignores SIGTERM, and leaves a grandchild in a session of its own holding its output
# pipe, which no signal to its process group reaches.
STUBBORN = """
import os, signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                          start_new_session=True)
print(f"pid {os.getpid()} holder {holder.pid}", flush=True)
time.sleep(60)
"""
READY = re.compile(r"^\[(?:function|sidecar)\] pid \d+ holder (\d+)$", re.MULTILINE)
IDLE = "import os, time; print(f'pid {os.getpid()}', flush=True); time.sleep(60)"


def free_ports(count: int) -> list[int]:
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]


def settings(tmp_path: Path, function: str, sidecar: str, *, ready_timeout_s: float = 120.0,
             grace_s: float = 5.0) -> DevSettings:
    public, admin, internal, function_port = free_ports(4)
    return DevSettings(
        function=FunctionSpec(name="stand-in", command=(sys.executable, "-c", function),
                              cwd=tmp_path),
        public_port=public, admin_port=admin, internal_port=internal,
        function_port=function_port, journal="memory", data_dir=tmp_path,
        sidecar_command=(sys.executable, "-c", sidecar), ready_timeout_s=ready_timeout_s,
        grace_s=grace_s)


class Output(io.StringIO):
    """Our own output, which a test can wait on."""

    def __init__(self) -> None:
        super().__init__()
        self._changed = asyncio.Event()

    def write(self, s: str) -> int:
        self._changed.set()
        return super().write(s)

    async def until(self, predicate: Callable[[str], bool]) -> None:
        while not predicate(self.getvalue()):
            self._changed.clear()
            await self._changed.wait()


class Started:
    """The processes the runner started (and theirs): they inherit a tag in their
    environment; whatever is left of them is killed after the test."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.tag = f"{_TAG}={uuid.uuid4().hex}".encode()
        monkeypatch.setenv(_TAG, self.tag.decode().partition("=")[2])

    def alive(self) -> set[int]:
        found = set()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                environ = (entry / "environ").read_bytes()
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if state != "Z" and self.tag in environ.split(b"\0"):
                found.add(int(entry.name))
        return found


_TAG = "LARDER_UNIT_RUN"


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> Iterator[Started]:
    run = Started(monkeypatch)
    yield run
    for pid in run.alive():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


async def test_stopping_is_bounded_when_children_ignore_sigterm_and_pipes_stay_open(
    tmp_path: Path, started: Started
) -> None:
    out = Output()
    runner = DevRunner(settings(tmp_path, STUBBORN, STUBBORN, grace_s=0.5), out)
    run = asyncio.create_task(runner.run())
    async with asyncio.timeout(60):
        await out.until(lambda text: len(READY.findall(text)) == 2)
    # Ctrl-C; run() has had its handler since before it started the children.
    os.kill(os.getpid(), signal.SIGINT)
    interrupted = time.monotonic()
    async with asyncio.timeout(30):
        assert await run == 0
    # Two children, each: 0.5s of SIGTERM, then SIGKILL; 2s for the pipes to drain.
    assert time.monotonic() - interrupted < 15, out.getvalue()
    text = out.getvalue()
    assert "[larder] the sidecar did not stop within 0.5s; killing it" in text
    assert "[larder] the function did not stop within 0.5s; killing it" in text
    holders = {int(holder) for holder in READY.findall(text)}
    assert len(holders) == 2, text
    # Only the grandchildren that left for sessions of their own are left.
    assert started.alive() == holders


class BrokenForFunction(io.StringIO):
    """Our own output, failing for the function's lines only."""

    def write(self, s: str) -> int:
        if s.startswith("[function]"):
            raise OSError("no space left on device")
        return super().write(s)


async def test_a_relay_that_fails_is_reported_and_stops_both_children(
    tmp_path: Path, started: Started
) -> None:
    out = BrokenForFunction()
    runner = DevRunner(settings(tmp_path, IDLE, IDLE, ready_timeout_s=60.0, grace_s=2.0),
                       out)
    with pytest.raises(DevRunError) as failed:
        async with asyncio.timeout(30):
            await runner.run()
    assert str(failed.value) == (
        "relaying the function's output failed (OSError: no space left on device); stopped "
        "both processes")
    text = out.getvalue()
    assert "[larder] relaying the function's output failed:\nTraceback" in text
    assert "[larder] stopping the sidecar" in text
    assert "[larder] stopping the function" in text
    assert started.alive() == set()


# Says who it is (as the runner's environment tells it), then ignores SIGTERM.
STUBBORN_REPLICA = """
import os, signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
e = os.environ
print("I am", e.get("POD_NAME", "-"), e.get("LARDER_PORT") or e["PORT"],
      e.get("LARDER_CLUSTER_MEMBERS", "-"), flush=True)
time.sleep(60)
"""


def free_block(replicas: int) -> tuple[int, int, int, int]:
    """First ports of each kind such that every replica's ports (counting up) are free:
    one block of 4 * replicas ports below the ephemeral range."""
    rng = random.Random()
    for _ in range(200):
        start = rng.randrange(10_000, 32_000)
        try:
            with contextlib.ExitStack() as stack:
                for port in range(start, start + 4 * replicas):
                    stack.enter_context(socket.socket()).bind(("127.0.0.1", port))
        except OSError:
            continue
        return start, start + replicas, start + 2 * replicas, start + 3 * replicas
    raise AssertionError("no block of free ports found")


REPLICA_LINE = re.compile(r"^\[((?:function|sidecar)-\d)\] I am (\S+) (\d+) (\S+)$", re.MULTILINE)


async def test_replicas_are_labelled_given_their_membership_and_stopped_together(
    tmp_path: Path, started: Started
) -> None:
    out = Output()
    base = replica_settings(tmp_path, STUBBORN_REPLICA, STUBBORN_REPLICA, 3, grace_s=1.0)
    runner = DevRunner(base, out)
    run = asyncio.create_task(runner.run())
    async with asyncio.timeout(60):
        await out.until(lambda text: len(REPLICA_LINE.findall(text)) == 6)
    said = {label: rest for label, *rest in REPLICA_LINE.findall(out.getvalue())}
    for i in range(3):
        assert said[f"function-{i}"] == ["-", str(base.function_port + i), "-"]
        pod, port, members = said[f"sidecar-{i}"]
        assert (pod, port) == (f"replica-{i}", str(base.public_port + i))
        assert [m.split("=")[0] for m in members.split(",")] == [
            "replica-0", "replica-1", "replica-2"]
        assert members == said["sidecar-0"][2]
    os.kill(os.getpid(), signal.SIGINT)
    interrupted = time.monotonic()
    async with asyncio.timeout(30):
        assert await run == 0
    # Six children that ignore SIGTERM: the sidecars together get 1s, then the functions
    # together; one at a time would take 6s before the kills and the drain.
    assert time.monotonic() - interrupted < 5.5, out.getvalue()
    text = out.getvalue()
    assert "[larder] stopping sidecar-0, sidecar-1, sidecar-2\n" in text
    assert "[larder] stopping function-0, function-1, function-2\n" in text
    assert "[larder] function-2 did not stop within 1s; killing it" in text
    assert text.index("stopping sidecar-0") < text.index("stopping function-0")
    assert started.alive() == set()


def replica_settings(tmp_path: Path, function: str, sidecar: str, replicas: int,
                     **timing: float) -> DevSettings:
    public, function_port, admin, internal = free_block(replicas)
    return dataclasses.replace(
        settings(tmp_path, function, sidecar, **timing),
        public_port=public, function_port=function_port, admin_port=admin,
        internal_port=internal, replicas=replicas)


async def test_a_replicas_function_that_exits_at_start_is_named_and_everything_stops(
    tmp_path: Path, started: Started
) -> None:
    base = replica_settings(tmp_path, "", IDLE, 3, grace_s=2.0)
    # Only replica-1's function fails (it is the one given the second function port).
    failing = (f"import os, sys, time\nif os.environ['PORT'] == '{base.function_port + 1}':\n"
               "    print('no config', flush=True); sys.exit(3)\ntime.sleep(60)\n")
    out = Output()
    runner = DevRunner(dataclasses.replace(
        base, function=dataclasses.replace(base.function, command=(
            sys.executable, "-c", failing))), out)
    with pytest.raises(DevRunError) as failed:
        async with asyncio.timeout(30):
            await runner.run()
    assert str(failed.value) == (
        "the user function of replica-1 exited with code 3 before it was ready; see the "
        "[function-1] lines above and fix its start command or its code")
    assert "[function-1] no config\n" in out.getvalue()
    assert started.alive() == set()


async def test_replicas_not_ready_in_time_are_each_named(
    tmp_path: Path, started: Started
) -> None:
    s = replica_settings(tmp_path, IDLE, IDLE, 2, ready_timeout_s=1.0, grace_s=2.0)
    with pytest.raises(DevRunError) as failed:
        async with asyncio.timeout(30):
            await DevRunner(s, Output()).run()
    assert str(failed.value) == (
        f"not ready after 1s (http://127.0.0.1:{s.admin_port}/readyz, "
        f"http://127.0.0.1:{s.admin_port + 1}/readyz); see the [function-0], [sidecar-0], "
        "[function-1] and [sidecar-1] lines above, or raise --ready-timeout")
    assert started.alive() == set()
