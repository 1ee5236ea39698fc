"""Drive `larder dev` as a user would: a subprocess, its output, signals, HTTP.

Every run is tagged with a unique environment variable that its children inherit,
so a test can find every process the run started (and check none outlives it) by
reading /proc/*/environ.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

REPO = Path(__file__).resolve().parents[3]
LARDER = Path(sys.executable).parent / "larder"
_TAG = "LARDER_E2E_RUN"
T = TypeVar("T")


def free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def port_options() -> tuple[int, list[str]]:
    public, admin, internal, function = free_ports(4)
    return public, ["--port", str(public), "--admin-port", str(admin),
                    "--internal-port", str(internal), "--function-port", str(function)]


class LarderDev:
    """One `larder dev` process; its stdout and stderr are collected line by line."""

    def __init__(self, args: Sequence[str], cwd: Path,
                 env: Mapping[str, str] | None = None) -> None:
        self.tag = uuid.uuid4().hex
        self.lines: list[str] = []
        self.errors: list[str] = []
        self._changed = threading.Condition()
        self.process = subprocess.Popen(
            [str(LARDER), "dev", *args], cwd=cwd,
            env={**os.environ, **(env or {}), _TAG: self.tag},
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True,
        )
        self._readers = [
            threading.Thread(target=self._read, args=(self.process.stdout, self.lines),
                             daemon=True),
            threading.Thread(target=self._read, args=(self.process.stderr, self.errors),
                             daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _read(self, stream: Any, into: list[str]) -> None:
        for line in stream:
            with self._changed:
                into.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for_line(self, fragment: str, timeout: float = 90.0) -> str:
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for line in self.lines:
                    if fragment in line:
                        return line
                if self.process.poll() is not None and not any(r.is_alive()
                                                               for r in self._readers):
                    raise AssertionError(
                        f"larder dev exited ({self.process.returncode}) before printing "
                        f"{fragment!r}:\n{self.output}\n{chr(10).join(self.errors)}")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"no {fragment!r} within {timeout}s:\n{self.output}")
                self._changed.wait(min(remaining, 1.0))

    def stop(self, sig: signal.Signals = signal.SIGINT, timeout: float = 60.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.wait(timeout)

    def wait(self, timeout: float = 120.0) -> int:
        code = self.process.wait(timeout)
        for reader in self._readers:
            reader.join(timeout)
        return code

    def kill(self) -> None:
        """Test clean-up: whatever happened, nothing of this run keeps running."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        for pid in self.processes():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)

    def processes(self) -> list[int]:
        """The live processes of this run (larder dev and everything it started)."""
        needle = f"{_TAG}={self.tag}".encode()
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                environ = (entry / "environ").read_bytes()
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if state != "Z" and needle in environ.split(b"\0"):
                found.append(int(entry.name))
        return found


def http(method: str, url: str, body: object | None = None,
         timeout: float = 30.0) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def eventually(read: Callable[[], T], expected: T, timeout: float = 15.0) -> T:
    """`read()` until it gives `expected` or `timeout` passes; the last answer. A view
    follows its entities asynchronously (docs/views.md), so a read right after a write may
    not show it yet, and polling the query is the only way to see it catch up."""
    deadline = time.monotonic() + timeout
    while True:
        got = read()
        if got == expected or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


def port_block_options(replicas: int) -> tuple[int, list[str]]:
    """Options for `--replicas N` whose ports (each kind counting up from its option) are
    one block of 4N consecutive ports, free when looked for."""
    rng = random.Random()
    for _ in range(200):
        # Below the ephemeral range (32768-), where outgoing connections take ports.
        base = rng.randrange(10_000, 32_000)
        block = range(base, base + 4 * replicas)
        if all(_free(port) for port in block):
            n = replicas
            return base, ["--port", str(base), "--function-port", str(base + n),
                          "--admin-port", str(base + 2 * n),
                          "--internal-port", str(base + 3 * n)]
    raise AssertionError(f"no block of {4 * replicas} free ports found")


def _free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
