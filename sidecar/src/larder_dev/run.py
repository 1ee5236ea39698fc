"""`larder dev`'s supervisor: a user function and a sidecar as two child processes.

Each child runs in its own session (so a terminal's Ctrl-C reaches only us and we
decide the stopping order) and gets `PR_SET_PDEATHSIG`, so even a `kill -9` of
`larder dev` does not leave a function or sidecar behind. Stopping sends SIGTERM to
the child's whole process group (a `npm start` wrapper and its node process alike),
then SIGKILL after the grace period; every wait while stopping is bounded, so
`larder dev` exits whatever a child does.

A child's output goes to a pipe of our own rather than asyncio's: asyncio's
`Process.wait()` also waits for its pipes to close, which a blocked relay or a
grandchild holding the pipe can put off forever. The relay (`relay.py`) is a task
watched like the children: if it ends with an error, the run stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import os
import signal
import socket
import sys
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TextIO

import grpc

from larder_dev.examples import generic_examples, readme_examples, reflected_services
from larder_dev.function import DevInputError, FunctionSpec
from larder_dev.relay import relay

JournalKind = Literal["memory", "sqlite"]

_PR_SET_PDEATHSIG = 1
_READY_POLL_S = 0.2
_PROBE_TIMEOUT_S = 2.0
# After SIGKILL only a process stuck in the kernel takes longer than this to go.
_KILLED_EXIT_S = 5.0
# Once the children are gone, how long their last output gets to come through.
_DRAIN_S = 2.0


class DevRunError(Exception):
    """Something went wrong while running; the message says what and what to do."""


@dataclass(frozen=True)
class DevSettings:
    function: FunctionSpec
    public_port: int
    admin_port: int
    internal_port: int
    function_port: int
    journal: JournalKind
    data_dir: Path
    sidecar_command: tuple[str, ...]
    ready_timeout_s: float = 120.0
    grace_s: float = 5.0

    @property
    def journal_path(self) -> Path:
        return self.data_dir / self.function.name / "journal.db"


def kafka_configured(env: Mapping[str, str]) -> bool:
    """Whether the environment passed to `larder dev` says where Kafka is, or says
    itself whether eventing is on."""
    return any(env.get(name, "").strip() for name in (
        "LARDER_KAFKA_BOOTSTRAP_SERVERS", "LARDER_KAFKA_PROPERTIES_FILE", "LARDER_EVENTING"))


def check_ports_free(ports: Mapping[str, int]) -> None:
    """Raise DevInputError naming the option to change when a port is taken."""
    seen: dict[int, str] = {}
    for option, port in ports.items():
        if port in seen:
            raise DevInputError(f"{option} and {seen[port]} are both {port}; give them "
                                "different ports")
        seen[port] = option
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            # Servers set SO_REUSEADDR, so a port in TIME_WAIT is usable for them
            # too; only a live listener makes this bind fail.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", port))
            except OSError as e:
                if e.errno != errno.EADDRINUSE:
                    raise
                raise DevInputError(
                    f"port {port} is already in use (another `larder dev` or server?); "
                    f"stop it or pass a free port with {option}"
                ) from e


def _die_with_parent() -> Callable[[], None]:
    libc = ctypes.CDLL(None, use_errno=True)
    prctl = libc.prctl

    def in_child() -> None:
        # Runs between fork and exec: only the pre-bound C call, nothing that locks.
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)

    return in_child


@dataclass
class _Child:
    label: str
    process: asyncio.subprocess.Process
    output: asyncio.ReadTransport
    relay: asyncio.Task[None]

    @property
    def running(self) -> bool:
        return self.process.returncode is None


class DevRunner:
    """Starts both processes, reports readiness, stops both; one instance per run."""

    def __init__(self, settings: DevSettings, out: TextIO = sys.stdout) -> None:
        self._settings = settings
        self._out = out
        self._children: list[_Child] = []
        self._stop = asyncio.Event()
        self._hurry = False
        self._failure: DevRunError | None = None

    def say(self, message: str) -> None:
        # Our own output may be what failed (a closed pipe: `larder dev | head`); the
        # relays notice that and stop the run, which must not depend on printing.
        with contextlib.suppress(OSError):
            print(f"[larder] {message}", file=self._out, flush=True)

    async def run(self) -> int:
        """Run until a stop signal (exit 0) or an unexpected child exit (DevRunError)."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._on_signal)
        try:
            await self._start()
            if await self._until_ready():
                await self._announce()
                await self._until_stop_or_exit()
            if self._failure is not None:
                raise self._failure
            return 0
        finally:
            await self._stop_all()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    def _on_signal(self) -> None:
        if self._stop.is_set():
            # A second Ctrl-C: the user does not want to wait for the grace period.
            self._hurry = True
            for child in self._children:
                _signal_group(child.process, signal.SIGKILL)
        self._stop.set()

    async def _start(self) -> None:
        s = self._settings
        check_ports_free({"--port": s.public_port, "--admin-port": s.admin_port,
                          "--internal-port": s.internal_port,
                          "--function-port": s.function_port})
        if s.journal == "sqlite":
            s.journal_path.parent.mkdir(parents=True, exist_ok=True)
        self.say(f"starting {s.function.name} ({s.function.source}): "
                 f"{' '.join(s.function.command)}")
        function_env = {
            **os.environ,
            # `python` in a start command means the interpreter larder runs on, as
            # in an activated virtualenv, so the SDK installed beside it is found.
            "PATH": os.pathsep.join([str(Path(sys.executable).parent),
                                     os.environ.get("PATH", os.defpath)]),
            "PYTHONUNBUFFERED": "1",
            **s.function.env,
            "HOST": "127.0.0.1",
            "PORT": str(s.function_port),
        }
        await self._spawn("function", s.function.command, s.function.cwd, function_env)
        sidecar_env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "USER_FUNCTION_HOST": "127.0.0.1",
            "USER_FUNCTION_PORT": str(s.function_port),
            "LARDER_PORT": str(s.public_port),
            "LARDER_ADMIN_PORT": str(s.admin_port),
            "LARDER_INTERNAL_PORT": str(s.internal_port),
            "LARDER_JOURNAL_TYPE": s.journal,
        }
        if s.journal == "sqlite":
            sidecar_env["LARDER_JOURNAL_SQLITE_PATH"] = str(s.journal_path)
        if not kafka_configured(os.environ):
            # Without Kafka, eventing methods are still served over gRPC/HTTP instead
            # of the sidecar refusing to start.
            # The sidecar logs which methods that concerns.
            sidecar_env["LARDER_EVENTING"] = "off"
        await self._spawn("sidecar", s.sidecar_command, Path.cwd(), sidecar_env)

    async def _spawn(self, label: str, command: tuple[str, ...], cwd: Path,
                     env: Mapping[str, str]) -> None:
        read_fd, write_fd = os.pipe()
        pipe = os.fdopen(read_fd, "rb", buffering=0)  # the transport closes it
        reader = asyncio.StreamReader()
        try:
            output, _ = await asyncio.get_running_loop().connect_read_pipe(
                lambda: asyncio.StreamReaderProtocol(reader), pipe)
        except BaseException:
            pipe.close()
            os.close(write_fd)
            raise
        try:
            process = await asyncio.create_subprocess_exec(
                *command, cwd=cwd, env=dict(env),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=write_fd, stderr=asyncio.subprocess.STDOUT,
                start_new_session=True, preexec_fn=_die_with_parent(),
            )
        except FileNotFoundError as e:
            output.close()
            raise DevRunError(f"the {label} command `{command[0]}` was not found; install it "
                              "or fix the start command") from e
        except PermissionError as e:
            output.close()
            raise DevRunError(f"the {label} command `{command[0]}` is not executable") from e
        except BaseException:
            output.close()
            raise
        finally:
            # Only the child (and what it starts) holds the writing end now, so the
            # relay sees EOF once they have all gone.
            os.close(write_fd)
        task = asyncio.create_task(relay(reader, self._out, f"[{label}] "),
                                   name=f"{label}-output")
        child = _Child(label, process, output, task)
        task.add_done_callback(lambda _: self._relay_ended(child))
        self._children.append(child)

    def _relay_ended(self, child: _Child) -> None:
        # EOF is a normal end (the child closed its output, or exited). After an error
        # nobody reads the child's output any more and it would block on its next
        # write, so the run stops.
        if child.relay.cancelled():
            return
        error = child.relay.exception()
        if error is None or self._failure is not None:
            return
        self._failure = DevRunError(
            f"relaying the {child.label}'s output failed ({type(error).__name__}: {error}); "
            "stopped both processes")
        self._stop.set()
        self.say(f"relaying the {child.label}'s output failed:\n"
                 + "".join(traceback.format_exception(error)).rstrip())

    async def _until_ready(self) -> bool:
        """True once ready; False when a stop signal came first."""
        s = self._settings
        exits = {asyncio.create_task(c.process.wait(), name=f"{c.label}-exit"): c
                 for c in self._children}
        probe = asyncio.create_task(self._poll_ready(), name="readiness")
        stop = asyncio.create_task(self._stop.wait(), name="stop-signal")
        try:
            done, _ = await asyncio.wait({probe, stop, *exits},
                                         timeout=s.ready_timeout_s,
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (probe, stop, *exits):
                task.cancel()
            await asyncio.gather(probe, stop, *exits, return_exceptions=True)
        if stop in done:
            return False
        if probe in done:
            return True
        for task, child in exits.items():
            if task in done:
                raise DevRunError(self._early_exit_message(child))
        raise DevRunError(
            f"not ready after {s.ready_timeout_s:.0f}s (http://127.0.0.1:{s.admin_port}/readyz); "
            "see the [function] and [sidecar] lines above, or raise --ready-timeout"
        )

    def _early_exit_message(self, child: _Child) -> str:
        code = child.process.returncode
        if child.label == "function":
            return (f"the user function exited with code {code} before it was ready; "
                    "see the [function] lines above and fix its start command or its code")
        return (f"the sidecar exited with code {code} before it was ready; "
                "see the [sidecar] lines above")

    async def _poll_ready(self) -> None:
        # Readiness lives in another process; asking again is the only way to learn it.
        while not await self._probe_ready():  # noqa: ASYNC110
            await asyncio.sleep(_READY_POLL_S)

    async def _probe_ready(self) -> bool:
        try:
            async with asyncio.timeout(_PROBE_TIMEOUT_S):
                reader, writer = await asyncio.open_connection(
                    "127.0.0.1", self._settings.admin_port)
                try:
                    writer.write(b"GET /readyz HTTP/1.0\r\nHost: localhost\r\n\r\n")
                    await writer.drain()
                    status_line = await reader.readline()
                finally:
                    writer.close()
                    with contextlib.suppress(OSError):
                        await writer.wait_closed()
        except (OSError, TimeoutError):
            return False
        parts = status_line.split()
        return len(parts) >= 2 and parts[1] == b"200"

    async def _announce(self) -> None:
        s = self._settings
        self.say(f"{s.function.name} is ready at http://localhost:{s.public_port} "
                 "(gRPC and HTTP/JSON)")
        if s.journal == "sqlite":
            self.say(f"journal: sqlite at {_display(s.journal_path)} (survives restarts)")
        else:
            self.say("journal: in memory (state is lost when you stop)")
        examples = await self._examples()
        if examples:
            self.say("try:")
            for example in examples:
                print(f"    {example}", file=self._out, flush=True)
        self.say("Ctrl-C stops both processes")

    async def _examples(self) -> list[str]:
        s = self._settings
        if s.function.directory is not None:
            from_readme = readme_examples(s.function.directory / "README.md", s.public_port)
            if from_readme:
                return from_readme
        try:
            services = await reflected_services(f"127.0.0.1:{s.public_port}")
        except grpc.RpcError as e:
            self.say(f"could not list the services through gRPC reflection ({e.code()}); "
                     f"every method is at POST localhost:{s.public_port}"
                     "/<package.Service>/<Method>")
            return []
        return generic_examples(services, s.public_port)

    async def _until_stop_or_exit(self) -> None:
        exits = {asyncio.create_task(c.process.wait(), name=f"{c.label}-exit"): c
                 for c in self._children}
        stop = asyncio.create_task(self._stop.wait(), name="stop-signal")
        try:
            done, _ = await asyncio.wait({stop, *exits}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (stop, *exits):
                task.cancel()
            await asyncio.gather(stop, *exits, return_exceptions=True)
        if stop in done:
            return
        for task, child in exits.items():
            if task in done:
                raise DevRunError(f"the {child.label} exited unexpectedly with code "
                                  f"{child.process.returncode}; see the [{child.label}] lines "
                                  "above")

    async def _stop_all(self) -> None:
        """Stop every child and relay; each wait is bounded, so this always returns."""
        # The sidecar first: it stops taking requests and finishes the ones in
        # flight, which still need the function.
        for child in sorted(self._children, key=lambda c: c.label != "sidecar"):
            if child.running:
                self.say(f"stopping the {child.label}")
            await self._stop_child(child)
        relays = [child.relay for child in self._children]
        if relays:
            # Their last lines; a grandchild that left its session may hold a pipe open.
            await asyncio.wait(relays, timeout=_DRAIN_S)
        for child in self._children:
            child.relay.cancel()
            child.output.close()
        await asyncio.gather(*relays, return_exceptions=True)

    async def _stop_child(self, child: _Child) -> None:
        process = child.process
        if process.returncode is None:
            _signal_group(process, signal.SIGKILL if self._hurry else signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), timeout=self._settings.grace_s)
            except TimeoutError:
                self.say(f"the {child.label} did not stop within {self._settings.grace_s:g}s; "
                         "killing it")
        # Whatever is left of its group (helpers it started) goes too.
        _signal_group(process, signal.SIGKILL)
        try:
            await asyncio.wait_for(process.wait(), timeout=_KILLED_EXIT_S)
        except TimeoutError:
            self.say(f"the {child.label} (pid {process.pid}) has not exited "
                     f"{_KILLED_EXIT_S:.0f}s after SIGKILL; leaving it")


def _signal_group(process: asyncio.subprocess.Process, sig: signal.Signals) -> None:
    # The child is its session's leader, so its pid is its process group id.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)
