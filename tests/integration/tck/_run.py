"""Running `larder-tck` as a subprocess, as a language author would, and reading its results."""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
BIN = Path(sys.executable).parent
PYTHON_FRONTEND = f"{BIN / 'python'} {ROOT / 'tck' / 'frontends' / 'python' / 'main.py'}"
TCK_TIMEOUT_S = 540.0


@dataclass(frozen=True)
class TckRun:
    returncode: int
    output: str
    """stdout and stderr."""
    stdout: str
    statuses: dict[str, str]
    """case name -> passed / failed / skipped, from the JUnit XML."""
    failures: dict[str, str]
    """case name -> the failure text."""

    def names(self, status: str) -> set[str]:
        return {name for name, s in self.statuses.items() if s == status}


def run_tck(tmp: Path, args: Sequence[str], env: Mapping[str, str] | None = None) -> TckRun:
    junit = tmp / "junit.xml"
    done = subprocess.run(
        [str(BIN / "larder-tck"), *args, "--junit-xml", str(junit), "--logs", str(tmp / "logs")],
        capture_output=True,
        text=True,
        timeout=TCK_TIMEOUT_S,
        env={**os.environ, **(env or {})},
        check=False,
    )
    statuses: dict[str, str] = {}
    failures: dict[str, str] = {}
    if junit.exists():
        for case in ET.parse(junit).getroot().iter("testcase"):
            name = case.get("name", "")
            failure = case.find("failure")
            if failure is not None:
                statuses[name] = "failed"
                failures[name] = failure.text or ""
            elif case.find("skipped") is not None:
                statuses[name] = "skipped"
            else:
                statuses[name] = "passed"
    return TckRun(done.returncode, done.stdout + done.stderr, done.stdout, statuses, failures)
