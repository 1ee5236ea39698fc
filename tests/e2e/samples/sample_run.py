"""One `larder dev` run of a sample, shared by a test module."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.e2e.devcli.larder_dev import REPO, LarderDev, port_options

SAMPLES = REPO / "samples"


@contextmanager
def running_sample(name: str, data_dir: Path) -> Iterator[int]:
    """Run samples/<name> behind a sidecar (in-memory journal); yields the public port."""
    port, options = port_options()
    run = LarderDev([*options, "--journal", "memory", "--data-dir", str(data_dir),
                     str(SAMPLES / name)], cwd=data_dir)
    try:
        run.wait_for_line("is ready at")
        yield port
        assert run.stop() == 0
        assert run.processes() == []
    finally:
        run.kill()


def curl(command: str) -> str:
    """Run a README's curl command line as a user would, in a shell; its output."""
    assert shutil.which("curl"), "the README examples need curl on PATH"
    done = subprocess.run(["sh", "-c", f"{command} -sS"], capture_output=True, text=True,
                          timeout=30, check=True)
    return done.stdout
