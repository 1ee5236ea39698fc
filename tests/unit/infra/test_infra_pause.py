"""ManagedProcess.pause()/resume(): the whole process group freezes and thaws, and a
paused server can still be stopped."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.infra.errors import ServerError
from tests.infra.process import ManagedProcess

# A parent that forks a child; both sleep. The parent prints both pids.
_FAMILY = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
print(f"pids {__import__('os').getpid()} {child.pid}", flush=True)
time.sleep(120)
"""


def _state(pid: int) -> str:
    """The kernel's one-letter run state of `pid` ('T' = stopped by a signal)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # The command name in parentheses may hold spaces; the state follows it.
    return stat.rsplit(")", 1)[1].split()[0]


def _until(condition: Callable[[], bool], within: float = 10.0) -> None:
    # Signals are delivered asynchronously; the kernel offers nothing to await.
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


@pytest.fixture
def family(tmp_path: Path) -> Iterator[tuple[ManagedProcess, list[int]]]:
    log = tmp_path / "family.log"
    process = ManagedProcess("family", [sys.executable, "-c", _FAMILY], log)
    process.start()
    try:
        # The log's first line echoes the command, which contains "pids " too.
        def lines() -> list[str]:
            return [x for x in log.read_text().splitlines() if x.startswith("pids ")]

        _until(lambda: bool(lines()))
        yield process, [int(p) for p in lines()[0].split()[1:]]
    finally:
        process.kill()


def test_pause_stops_every_process_of_the_group_and_resume_continues_them(
    family: tuple[ManagedProcess, list[int]],
) -> None:
    process, pids = family
    process.pause()
    assert process.paused
    _until(lambda: all(_state(p) == "T" for p in pids))
    process.resume()
    assert not process.paused
    _until(lambda: all(_state(p) != "T" for p in pids))
    assert process.running


def test_a_paused_process_still_stops_on_sigterm(
    family: tuple[ManagedProcess, list[int]],
) -> None:
    process, pids = family
    process.pause()
    _until(lambda: _state(pids[0]) == "T")
    started = time.monotonic()
    process.stop(timeout=10)
    # Well under the timeout: SIGTERM acted on, not the SIGKILL fallback.
    assert time.monotonic() - started < 5
    assert not process.running and not process.paused


def test_pausing_a_process_that_is_not_running_is_an_error(tmp_path: Path) -> None:
    process = ManagedProcess("idle", [sys.executable, "-c", "pass"], tmp_path / "idle.log")
    with pytest.raises(ServerError, match="not running"):
        process.pause()
    process.resume()  # harmless
