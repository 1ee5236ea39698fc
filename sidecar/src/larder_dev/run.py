"""`larder dev`'s supervisor: a user function and a sidecar as two child processes, or
with `--replicas N` N of each (`replicas.py`: their ports, names and membership).

Each child runs in its own session (so a terminal's Ctrl-C reaches only us and we
decide the stopping order) and gets `PR_SET_PDEATHSIG`, so even a `kill -9` of
`larder dev` does not leave a function or sidecar behind. Stopping sends SIGTERM to
the child's whole process group (a `npm start` wrapper and its node process alike),
then SIGKILL after the grace period; every wait while stopping is bounded, so
`larder dev` exits whatever a child does. The sidecars stop first (together), then the
functions (together), so stopping N replicas takes no longer than stopping one.

A child's output goes to a pipe of our own rather than asyncio's: asyncio's
`Process.wait()` also waits for its pipes to close, which a blocked relay or a
grandchild holding the pipe can put off forever. The relay (`relay.py`) is a task
watched like the children: if it ends with an error, the run stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import sys
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TextIO

import grpc

from larder_dev.examples import (
    ReflectedService,
    generic_examples,
    readme_examples,
    reflected_services,
)
from larder_dev.function import FunctionSpec
from larder_dev.ports import ReplicaPorts, check_ports_free
from larder_dev.relay import relay
from larder_dev.replicas import (
    CLUSTER_VARIABLES,
    Replica,
    admin_get,
    cluster_env,
    cluster_info,
    own_share,
    plan_replicas,
)
from larder_dev.view_routes import describe as describe_view_queries
from larder_dev.view_routes import view_queries

JournalKind = Literal["memory", "sqlite"]

_PR_SET_PDEATHSIG = 1
_READY_POLL_S = 0.2
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
    replicas: int = 1
    """User function and sidecar pairs; more than one share the journal as a cluster."""

    @property
    def journal_path(self) -> Path:
        return self.data_dir / self.function.name / "journal.db"

    @property
    def first_ports(self) -> ReplicaPorts:
        """The first replica's ports, as the options give them."""
        return ReplicaPorts(public=self.public_port, function=self.function_port,
                            admin=self.admin_port, internal=self.internal_port)


def kafka_configured(env: Mapping[str, str]) -> bool:
    """Whether the environment passed to `larder dev` says where Kafka is, or says
    itself whether eventing is on."""
    return any(env.get(name, "").strip() for name in (
        "LARDER_KAFKA_BOOTSTRAP_SERVERS", "LARDER_KAFKA_PROPERTIES_FILE", "LARDER_EVENTING"))


def _die_with_parent() -> Callable[[], None]:
    libc = ctypes.CDLL(None, use_errno=True)
    prctl = libc.prctl

    def in_child() -> None:
        # Runs between fork and exec: only the pre-bound C call, nothing that locks.
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)

    return in_child


@dataclass
class _Child:
    role: str
    """`function` or `sidecar`."""
    replica: Replica
    process: asyncio.subprocess.Process
    output: asyncio.ReadTransport
    relay: asyncio.Task[None]

    @property
    def label(self) -> str:
        """The prefix of its lines: `sidecar`, or `sidecar-1` among several replicas."""
        return self.replica.label(self.role)

    @property
    def title(self) -> str:
        """For a sentence: `the sidecar`, or `sidecar-1`."""
        return self.label if self.replica.numbered else f"the {self.role}"

    @property
    def running(self) -> bool:
        return self.process.returncode is None


