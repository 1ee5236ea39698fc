"""Keeping the servers' logs where a developer looks after a failed run: `test-logs/`."""

from __future__ import annotations

import shutil
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
KEPT_LOGS_DIR = REPO_ROOT / "test-logs"


def keep_logs(name: str, workdir: Path, dest_root: Path | None = None) -> Path:
    """Copy every `*.log` of a server's work directory to `dest_root/name/`
    (default: `test-logs/<name>/` at the repository root)."""
    dest = (dest_root or KEPT_LOGS_DIR) / name
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for log in sorted(workdir.rglob("*.log")):
        target = dest / log.relative_to(workdir)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(log, target)
    return dest
