"""The on-disk cache of provisioned servers, one directory per component and version.

An entry is built in a temporary sibling directory and renamed into place only
after its marker file has been written, so a directory under its final name is
always complete: an interrupted or failed build leaves nothing a later run trusts.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

MARKER = ".larder-complete.json"
CACHE_ENV = "LARDER_CACHE"


def cache_root() -> Path:
    override = os.environ.get(CACHE_ENV)
    if override:
        return Path(override).expanduser()
    return Path.home() / ".cache" / "larder"


def entry_key(version: str, recipe: str) -> str:
    """`<version>-<8 hex digits of the recipe>`: readable, and new whenever the recipe changes."""
    digest = hashlib.sha256(recipe.encode()).hexdigest()[:8]
    return f"{version}-{digest}"


def entry_dir(component: str, version: str, root: Path | None = None) -> Path:
    return (root or cache_root()) / component / version


def is_complete(entry: Path) -> bool:
    return (entry / MARKER).is_file()


@contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    # Two sessions (or a developer and CI) may provision at once; the second one
    # waits and then finds the entry complete instead of building it again.
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_entry(entry: Path, build: Callable[[Path], None]) -> bool:
    """Make `entry` complete, calling `build(staging_dir)` if it is not.

    Returns True when the entry was already cached. `build` fills the staging
    directory it is given; an exception from it removes the staging directory
    and leaves any previous state of `entry` untouched.
    """
    if is_complete(entry):
        return True
    with _exclusive(entry.parent / f".{entry.name}.lock"):
        if is_complete(entry):
            return True
        if entry.exists():
            # A directory without a marker was not made by this module's rename;
            # it cannot be trusted, so it is rebuilt.
            shutil.rmtree(entry)
        staging = Path(tempfile.mkdtemp(prefix=f".{entry.name}.building-", dir=entry.parent))
        staging.chmod(0o755)  # mkdtemp's 0700 would make the entry private to this user
        try:
            started = time.time()
            build(staging)
            marker = {
                "entry": entry.name,
                "built_at": time.time(),
                "seconds": time.time() - started,
            }
            (staging / MARKER).write_text(json.dumps(marker))
            staging.rename(entry)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return False
