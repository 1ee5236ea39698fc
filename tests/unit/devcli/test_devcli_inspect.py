"""`larder inspect` runs the inspector as a process of the same interpreter."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

from larder_dev.cli import inspect_command
from larder_sidecar.journal.base import StoredPayload, persistence_id
from larder_sidecar.journal.sqlite import SqliteJournal

LARDER = Path(sys.executable).parent / "larder"


def _larder(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(LARDER), *argv], capture_output=True, text=True, timeout=60,
                          check=False)


def test_the_command_is_the_inspector_module_of_this_interpreter() -> None:
    assert inspect_command(["types", "--sqlite", "j.db"]) == [
        sys.executable, "-m", "larder_sidecar.inspector", "types", "--sqlite", "j.db"]


async def _journal(path: Path) -> None:
    journal = SqliteJournal(path)
    await journal.start()
    try:
        pid = persistence_id("shop.Cart", "alice")
        await journal.append(pid, 0, [StoredPayload("type.googleapis.com/x.E", b"\x01")])
    finally:
        await journal.close()


def test_larder_inspect_prints_what_the_inspector_prints_and_exits_as_it_does(
    tmp_path: Path,
) -> None:
    path = tmp_path / "journal.db"
    asyncio.run(_journal(path))
    done = _larder("inspect", "events", "shop.Cart", "alice", "--sqlite", str(path),
                   "--output", "jsonl")
    assert (done.returncode, done.stderr) == (0, "")
    assert [json.loads(line) for line in done.stdout.splitlines()] == [
        {"sequence_nr": 1, "written_at": None, "type_url": "type.googleapis.com/x.E",
         "payload_base64": "AQ=="}]
    missing = _larder("inspect", "events", "shop.Cart", "bob", "--sqlite", str(path))
    assert missing.returncode == 2
    assert missing.stderr.startswith("larder inspect: no entity shop.Cart 'bob'")


def test_help_lists_inspect_and_its_own_help_its_commands() -> None:
    assert "inspect" in _larder("--help").stdout
    shown = _larder("inspect", "--help")
    assert shown.returncode == 0
    assert shown.stdout.startswith("usage: larder inspect")
    for command in ("types", "ids", "entity", "events", "snapshot", "value"):
        assert command in shown.stdout
