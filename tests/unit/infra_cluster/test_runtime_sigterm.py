"""A container's graceful stop: SIGTERM reaches the container's own process, past a
runtime process that would kill it at once on a SIGTERM of its own (as buildah's chroot
helper does), and the grace period is honoured."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from tests.infra.cluster.runtime import RunningProcess, RunSpec

# Stands in for buildah: runs the container's process and, like buildah's chroot helper,
# answers its own SIGTERM by killing that process outright.
RUNTIME = """
import signal, subprocess, sys
child = subprocess.Popen(sys.argv[1:])
signal.signal(signal.SIGTERM, lambda *_: child.kill())
sys.exit(child.wait())
"""

CONTAINER = """
import signal, sys, time
def bye(*_):
    time.sleep(0.5)
    print("clean exit", flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, bye)
print("up", flush=True)
while True:
    time.sleep(0.05)
"""


def command_of(pid: int) -> str:
    return Path(f"/proc/{pid}/comm").read_text().strip()


async def test_sigterm_goes_to_the_container_not_the_runtime(tmp_path: Path) -> None:
    runtime = tmp_path / "buildah"
    runtime.symlink_to(sys.executable)
    (tmp_path / "runtime.py").write_text(RUNTIME)
    (tmp_path / "container.py").write_text(CONTAINER)
    log = tmp_path / "log"
    with log.open("ab") as out:
        process = await asyncio.create_subprocess_exec(
            str(runtime), str(tmp_path / "runtime.py"), sys.executable,
            str(tmp_path / "container.py"),
            stdout=out, stderr=out, start_new_session=True,
        )
    running = RunningProcess(RunSpec("c", "ns", ("x",), log_path=log), process)
    for _ in range(100):
        if "up" in log.read_text():
            break
        await asyncio.sleep(0.05)
    assert command_of(process.pid) == "buildah"
    assert await running.stop(10.0) == 0
    assert log.read_text().split() == ["up", "clean", "exit"]
