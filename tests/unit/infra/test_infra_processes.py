from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from tests.infra.errors import ProvisionError, ServerError
from tests.infra.logs import keep_logs
from tests.infra.process import ManagedProcess
from tests.infra.procs import Step, run_step

STEP = Step("kafka", "4.3.1")


def test_a_failing_step_names_component_version_and_step() -> None:
    with pytest.raises(ProvisionError) as info:
        run_step(
            STEP,
            "maven resolve",
            [sys.executable, "-c", "print('no route to host'); raise SystemExit(3)"],
            timeout=30,
        )
    message = str(info.value)
    assert "kafka 4.3.1" in message
    assert "maven resolve" in message
    assert "no route to host" in message
    assert info.value.step == "maven resolve"


def test_a_step_that_hangs_is_stopped_by_its_timeout() -> None:
    with pytest.raises(ProvisionError, match="timed out"):
        run_step(
            STEP, "go build", [sys.executable, "-c", "import time; time.sleep(30)"], timeout=0.5
        )


def test_a_missing_tool_is_reported_as_such() -> None:
    with pytest.raises(ProvisionError, match="not installed"):
        run_step(STEP, "maven resolve", ["larder-no-such-tool"], timeout=5)


def test_readiness_fails_with_the_log_tail_when_the_server_exits(tmp_path: Path) -> None:
    code = "print('binding port'); print('fatal: address in use'); raise SystemExit(1)"
    process = ManagedProcess("fake", [sys.executable, "-c", code], tmp_path / "fake.log")
    process.start()
    with pytest.raises(ServerError) as info:
        process.wait_until(lambda: False, timeout=30, what="ready")
    assert "exited (code 1)" in str(info.value)
    assert "fatal: address in use" in str(info.value)


def test_readiness_times_out_with_the_log_tail(tmp_path: Path) -> None:
    code = "import time; print('still starting', flush=True); time.sleep(60)"
    process = ManagedProcess("slow", [sys.executable, "-c", code], tmp_path / "slow.log")
    process.start()
    try:
        with pytest.raises(ServerError, match="not ready within") as info:
            process.wait_until(lambda: False, timeout=1, what="ready")
        assert "still starting" in str(info.value)
    finally:
        process.stop(timeout=5)
    assert not process.running


def test_stop_and_start_again(tmp_path: Path) -> None:
    process = ManagedProcess(
        "loop", [sys.executable, "-c", "import time; time.sleep(60)"], tmp_path / "l.log"
    )
    process.start()
    assert process.running
    process.stop(timeout=5)
    assert not process.running
    process.start()
    assert process.running
    process.kill()
    assert not process.running
    assert process.tail().count("=== larder: starting") == 2


def test_logs_are_copied_for_a_failed_run(tmp_path: Path) -> None:
    workdir = tmp_path / "work"
    (workdir / "nested").mkdir(parents=True)
    (workdir / "server.log").write_text("boom")
    (workdir / "nested" / "other.log").write_text("bang")
    (workdir / "data.db").write_text("not a log")
    dest = keep_logs("kafka", workdir, tmp_path / "test-logs")
    assert (dest / "server.log").read_text() == "boom"
    assert (dest / "nested" / "other.log").read_text() == "bang"
    assert not (dest / "data.db").exists()


def _alive(pid: int) -> bool:
    # A killed orphan may linger as a zombie until its new parent reaps it.
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


def test_a_timed_out_step_takes_its_child_processes_with_it(tmp_path: Path) -> None:
    # `go build` runs the compiler as child processes; they must not keep compiling
    # (into a staging directory about to be removed) after the step gave up.
    pid_file = tmp_path / "grandchild.pid"
    code = (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        f"open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
        "time.sleep(60)\n"
    )
    with pytest.raises(ProvisionError, match="timed out"):
        run_step(STEP, "go build", [sys.executable, "-c", code], timeout=2)
    grandchild = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while _alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(grandchild)