class DevRunner:
    """Starts the processes, reports readiness, stops them all; one instance per run."""

    def __init__(self, settings: DevSettings, out: TextIO = sys.stdout) -> None:
        self._settings = settings
        self._out = out
        self._replicas: tuple[Replica, ...] = ()
        self._ready: set[int] = set()
        """The replicas whose sidecar said it is ready."""
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
        self._replicas = plan_replicas(s.first_ports, s.replicas)
        for replica in self._replicas:
            check_ports_free(replica.ports.by_option(),
                             replica.name if replica.numbered else None)
        if s.journal == "sqlite":
            s.journal_path.parent.mkdir(parents=True, exist_ok=True)
        copies = f"{len(self._replicas)} replicas of " if len(self._replicas) > 1 else ""
        self.say(f"starting {copies}{s.function.name} ({s.function.source}): "
                 f"{' '.join(s.function.command)}")
        for replica in self._replicas:
            await self._spawn("function", replica, s.function.command, s.function.cwd,
                              self._function_env(replica))
        for replica in self._replicas:
            await self._spawn("sidecar", replica, s.sidecar_command, Path.cwd(),
                              self._sidecar_env(replica))

    def _function_env(self, replica: Replica) -> dict[str, str]:
        return {
            **os.environ,
            # `python` in a start command means the interpreter larder runs on, as
            # in an activated virtualenv, so the SDK installed beside it is found.
            "PATH": os.pathsep.join([str(Path(sys.executable).parent),
                                     os.environ.get("PATH", os.defpath)]),
            "PYTHONUNBUFFERED": "1",
            **self._settings.function.env,
            "HOST": "127.0.0.1",
            "PORT": str(replica.ports.function),
        }

    def _sidecar_env(self, replica: Replica) -> dict[str, str]:
        s = self._settings
        inherited = dict(os.environ)
        if replica.numbered:
            for name in CLUSTER_VARIABLES:
                inherited.pop(name, None)
        env = {
            **inherited,
            "PYTHONUNBUFFERED": "1",
            "USER_FUNCTION_HOST": "127.0.0.1",
            "USER_FUNCTION_PORT": str(replica.ports.function),
            "LARDER_PORT": str(replica.ports.public),
            "LARDER_ADMIN_PORT": str(replica.ports.admin),
            "LARDER_INTERNAL_PORT": str(replica.ports.internal),
            "LARDER_JOURNAL_TYPE": s.journal,
            **cluster_env(self._replicas, replica),
        }
        if s.journal == "sqlite":
            env["LARDER_JOURNAL_SQLITE_PATH"] = str(s.journal_path)
        if not kafka_configured(os.environ):
            # Without Kafka, eventing methods are still served over gRPC/HTTP instead
            # of the sidecar refusing to start.
            # The sidecar logs which methods that concerns.
            env["LARDER_EVENTING"] = "off"
        return env

    async def _spawn(self, role: str, replica: Replica, command: tuple[str, ...], cwd: Path,
                     env: Mapping[str, str]) -> None:
        label = replica.label(role)
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
            raise DevRunError(f"the {role} command `{command[0]}` was not found; install it "
                              "or fix the start command") from e
        except PermissionError as e:
            output.close()
            raise DevRunError(f"the {role} command `{command[0]}` is not executable") from e
        except BaseException:
            output.close()
            raise
        finally:
            # Only the child (and what it starts) holds the writing end now, so the
            # relay sees EOF once they have all gone.
            os.close(write_fd)
        task = asyncio.create_task(relay(reader, self._out, f"[{label}] "),
                                   name=f"{label}-output")
        child = _Child(role, replica, process, output, task)
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
        everything = "both processes" if len(self._replicas) < 2 else "every process"
        self._failure = DevRunError(
            f"relaying {child.title}'s output failed ({type(error).__name__}: {error}); "
            f"stopped {everything}")
        self._stop.set()
        self.say(f"relaying {child.title}'s output failed:\n"
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
        waiting = [r for r in self._replicas if r.index not in self._ready]
        urls = ", ".join(f"http://127.0.0.1:{r.ports.admin}/readyz" for r in waiting)
        labels = [f"[{r.label(role)}]" for r in waiting for role in ("function", "sidecar")]
        lines = f"{', '.join(labels[:-1])} and {labels[-1]}"
        raise DevRunError(
            f"not ready after {s.ready_timeout_s:.0f}s ({urls}); "
            f"see the {lines} lines above, or raise --ready-timeout"
        )

    def _early_exit_message(self, child: _Child) -> str:
        code = child.process.returncode
        of = f" of {child.replica.name}" if child.replica.numbered else ""
        if child.role == "function":
            return (f"the user function{of} exited with code {code} before it was ready; "
                    f"see the [{child.label}] lines above and fix its start command or its code")
        return (f"the sidecar{of} exited with code {code} before it was ready; "
                f"see the [{child.label}] lines above")

    async def _poll_ready(self) -> None:
        # Readiness lives in other processes; asking again is the only way to learn it.
        while len(self._ready) < len(self._replicas):
            waiting = [r for r in self._replicas if r.index not in self._ready]
            answers = await asyncio.gather(*(admin_get(r.ports.admin, "/readyz")
                                             for r in waiting))
            self._ready.update(r.index for r, answer in zip(waiting, answers, strict=True)
                               if answer is not None and answer[0] == 200)
            if len(self._ready) < len(self._replicas):
                await asyncio.sleep(_READY_POLL_S)

    async def _announce(self) -> None:
        s = self._settings
        if len(self._replicas) > 1:
            await self._announce_replicas()
        else:
            self.say(f"{s.function.name} is ready at http://localhost:{s.public_port} "
                     "(gRPC and HTTP/JSON)")
        shared = f", shared by the {len(self._replicas)} replicas" if s.replicas > 1 else ""
        if s.journal == "sqlite":
            self.say(f"journal: sqlite at {_display(s.journal_path)}{shared} "
                     "(survives restarts)")
        elif s.replicas > 1:
            self.say("journal: in memory, one per replica, each holding the entities it owns "
                     "(state is lost when you stop)")
        else:
            self.say("journal: in memory (state is lost when you stop)")
        services = await self._reflected()
        examples = self._examples(services)
        if examples:
            self.say("try:")
            for example in examples:
                self._show(example)
        queries = view_queries(services or [], s.public_port, examples)
        if queries:
            self.say("view queries, answered by the sidecar from the views' rows (which "
                     "follow the entities' writes within moments):")
            for line in describe_view_queries(queries):
                self._show(line)
        if s.replicas > 1:
            self.say(f"Ctrl-C stops all {len(self._children)} processes")
        else:
            self.say("Ctrl-C stops both processes")

    async def _announce_replicas(self) -> None:
        """Each replica's address and share of the shards, and how to ask who owns what."""
        replicas = self._replicas
        infos = await asyncio.gather(*(cluster_info(r.ports.admin) for r in replicas))
        first, last = replicas[0].ports.public, replicas[-1].ports.public
        self.say(f"{self._settings.function.name} is ready at http://localhost:{first} to "
                 f"http://localhost:{last} ({len(replicas)} replicas; gRPC and HTTP/JSON on each)")
        for replica, info in zip(replicas, infos, strict=True):
            share = f", owns {own_share(info)}" if info is not None else ""
            p = replica.ports
            self.say(f"{replica.name}: http://localhost:{p.public}{share} "
                     f"(admin {p.admin}, internal {p.internal}, function {p.function})")
        admin = replicas[0].ports.admin
        self.say("each entity lives on one replica and the others forward to it; "
                 "which one (every replica's admin port gives the same answer):")
        types = infos[0].get("entity_types") if infos[0] is not None else None
        for entity_type in types if isinstance(types, list) else []:
            self._show(f"curl 'localhost:{admin}/cluster/owner?type={entity_type}&id=example-1'")
        self._show(f"curl localhost:{admin}/cluster")

    def _show(self, command: str) -> None:
        with contextlib.suppress(OSError):
            print(f"    {command}", file=self._out, flush=True)

    async def _reflected(self) -> list[ReflectedService] | None:
        """The user's services through the sidecar's reflection; None, said, if it fails."""
        port = self._settings.public_port
        try:
            return await reflected_services(f"127.0.0.1:{port}")
        except grpc.RpcError as e:
            self.say(f"could not list the services through gRPC reflection ({e.code()}); "
                     f"every method is at POST localhost:{port}/<package.Service>/<Method>")
            return None

    def _examples(self, services: list[ReflectedService] | None) -> list[str]:
        s = self._settings
        if s.function.directory is not None:
            from_readme = readme_examples(s.function.directory / "README.md", s.public_port)
            if from_readme:
                return from_readme
        return generic_examples(services or [], s.public_port)

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
                raise DevRunError(f"{child.title} exited unexpectedly with code "
                                  f"{child.process.returncode}; see the [{child.label}] lines "
                                  "above")

    async def _stop_all(self) -> None:
        """Stop every child and relay; each wait is bounded, so this always returns."""
        # The sidecars first: they stop taking requests and finish the ones in
        # flight, which still need the functions.
        for role in ("sidecar", "function"):
            group = [child for child in self._children if child.role == role]
            running = [child for child in group if child.running]
            if running:
                self.say("stopping " + ", ".join(child.title for child in running))
            await asyncio.gather(*(self._stop_child(child) for child in group))
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
                self.say(f"{child.title} did not stop within {self._settings.grace_s:g}s; "
                         "killing it")
        # Whatever is left of its group (helpers it started) goes too.
        _signal_group(process, signal.SIGKILL)
        try:
            await asyncio.wait_for(process.wait(), timeout=_KILLED_EXIT_S)
        except TimeoutError:
            self.say(f"{child.title} (pid {process.pid}) has not exited "
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
