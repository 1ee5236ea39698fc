"""A server process we own: started with its output in a log file, stopped for sure."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from tests.infra.errors import ServerError

_POLL_INTERVAL_S = 0.25


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def log_tail(path: Path, lines: int = 40) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 64 * 1024))
            text = handle.read().decode(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


class ManagedProcess:
    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self._env = dict(os.environ) | dict(env or {})
        self._cwd = cwd
        self._popen: subprocess.Popen[bytes] | None = None
        self._paused = False

    @property
    def running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    @property
    def paused(self) -> bool:
        return self._paused and self.running

    def start(self) -> None:
        if self.running:
            raise ServerError(self.name, "start() called while it is already running")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(f"=== larder: starting {' '.join(self.argv)}\n".encode())
            log.flush()
            try:
                # Its own session, so stopping it also stops any children it forks.
                self._popen = subprocess.Popen(
                    self.argv,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=self._env,
                    cwd=self._cwd,
                    start_new_session=True,
                )
            except OSError as e:
                raise ServerError(self.name, f"cannot execute {self.argv[0]}: {e}") from e

    def pause(self) -> None:
        """SIGSTOP the whole process group: it keeps its sockets (the kernel still
        accepts connections and buffers requests) but answers nothing, like a node in
        a long GC pause or a hung host."""
        popen = self._popen
        if popen is None or popen.poll() is not None:
            raise ServerError(self.name, "pause() called while it is not running")
        self._signal(popen, signal.SIGSTOP)
        self._paused = True

    def resume(self) -> None:
        """SIGCONT after `pause()`; harmless when it is not paused."""
        popen = self._popen
        self._paused = False
        if popen is not None and popen.poll() is None:
            self._signal(popen, signal.SIGCONT)

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM, then SIGKILL if it has not exited within `timeout` seconds."""
        popen = self._popen
        if popen is None:
            return
        if popen.poll() is None:
            self._signal(popen, signal.SIGTERM)
            # A stopped process only acts on the SIGTERM once it runs again.
            self.resume()
            try:
                popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self._signal(popen, signal.SIGKILL)
                popen.wait(timeout)
        self._popen = None
        self._paused = False

    def kill(self) -> None:
        """SIGKILL: the crash a failure test wants to provoke."""
        popen = self._popen
        if popen is None:
            return
        if popen.poll() is None:
            self._signal(popen, signal.SIGKILL)
            popen.wait(30)
        self._popen = None
        self._paused = False

    @staticmethod
    def _signal(popen: subprocess.Popen[bytes], sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(popen.pid, sig)

    def wait_exit(self, timeout: float) -> int:
        """Wait for a short-lived process to finish; SIGKILL it on `timeout`."""
        popen = self._popen
        if popen is None:
            raise ServerError(self.name, "wait_exit() called before start()")
        try:
            return popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise ServerError(
                self.name, f"did not finish within {timeout:.0f}s", self.tail()
            ) from None
        finally:
            self._popen = None

    def tail(self, lines: int = 40) -> str:
        return log_tail(self.log_path, lines)

    def wait_until(self, ready: Callable[[], bool], timeout: float, what: str) -> None:
        """Poll `ready` until it returns True; fail with the log tail if the process
        exits first or `timeout` passes."""
        deadline = time.monotonic() + timeout
        while True:
            popen = self._popen
            if popen is None or popen.poll() is not None:
                code = None if popen is None else popen.returncode
                raise ServerError(self.name, f"exited (code {code}) before {what}", self.tail())
            if ready():
                return
            if time.monotonic() >= deadline:
                raise ServerError(
                    self.name,
                    f"not {what} within {timeout:.0f}s (log: {self.log_path})",
                    self.tail(),
                )
            time.sleep(_POLL_INTERVAL_S)
