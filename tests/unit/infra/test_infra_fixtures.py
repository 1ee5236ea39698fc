from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.infra import fixtures, logs
from tests.infra.errors import ServerError
from tests.infra.process import ManagedProcess


class _FakeServer:
    def __init__(self, process: ManagedProcess) -> None:
        self.process = process

    def details(self) -> dict[str, str]:
        return {}

    def close(self) -> None:
        self.process.stop(timeout=5)


def test_a_server_that_never_gets_ready_keeps_its_logs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(logs, "KEPT_LOGS_DIR", tmp_path / "test-logs")
    started = fixtures._StartedServers(tmp_path / "work")

    def start(workdir: Path) -> _FakeServer:
        process = ManagedProcess(
            "fake", [sys.executable, "-c", "print('cannot bind')"], workdir / "fake.log"
        )
        process.start()
        process.wait_until(lambda: False, timeout=30, what="ready")
        return _FakeServer(process)

    with pytest.raises(ServerError, match="cannot bind"):
        next(fixtures._serve(started, "fake", start))
    assert "cannot bind" in (tmp_path / "test-logs" / "fake" / "fake.log").read_text()


def test_a_served_server_is_closed_at_teardown(tmp_path: Path) -> None:
    started = fixtures._StartedServers(tmp_path / "work")

    def start(workdir: Path) -> _FakeServer:
        process = ManagedProcess(
            "sleeper", [sys.executable, "-c", "import time; time.sleep(60)"], workdir / "s.log"
        )
        process.start()
        return _FakeServer(process)

    serving = fixtures._serve(started, "sleeper", start)
    server = next(serving)
    assert server.process.running
    with pytest.raises(StopIteration):
        next(serving)
    assert not server.process.running
    assert started.workdirs == {"sleeper": tmp_path / "work" / "sleeper"}
