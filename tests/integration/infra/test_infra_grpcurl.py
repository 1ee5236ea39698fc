"""The provisioned grpcurl runs and is the pinned version."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.infra import versions


def test_version(grpcurl_binary: Path) -> None:
    done = subprocess.run(
        [str(grpcurl_binary), "-version"], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    # grpcurl prints its version on stderr.
    assert (done.stdout + done.stderr).split() == ["grpcurl", versions.GRPCURL.version]
