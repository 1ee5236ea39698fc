"""Running build steps as subprocesses: always with a timeout, failures named by step."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.infra.errors import ProvisionError

_TAIL_LINES = 30


@dataclass(frozen=True)
class Step:
    """Which component and version a command belongs to, for error messages."""

    component: str
    version: str


def tail(text: str, lines: int = _TAIL_LINES) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def run_step(
    step: Step,
    name: str,
    argv: Sequence[str],
    *,
    timeout: float,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> str:
    """Run one build step and return its combined output, or raise ProvisionError."""
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    try:
        # A session of its own, so a timeout can stop the step's children too (the Go
        # compiler and linker run as children of `go build`).
        process = subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=full_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
    except FileNotFoundError as e:
        raise ProvisionError(
            step.component, step.version, name, f"{argv[0]} is not installed ({e})"
        ) from e
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired as e:
        _kill_group(process)
        partial = (
            e.output if isinstance(e.output, str) else (e.output or b"").decode(errors="replace")
        )
        raise ProvisionError(
            step.component,
            step.version,
            name,
            f"timed out after {timeout:.0f}s; last output:\n{tail(partial)}",
        ) from e
    except BaseException:
        # Interrupted (Ctrl-C no longer reaches a child in its own session): stop it too.
        _kill_group(process)
        raise
    if process.returncode != 0:
        raise ProvisionError(
            step.component,
            step.version,
            name,
            f"`{' '.join(argv)}` exited with {process.returncode}; the registry may be "
            f"unreachable or the version not served. Last output:\n{tail(output)}",
        )
    return output


def _kill_group(process: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    try:
        # Reaps the step and closes its pipe; bounded in case a child left the group
        # and still holds the pipe open.
        process.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
