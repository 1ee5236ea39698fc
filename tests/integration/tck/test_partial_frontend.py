"""A frontend serving only some component types gets the others SKIPPED, never failed."""

from __future__ import annotations

from pathlib import Path

from ._run import PYTHON_FRONTEND, run_tck


def test_unimplemented_component_types_are_skipped(tmp_path: Path) -> None:
    run = run_tck(
        tmp_path,
        ["--service", PYTHON_FRONTEND, "--no-proxy"],
        env={"LARDER_TCK_ONLY": "action"},
    )
    assert run.returncode == 0, run.output
    skipped = run.names("skipped")
    assert {n.split(".")[0] for n in skipped} == {"eventsourced", "valueentity", "view"}, run.output
    passed = run.names("passed")
    assert {n.split(".")[0] for n in passed} == {"action", "discovery"}, run.output
    assert "the frontend declares no event-sourced entity model components" in run.output
    assert "the frontend declares no view model components" in run.output


def test_unreachable_frontend_fails(tmp_path: Path) -> None:
    run = run_tck(tmp_path, ["--service", "exit 3", "--startup-timeout", "5"])
    assert run.returncode == 2, run.output
    assert "the frontend exited with 3 before serving" in run.output
    assert run.stdout.strip().splitlines()[-1] == "0 passed, 1 failed, 0 skipped"
