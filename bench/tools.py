"""Helpers the benchmarks share: load generators, free ports, processes, memory.

`ghz` is built once through the Go module proxy into `~/.cache/larder/tools` (the
version is pinned here); `wrk` comes from Debian (`scripts/system-packages.sh`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

GHZ_MODULE = "github.com/bojand/ghz/cmd/ghz"
GHZ_VERSION = "v0.121.0"
TOOLS_DIR = Path(os.environ.get("LARDER_TOOLS_DIR", Path.home() / ".cache" / "larder" / "tools"))


class ToolUnavailable(Exception):
    """A load generator is missing and cannot be provisioned here; the message says how."""


def ghz() -> Path:
    """The pinned ghz binary, built with `go install` on first use."""
    versioned = TOOLS_DIR / f"ghz-{GHZ_VERSION}"
    if versioned.exists():
        return versioned
    go = shutil.which("go")
    if go is None:
        raise ToolUnavailable(
            "ghz is not cached and `go` is not on PATH; install Go (>= 1.21) so the benchmark "
            f"can build {GHZ_MODULE}@{GHZ_VERSION} through the Go module proxy"
        )
    TOOLS_DIR.mkdir(parents=True, exist_ok=True)
    build_dir = TOOLS_DIR / f".ghz-{GHZ_VERSION}-build"
    env = {**os.environ, "GOBIN": str(build_dir)}
    print(f"building {GHZ_MODULE}@{GHZ_VERSION} (once, cached in {TOOLS_DIR}) ...", flush=True)
    done = subprocess.run(
        [go, "install", f"{GHZ_MODULE}@{GHZ_VERSION}"],
        env=env, capture_output=True, text=True, check=False,
    )
    if done.returncode != 0:
        raise ToolUnavailable(
            f"building ghz failed (is the Go module proxy reachable? GOPROXY="
            f"{os.environ.get('GOPROXY', 'default')}):\n{done.stderr[-2000:]}"
        )
    (build_dir / "ghz").rename(versioned)
    shutil.rmtree(build_dir, ignore_errors=True)
    return versioned


def wrk() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise ToolUnavailable(
            "wrk is not installed; `apt-get install -y wrk` (scripts/system-packages.sh does it)"
        )
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_port(port: int, process: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    """Wait until something accepts on 127.0.0.1:port; fail early if `process` died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with {process.returncode} before "
                               f"listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on port {port} after {timeout:.0f}s")


def rss_bytes(pid: int) -> int:
    """Resident set size of one process (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time one process has used so far (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def listener_pid(port: int) -> int | None:
    """The process listening on TCP `port` (Linux /proc), None if there is none we can see.

    Lets a benchmark charge CPU to a server it did not start (`--port`)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                # State 0A is LISTEN; the local address ends in the port in hex.
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(f"socket:[{fields[9]}]")
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in (proc / "fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) in inodes:
                        return int(proc.name)
    return None


def stop(process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after `timeout`."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
