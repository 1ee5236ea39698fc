"""The npm SDK 0.32.0 frontend: exactly the documented deviations fail, everything else passes."""

from __future__ import annotations

import json
from pathlib import Path

import larder_tck.model

from tests.infra.published_sdks import provision

from ._run import ROOT, run_tck

FRONTEND = ROOT / "tck" / "frontends" / "javascript"


def test_javascript_frontend_fails_only_the_known_deviations(tmp_path: Path) -> None:
    sdks = provision()
    descriptor = larder_tck.model.compile_descriptor_set(tmp_path / "user-function.desc")
    expected = json.loads((FRONTEND / "expected_failures.json").read_text())
    assert all(reason for reason in expected.values())
    run = run_tck(
        tmp_path,
        ["--service", f"cd {FRONTEND} && exec node index.js"],
        env={"AKKASERVERLESS_SDK": str(sdks.npm_package), "TCK_DESCRIPTOR": str(descriptor)},
    )
    assert run.statuses, run.output
    assert run.names("failed") == set(expected), run.output
    assert run.names("skipped") == set(), run.output
