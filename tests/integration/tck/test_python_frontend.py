"""The Python SDK frontend must pass every TCK case (model and proxy)."""

from __future__ import annotations

from pathlib import Path

from ._run import PYTHON_FRONTEND, run_tck


def test_python_frontend_passes_everything(tmp_path: Path) -> None:
    run = run_tck(tmp_path, ["--service", PYTHON_FRONTEND])
    assert run.statuses, run.output
    assert run.names("failed") == set(), run.output
    assert run.names("skipped") == set(), run.output
    assert run.returncode == 0, run.output
    last = run.stdout.strip().splitlines()[-1]
    assert last == f"{len(run.statuses)} passed, 0 failed, 0 skipped"
