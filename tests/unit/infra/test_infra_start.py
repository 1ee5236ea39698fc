"""`python -m tests.infra start NAME` stops its server however it is told to stop: Ctrl-C
in the foreground, and SIGTERM or SIGHUP too (a `kill`, a timeout, a closed terminal),
which used to end the command and leave the server's JVM running. Run in a child process
with a stand-in server whose `close` leaves a mark, so a signal that still ended the
command without closing would not take the test run with it."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]

CHILD = """
import signal
import sys

# As a shell's `&` starts it: SIGINT ignored, which the command must undo.
signal.signal(signal.SIGINT, signal.SIG_IGN)

from pathlib import Path
from tests.infra import __main__ as command

mark = Path(sys.argv[1])

class StandIn:
    def details(self):
        return {"port": 1}

    def close(self):
        mark.write_text("closed")

command.servers.launch = lambda name, workdir: StandIn()
sys.exit(command._start("cassandra"))
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_a_signal_stops_the_server_it_started(tmp_path: Path, sig: signal.Signals) -> None:
    mark = tmp_path / "closed"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(mark)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        for line in child.stdout:
            if line.startswith("logs:"):
                break
        child.send_signal(sig)
        assert child.wait(timeout=20) == 0
    finally:
        child.kill()
        child.wait()
    assert mark.read_text() == "closed"
