"""A deliberately broken frontend makes exactly the cases about its broken behaviour fail."""

from __future__ import annotations

from pathlib import Path

from ._run import PYTHON_FRONTEND, run_tck

SNAPSHOT_CASES = {
    "eventsourced.snapshot-every-5",
    "eventsourced.init-with-snapshot-and-events",
    "eventsourced.side-effects-several-with-events-and-snapshot",
    "eventsourced.failure-does-not-count-for-snapshots",
}


def test_dropped_snapshots_fail_the_snapshot_cases(tmp_path: Path) -> None:
    run = run_tck(
        tmp_path,
        ["--service", PYTHON_FRONTEND, "--no-proxy", "-k", "eventsourced.*"],
        env={"LARDER_TCK_BREAK": "drop-snapshots"},
    )
    assert run.returncode == 1, run.output
    assert run.names("failed") == SNAPSHOT_CASES, run.output
    for name in SNAPSHOT_CASES:
        failure = run.failures[name]
        # The report points at the missing snapshot: the hint and a diff line removing it.
        assert "snapshot of the state after the command's events" in failure, failure
        assert "-    snapshot {" in failure, failure
    assert run.stdout.strip().splitlines()[-1] == (
        f"{len(run.statuses) - len(SNAPSHOT_CASES)} passed, {len(SNAPSHOT_CASES)} failed, 0 skipped"
    )


def test_ignored_side_effects_fail_the_side_effect_cases(tmp_path: Path) -> None:
    run = run_tck(
        tmp_path,
        ["--service", PYTHON_FRONTEND, "-k", "*side-effect*", "-k", "*forward-and-side*"],
        env={"LARDER_TCK_BREAK": "ignore-side-effects"},
    )
    assert run.returncode == 1, run.output
    assert run.names("passed") == set(), run.output
    assert run.names("failed") == {
        "eventsourced.side-effect-synchronous",
        "eventsourced.side-effect-asynchronous",
        "eventsourced.side-effects-several-with-events-and-snapshot",
        "eventsourced.forward-with-side-effects",
        "eventsourced.failure-discards-side-effects",
        "valueentity.side-effects",
        "action.unary-side-effects",
        "proxy.eventsourced.forward-and-side-effects",
    }, run.output
    assert "-    side_effects {" in run.failures["eventsourced.side-effect-synchronous"]


PREVIOUS_ROW_CASES = {
    "view.state-with-previous-row",
    "view.event-with-and-without-previous-row",
    "proxy.view.value-entity-transform",
    "proxy.view.event-sourced",
    "proxy.view.ignored-change",
}


def test_a_view_ignoring_the_stored_row_fails_the_previous_row_cases(tmp_path: Path) -> None:
    run = run_tck(
        tmp_path,
        ["--service", PYTHON_FRONTEND, "-k", "view.*", "-k", "proxy.view.*"],
        env={"LARDER_TCK_BREAK": "ignore-previous-row"},
    )
    assert run.returncode == 1, run.output
    assert run.names("failed") == PREVIOUS_ROW_CASES, run.output
    # The rows without a previous row, the ignored change and the failure still pass.
    assert run.names("passed") == set(run.statuses) - PREVIOUS_ROW_CASES, run.output
    model = run.failures["view.state-with-previous-row"]
    assert "by_subject_lookup_result as its previous row" in model, model
    assert "+          updates: 1" in model, model
