"""Running build steps as subprocesses: always with a timeout, failures named by step."""

from __future__ import annotations

import os
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
        done = subprocess.run(
            list(argv),
            cwd=cwd,
            env=full_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError as e:
        raise ProvisionError(
            step.component, step.version, name, f"{argv[0]} is not installed ({e})"
        ) from e
    except subprocess.TimeoutExpired as e:
        output = (
            e.output if isinstance(e.output, str) else (e.output or b"").decode(errors="replace")
        )
        raise ProvisionError(
            step.component,
            step.version,
            name,
            f"timed out after {timeout:.0f}s; last output:\n{tail(output)}",
        ) from e
    if done.returncode != 0:
        raise ProvisionError(
            step.component,
            step.version,
            name,
            f"`{' '.join(argv)}` exited with {done.returncode}; the registry may be "
            f"unreachable or the version not served. Last output:\n{tail(done.stdout)}",
        )
    return done.stdout
