"""A published-SDK user function and a ``larder-sidecar`` as real processes on loopback.

The function starts first on a free port; the sidecar (on free ports, with a SQLite
journal in the test's directory) discovers it, and is ready when ``/readyz`` says so.
The sidecar can be restarted on the same journal while the function keeps running.
"""

from __future__ import annotations

import os
import re
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.infra.errors import ServerError
from tests.infra.process import ManagedProcess, free_port

_SIDECAR = Path(sys.executable).with_name("larder-sidecar")
_READY_TIMEOUT_S = 90.0
_STOP_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class FunctionSpec:
    """How to start a user function; it gets ``HOST``/``PORT`` on top of ``env``."""

    name: str
    argv: Sequence[str]
    cwd: Path
    env: Mapping[str, str]


class LogMark:
    """A position in a process's log: text written after it can be awaited."""

    def __init__(self, process: ManagedProcess) -> None:
        self._process = process
        self._offset = _size(process.log_path)

    def text(self) -> str:
        with self._process.log_path.open("rb") as handle:
            handle.seek(self._offset)
            return handle.read().decode(errors="replace")

    def wait_for(self, pattern: str, timeout: float = 30.0) -> re.Match[str]:
        """Wait until a line matching ``pattern`` (a regex) is written after the mark."""
        compiled = re.compile(pattern)
        self._process.wait_until(
            lambda: compiled.search(self.text()) is not None, timeout, f"logged {pattern!r}"
        )
        match = compiled.search(self.text())
        assert match is not None
        return match


class CompatStack:
    """The function and its sidecar; ``close()`` stops both, sidecar first."""

    def __init__(self, function: FunctionSpec, workdir: Path, sidecar_env: Mapping[str, str]):
        self.function_port = free_port()
        self.port = free_port()
        self.admin_port = free_port()
        self.internal_port = free_port()
        self.journal_path = workdir / "journal.sqlite3"
        self.function = ManagedProcess(
            function.name,
            function.argv,
            workdir / f"{function.name}.log",
            env={**function.env, "HOST": "127.0.0.1", "PORT": str(self.function_port)},
            cwd=function.cwd,
        )
        self.sidecar = ManagedProcess(
            "larder-sidecar",
            [str(_SIDECAR)],
            workdir / "sidecar.log",
            env={
                "USER_FUNCTION_HOST": "127.0.0.1",
                "USER_FUNCTION_PORT": str(self.function_port),
                "LARDER_PORT": str(self.port),
                "LARDER_ADMIN_PORT": str(self.admin_port),
                "LARDER_INTERNAL_PORT": str(self.internal_port),
                "LARDER_JOURNAL_TYPE": "sqlite",
                "LARDER_JOURNAL_SQLITE_PATH": str(self.journal_path),
                **sidecar_env,
            },
        )

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        self.function.start()
        self.start_sidecar()

    def start_sidecar(self) -> None:
        self.sidecar.start()
        self.sidecar.wait_until(self._ready, _READY_TIMEOUT_S, "ready (/readyz)")

    def stop_sidecar(self) -> None:
        self.sidecar.stop(_STOP_TIMEOUT_S)

    def close(self) -> None:
        # The sidecar first: the npm SDK defers its SIGTERM until ProxyTerminated.
        self.sidecar.stop(_STOP_TIMEOUT_S)
        self.function.stop(_STOP_TIMEOUT_S)

    def metric(self, name: str, labels: str = "") -> float:
        """One sample from ``/metrics`` (``labels`` as exposed, e.g. ``entity_type="x"``)."""
        text = _get(f"http://127.0.0.1:{self.admin_port}/metrics")[1]
        key = f"{name}{{{labels}}}" if labels else name
        for line in text.splitlines():
            if line.startswith(key + " "):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    def _ready(self) -> bool:
        if not self.function.running:
            raise ServerError(
                self.function.name, "exited before the sidecar was ready", self.function.tail()
            )
        return _get(f"http://127.0.0.1:{self.admin_port}/readyz")[0] == 200


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")
    except OSError:
        return 0, ""


def _size(path: Path) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0
