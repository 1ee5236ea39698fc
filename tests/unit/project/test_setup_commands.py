"""The README promises exactly two set-up commands; CI must run the second one."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def _setup_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Set up", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block, "README's 'Set up' section has no ```sh block"
    return [line.split("#", 1)[0].strip() for line in block.group(1).splitlines() if line.strip()]


def test_readme_has_exactly_two_setup_commands() -> None:
    assert _setup_commands() == ["make dev", "make check"]


def test_ci_runs_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    commands = [
        line.strip()
        for line in ci.splitlines()
        if line.strip() and not line.lstrip().startswith(("#", "set ", "cd "))
    ]
    assert commands == [f"exec {_setup_commands()[1]}"]


def test_make_targets_exist() -> None:
    for target in ("dev", "check"):
        result = subprocess.run(
            ["make", "-n", "-C", str(ROOT), target], capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, result.stderr


def test_check_script_refuses_an_empty_test_run() -> None:
    # pytest exits 5 when it collects nothing; CI must not read that as success.
    script = (ROOT / "scripts" / "check.sh").read_text()
    assert '"$rc" -eq 5' in script and "exit 1" in script
