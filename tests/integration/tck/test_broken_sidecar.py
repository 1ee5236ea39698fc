"""The proxy cases hold the sidecar to account: a journal that forgets fails the restart case."""

from __future__ import annotations

import shlex
from pathlib import Path

from ._run import BIN, PYTHON_FRONTEND, run_tck

CASE = "proxy.eventsourced.sqlite-restart"


def test_a_sidecar_that_loses_state_on_restart_fails_the_journal_case(tmp_path: Path) -> None:
    # `env` runs after the TCK sets LARDER_JOURNAL_TYPE=sqlite, so the sidecar keeps its
    # journal in memory and forgets everything when it is killed.
    forgetful = f"env LARDER_JOURNAL_TYPE=memory {shlex.quote(str(BIN / 'larder-sidecar'))}"
    run = run_tck(
        tmp_path, ["--service", PYTHON_FRONTEND, "--sidecar-command", forgetful, "-k", CASE]
    )
    assert run.returncode == 1, run.output
    assert run.names("failed") == {CASE}, run.output
    failure = run.failures[CASE]
    assert "the state after the restart" in failure, failure
    assert '-  message: "ABCDEF"' in failure, failure
