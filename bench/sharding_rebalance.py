"""Rebalance disruption: what a steady load sees while the cluster scales and rolls.

Starts three "pods" on 127.0.0.1, each a user function (`bench/sidecar_function.py`,
the counter on `larder_sdk`) and a `larder-sidecar` in front of it, sharing one SQLite
journal file (`LARDER_JOURNAL_TYPE=sqlite`, as `larder dev --replicas` does: fenced, so a
second writer would be refused and counted) and one member list file
(`LARDER_CLUSTER_MEMBERS_FILE`, read again by every sidecar twice a second). A client
process sends `POST /larder.bench.Counter/Increase` at a fixed `--rate` (open loop: a
command is due every 1/rate s whether or not earlier ones were answered; its latency
counts from that moment) over `--entities` counters, round robin through every serving
sidecar. Then, in one run:

- steady: the baseline, `--steady` seconds;
- scale 3→4: a fourth pod starts (not a member yet: the phase "s3 starts" is reported on
  its own), then it is added to the list and the client sends through it too;
- scale 4→3: it leaves the way Kubernetes makes a pod leave: the client stops sending to
  it (the Service drops a terminating endpoint), the list marks it `terminating` (the
  EndpointSlice's `terminating` condition) and it gets SIGTERM at the same moment; it
  hands its shards away and exits; then it is removed from the list (the endpoint goes
  with the pod);
- rolling update: each of the three first pods replaced in turn the way a Deployment
  with 3 replicas does it (maxSurge 1, maxUnavailable 0): a new pod starts and joins,
  then an old one leaves as above.

Each hand-off phase lasts until every sidecar agrees on the map and the members serve
all shards between them, plus `--tail` seconds. Per phase: client latency
p50/p90/p99/max and errors (with their replies; the sidecars' logs are kept when there
is one), the hand-offs and their durations (from the sidecars' logs), the hand-off wait
histogram (`larder_handoff_wait_seconds` from every sidecar's `/metrics`, summed), the
commands that waited against all commands, fencing rejections, redirects, CPU µs per
command of all sidecars and all functions (from `/proc/<pid>/stat`), and the load
average. At the end the journal is checked: one stored event per acknowledged command.

    .venv/bin/python bench/sharding_rebalance.py [--rate 200] [--entities 300]
        [--steady 15] [--tail 4] [--shard-count 16384] [--src DIR] [--keep-logs DIR]

`--src DIR` runs the sidecars from another checkout (its `sidecar/src` and
`protocol/src`, with generated protos, first on PYTHONPATH), e.g. a worktree of a
revision, for when the working tree is in the middle of someone's change.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tools
from sharding_forward import admin_json, load_average
from sidecar_command import Sidecar, compile_bench_protos, user_function, wait_ready

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PYTHON = sys.executable
COUNTER_PATH = "/larder.bench.Counter/Increase"
WAIT_METRIC = "larder_handoff_wait_seconds"
SETTLE_TIMEOUT = 60.0


# --- the open-loop client (this script with --client, its own process) ------------------


class _HttpError(Exception):
    """The connection failed or the reply could not be read."""


async def _call(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                request: bytes) -> tuple[int, bytes, bool]:
    """One request on a kept-alive connection: the reply's status and body, and whether
    the connection may be used again."""
    writer.write(request)
    try:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        length, keep = 0, True
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
            elif name.strip().lower() == "connection" and value.strip().lower() == "close":
                keep = False
        body = await reader.readexactly(length)
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as e:
        raise _HttpError(f"{type(e).__name__}: {e}") from e
    return int(lines[0].split()[1]), body, keep


class _Target:
    """Kept-alive connections to one sidecar's public port, opened as needed."""

    def __init__(self, port: int, limit: int) -> None:
        self.port = port
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self._free = asyncio.Semaphore(limit)

    async def call(self, request: bytes) -> tuple[int, bytes]:
        async with self._free:
            conn = self._idle.pop() if self._idle else await asyncio.open_connection(
                "127.0.0.1", self.port)
            try:
                status, body, keep = await _call(*conn, request)
            except BaseException:
                conn[1].close()
                raise
            if keep:
                self._idle.append(conn)
            else:
                conn[1].close()
            return status, body

    def close(self) -> None:
        for _, writer in self._idle:
            writer.close()
        self._idle.clear()


async def open_loop(args: argparse.Namespace) -> None:
    """Send at `--rate` through the targets the controller names on stdin (`targets
    P1,P2,...`) until it says `stop`; then write every command's record to `--out`."""
    loop = asyncio.get_running_loop()
    ids = [f"rb{n}" for n in range(args.entities)]
    requests = []
    for entity_id in ids:
        data = json.dumps({"id": entity_id, "value": 1}).encode()
        requests.append(
            (f"POST {COUNTER_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
             f"application/json\r\nContent-Length: {len(data)}\r\n\r\n").encode() + data)
    targets: list[_Target] = []
    by_port: dict[int, _Target] = {}
    stop = asyncio.Event()
    records: list[tuple[float, float, int, int]] = []  # due, latency, status, port
    errors: list[dict[str, Any]] = []

    def control(line: str) -> None:
        words = line.split()
        if not words or words[0] == "stop":
            stop.set()
        elif words[0] == "targets":
            ports = [int(p) for p in words[1].split(",")] if len(words) > 1 else []
            for port in ports:
                by_port.setdefault(port, _Target(port, args.connections))
            targets[:] = [by_port[p] for p in ports]

    def read_control() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(control, line)
        loop.call_soon_threadsafe(stop.set)

    threading.Thread(target=read_control, daemon=True).start()

    async def one(target: _Target, request: bytes, due: float) -> None:
        try:
            status, body = await target.call(request)
        except _HttpError as e:
            status, body = 0, str(e).encode()
        except OSError as e:  # connecting failed
            status, body = 0, f"connect: {e}".encode()
        now = time.monotonic()
        records.append((due, now - due, status, target.port))
        if status != 200:
            errors.append({"due": due, "port": target.port, "status": status,
                           "body": body[:400].decode("utf-8", "replace")})

    tasks: set[asyncio.Task[None]] = set()
    start = time.monotonic() + 0.01
    n = 0
    print("ready", flush=True)
    while not stop.is_set():
        due = start + n / args.rate
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        if targets:
            task = loop.create_task(one(targets[n % len(targets)], requests[n % len(ids)], due))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        n += 1
    if tasks:
        await asyncio.wait(tasks, timeout=60)
    for target in by_port.values():
        target.close()
    # After the last command: nothing is left for the loop to do meanwhile.
    Path(args.out).write_text(json.dumps({"records": records, "errors": errors}))  # noqa: ASYNC240
    print("done", flush=True)


class Client:
    """The client process, seen from the controller."""

    def __init__(self, rate: float, entities: int, connections: int, out: Path) -> None:
        self.out = out
        self.process = subprocess.Popen(
            [PYTHON, __file__, "--client", "--rate", str(rate), "--entities", str(entities),
             "--connections", str(connections), "--out", str(out)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        assert self.process.stdout is not None
        if self.process.stdout.readline().strip() != "ready":
            raise RuntimeError(f"the client failed to start ({self.process.wait()})")

    def targets(self, pods: list[Pod]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(f"targets {','.join(str(p.sidecar.port) for p in pods)}\n")
        self.process.stdin.flush()

    def finish(self) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write("stop\n")
        self.process.stdin.flush()
        if self.process.stdout.readline().strip() != "done":
            raise RuntimeError(f"the client failed ({self.process.wait()})")
        self.process.wait()
        result: dict[str, Any] = json.loads(self.out.read_text())
        return result


# --- the pods ------------------------------------------------------------------------------


@dataclass
class Pod:
    name: str
    address: str
    """Of its internal port."""
    sidecar: Sidecar
    function_pid: int
    log: Path
    stack: ExitStack
    log_offset: int = 0


def internal_port() -> int:
    """A free port below the ephemeral range: the member list names it before the sidecar
    binds it, and a port from the ephemeral range could meanwhile become the local end of
    some outgoing connection."""
    for _ in range(200):
        port = random.randrange(20_000, 32_000)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 20000-32000")


class Cluster:
    """The pods, the member list file and the shared journal."""

    def __init__(self, workdir: Path, protos: Path, args: argparse.Namespace) -> None:
        self.workdir = workdir
        self.protos = protos
        self.args = args
        self.members_file = workdir / "members"
        self.journal = workdir / "journal.sqlite3"
        self.listed: dict[str, tuple[str, bool]] = {}
        """member -> (address, terminating), as the file says."""
        self.pods: dict[str, Pod] = {}
        self.serving: list[Pod] = []
        """Where the client sends: ready and not terminating."""
        self.last_metrics: dict[str, dict[str, float]] = {}
        self.last_cpu: dict[int, float] = {}
        self.unread_logs: dict[str, list[str]] = {}
        """Log lines of pods that left since the last mark."""
        self.events: list[tuple[float, str]] = []
        """(monotonic time, what happened): to line the client's records up with."""

    def event(self, what: str) -> None:
        self.events.append((time.monotonic(), what))

    def write_list(self) -> None:
        text = "".join(f"{name}={address}{' terminating' if ending else ''}\n"
                       for name, (address, ending) in self.listed.items())
        # Replaced, never rewritten in place: a sidecar must not read half a list.
        temporary = self.members_file.with_suffix(".new")
        temporary.write_text(text or "# nobody\n")
        os.replace(temporary, self.members_file)

    def start(self, name: str) -> Pod:
        """Start a pod and wait until its sidecar is ready; at its listed address, or (not
        listed yet) at a new one."""
        stack = ExitStack()
        function = stack.enter_context(user_function(self.protos))
        function_port = function.port
        function_pid = tools.listener_pid(function_port)
        if function_pid is None:
            raise RuntimeError(f"no process listens on the function port {function_port}")
        listed = self.listed.get(name)
        internal = int(listed[0].rpartition(":")[2]) if listed else internal_port()
        port, admin = tools.free_port(), tools.free_port()
        env = {
            **os.environ,
            "USER_FUNCTION_HOST": "127.0.0.1",
            "USER_FUNCTION_PORT": str(function_port),
            "LARDER_PORT": str(port),
            "LARDER_ADMIN_PORT": str(admin),
            "LARDER_INTERNAL_PORT": str(internal),
            "LARDER_CLUSTER_MEMBERS_FILE": str(self.members_file),
            "POD_NAME": name,
            "LARDER_SHARD_COUNT": str(self.args.shard_count),
            "LARDER_JOURNAL_TYPE": "sqlite",
            "LARDER_JOURNAL_SQLITE_PATH": str(self.journal),
            "LARDER_LOG_LEVEL": "INFO",
            "LARDER_PASSIVATION_TIMEOUT": "30m",
        }
        if self.args.src is not None:
            src = Path(self.args.src).resolve()
            env["PYTHONPATH"] = os.pathsep.join(
                [str(src / "sidecar" / "src"), str(src / "protocol" / "src"),
                 env.get("PYTHONPATH", "")])
        log = self.workdir / f"{name}-sidecar.log"
        with log.open("ab") as out:
            process = subprocess.Popen(
                [PYTHON, "-c", "from larder_sidecar.main import main; main()"],
                env=env, stdout=out, stderr=subprocess.STDOUT)
        stack.callback(tools.stop, process)
        sidecar = Sidecar(name, process, port, admin, function)
        pod = Pod(name, f"127.0.0.1:{internal}", sidecar, function_pid, log, stack)
        try:
            wait_ready(sidecar)
        except BaseException:
            stack.close()
            raise
        self.pods[name] = pod
        return pod

    def join(self, pod: Pod, client: Client) -> None:
        """List the pod and send through it: on Kubernetes a ready pod appears in the
        headless Service's EndpointSlice and behind the Service at about the same time."""
        self.listed[pod.name] = (pod.address, False)
        self.write_list()
        self.serving.append(pod)
        client.targets(self.serving)
        self.event(f"{pod.name} listed, sent to")

    def leave(self, pod: Pod, client: Client) -> float:
        """Take the pod out the way a Deployment does; the seconds until it exited."""
        self.serving.remove(pod)
        client.targets(self.serving)
        self.listed[pod.name] = (pod.address, True)
        self.write_list()
        started = time.monotonic()
        pod.sidecar.process.send_signal(signal.SIGTERM)
        self.event(f"{pod.name} not sent to, listed terminating, SIGTERM")
        # Its counters, as late as it answers: it hands off before it closes its ports.
        while pod.sidecar.process.poll() is None:
            self.sample(pod)
            if time.monotonic() - started > 60:
                raise RuntimeError(f"{pod.name} did not exit within 60 s of SIGTERM")
            time.sleep(0.1)
        exited = time.monotonic() - started
        self.event(f"{pod.name} exited")
        del self.listed[pod.name]
        self.write_list()
        self.event(f"{pod.name} removed from the list")
        pod.stack.close()
        self.unread_logs[pod.name] = read_log(pod)
        del self.pods[pod.name]
        return exited

    def sample(self, pod: Pod) -> None:
        """Remember the pod's metrics and the CPU of its processes, if it still answers."""
        with suppress(OSError):
            self.last_metrics[pod.name] = scrape(pod.sidecar)
        for pid in (pod.sidecar.process.pid, pod.function_pid):
            with suppress(OSError, IndexError, ValueError):
                self.last_cpu[pid] = tools.cpu_seconds(pid)

    def settle(self) -> float:
        """Wait until every listed sidecar has the same map and the active ones serve
        all shards between them; the seconds it took."""
        started = time.monotonic()
        while True:
            views = {}
            for name in self.listed:
                try:
                    views[name] = admin_json(self.pods[name].sidecar, "/cluster")
                except OSError:
                    break
            if len(views) == len(self.listed):
                fingerprints = {v["fingerprint"] for v in views.values()}
                listed_in_map = {m["id"] for m in next(iter(views.values()))["members"]}
                served = sum(v["shards_served_here"] for v in views.values())
                if (len(fingerprints) == 1 and listed_in_map == set(self.listed)
                        and served == self.args.shard_count):
                    self.event("settled")
                    return time.monotonic() - started
            if time.monotonic() - started > SETTLE_TIMEOUT:
                raise RuntimeError(f"the cluster did not settle within {SETTLE_TIMEOUT:g}s: "
                                   f"{json.dumps(views)[:2000]}")
            time.sleep(0.1)

    def close(self) -> None:
        for pod in list(self.pods.values()):
            pod.stack.close()


def read_log(pod: Pod) -> list[str]:
    """The pod's log lines since the last read."""
    with pod.log.open("rb") as f:
        f.seek(pod.log_offset)
        data = f.read()
    pod.log_offset += len(data)
    return data.decode("utf-8", "replace").splitlines()


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$", re.M)


def scrape(sidecar: Sidecar) -> dict[str, float]:
    """A sidecar's Prometheus samples, `name{labels}` -> value."""
    import urllib.request  # noqa: PLC0415 - urllib only here

    url = f"http://127.0.0.1:{sidecar.admin_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as answer:
        text = answer.read().decode()
    return {name + (labels or ""): float(value)
            for name, labels, value in _SAMPLE.findall(text)}


# --- phases ----------------------------------------------------------------------------------


@dataclass
class Mark:
    """The state of everything at a phase boundary."""

    at: float
    metrics: dict[str, dict[str, float]]
    """pod name -> samples (for a pod that has left: its last ones)."""
    cpu: dict[str, dict[int, float]]
    """"sidecars" / "functions" -> pid -> CPU seconds so far."""
    logs: dict[str, list[str]]
    """pod name -> its log lines since the previous mark."""
    load: float


@dataclass
class Phase:
    name: str
    start: Mark
    end: Mark
    notes: dict[str, Any] = field(default_factory=dict)
    group: str = ""
    """Phases with the same group are also reported together (the rolling update)."""


def mark(cluster: Cluster, sidecar_pids: dict[str, int], function_pids: dict[str, int]) -> Mark:
    for pod in cluster.pods.values():
        cluster.sample(pod)
    logs = {pod.name: read_log(pod) for pod in cluster.pods.values()}
    logs.update(cluster.unread_logs)
    cluster.unread_logs = {}
    cpu = {
        "sidecars": {pid: cluster.last_cpu.get(pid, 0.0) for pid in sidecar_pids.values()},
        "functions": {pid: cluster.last_cpu.get(pid, 0.0) for pid in function_pids.values()},
    }
    return Mark(time.monotonic(), {n: dict(m) for n, m in cluster.last_metrics.items()},
                cpu, logs, load_average())


_TOOK_OVER = re.compile(r"took over (\d+) shards from \S+ after ([\d.]+)s \(([^)]*)\)")
_RELEASED = re.compile(r"released (\d+) shards in ([\d.]+)s")


def delta(start: Mark, end: Mark, name: str) -> float:
    """The sum over the pods of how much sample `name` grew (a pod new since `start`
    counts from zero)."""
    return sum(samples.get(name, 0.0) - start.metrics.get(pod, {}).get(name, 0.0)
               for pod, samples in end.metrics.items())


def delta_prefix(start: Mark, end: Mark, prefix: str) -> float:
    names = {n for samples in end.metrics.values() for n in samples if n.startswith(prefix)}
    return sum(delta(start, end, n) for n in names)


def wait_buckets(start: Mark, end: Mark) -> list[tuple[float, float]]:
    """The summed hand-off wait histogram over the phase: (upper bound, cumulative count)."""
    bounds: set[str] = set()
    for samples in end.metrics.values():
        for n in samples:
            found = re.fullmatch(rf'{WAIT_METRIC}_bucket\{{le="([^"]+)"\}}', n)
            if found:
                bounds.add(found.group(1))
    rows = [(float(b), delta(start, end, f'{WAIT_METRIC}_bucket{{le="{b}"}}')) for b in bounds]
    return sorted(rows)


def percentile(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, round(q * (len(values) - 1)))] if values else 0.0


def bucket_quantile(buckets: list[tuple[float, float]], q: float) -> float | None:
    """The upper bound of the bucket holding quantile `q` (None: nothing observed)."""
    total = buckets[-1][1] if buckets else 0.0
    if total == 0:
        return None
    for bound, cumulative in buckets:
        if cumulative >= q * total:
            return bound
    return float("inf")


def summarize(phases: list[Phase], records: list[list[float]],
              errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    groups: dict[str, list[Phase]] = {}
    for phase in phases:
        rows.append(_row(phase.name, [phase], records, errors))
        if phase.group:
            groups.setdefault(phase.group, []).append(phase)
    for group, members in groups.items():
        rows.append(_row(group, members, records, errors))
    return rows


def _row(name: str, phases: list[Phase], records: list[list[float]],
         errors: list[dict[str, Any]]) -> dict[str, Any]:
    spans = [(p.start.at, p.end.at) for p in phases]

    def inside(t: float) -> bool:
        return any(a <= t < b for a, b in spans)

    mine = [r for r in records if inside(r[0])]
    latencies = sorted(r[1] for r in mine if r[2] == 200)
    failed = [e for e in errors if inside(e["due"])]
    seconds = sum(b - a for a, b in spans)
    buckets: dict[float, float] = {}
    waited = wait_sum = timeouts = fencing = redirects = rerouted = 0.0
    unavailable = 0.0
    cpu = {"sidecars": 0.0, "functions": 0.0}
    handoffs_in: list[tuple[int, float, str]] = []
    handoffs_out: list[tuple[int, float]] = []
    for p in phases:
        for bound, count in wait_buckets(p.start, p.end):
            buckets[bound] = buckets.get(bound, 0.0) + count
        waited += delta(p.start, p.end, f"{WAIT_METRIC}_count")
        wait_sum += delta(p.start, p.end, f"{WAIT_METRIC}_sum")
        timeouts += delta(p.start, p.end, "larder_handoff_wait_timeouts_total")
        fencing += delta_prefix(p.start, p.end, "larder_fencing_rejections_total")
        redirects += delta(p.start, p.end, 'larder_forwarded_commands_out_total{result="redirect"}')
        rerouted += delta(p.start, p.end, 'larder_forwarded_commands_out_total{result="rerouted"}')
        unavailable += delta(p.start, p.end,
                             'larder_forwarded_commands_out_total{result="unavailable"}')
        for kind in cpu:
            cpu[kind] += sum(p.end.cpu[kind].get(pid, 0.0) - p.start.cpu[kind].get(pid, 0.0)
                             for pid in p.end.cpu[kind])
        for lines in p.end.logs.values():
            for line in lines:
                if found := _TOOK_OVER.search(line):
                    handoffs_in.append((int(found.group(1)), float(found.group(2)),
                                        found.group(3)))
                elif found := _RELEASED.search(line):
                    handoffs_out.append((int(found.group(1)), float(found.group(2))))
    cumulative = sorted(buckets.items())
    return {
        "phase": name,
        "seconds": round(seconds, 1),
        "commands": len(mine),
        "rate": round(len(mine) / seconds, 1) if seconds else 0.0,
        "errors": len(failed),
        "p50_ms": round(percentile(latencies, 0.5) * 1000, 1),
        "p90_ms": round(percentile(latencies, 0.9) * 1000, 1),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 1),
        "max_ms": round(percentile(latencies, 1.0) * 1000, 1),
        "over_1s": sum(1 for v in latencies if v > 1.0),
        "waited": int(waited),
        "wait_mean_ms": round(wait_sum / waited * 1000, 1) if waited else None,
        "wait_p99_le_s": bucket_quantile(cumulative, 0.99),
        "wait_max_le_s": bucket_quantile(cumulative, 1.0),
        "wait_timeouts": int(timeouts),
        "wait_histogram": [(b, int(c)) for b, c in cumulative],
        "fencing_rejections": int(fencing),
        "redirects": int(redirects),
        "rerouted": int(rerouted),
        "forward_unavailable": int(unavailable),
        "handoffs_in": handoffs_in,
        "handoffs_out": handoffs_out,
        "cpu_us_per_command": {k: round(v / len(mine) * 1e6) if mine else None
                               for k, v in cpu.items()},
        "load": [p.end.load for p in phases],
        "notes": [p.notes for p in phases if p.notes],
    }


def print_row(row: dict[str, Any]) -> None:
    ins = row["handoffs_in"]
    outs = row["handoffs_out"]
    took = (f"in {len(ins)} batches ({sum(n for n, _, _ in ins)} shards) "
            f"{min(s for _, s, _ in ins):.3f}-{max(s for _, s, _ in ins):.3f}s "
            f"{sorted({e for _, _, e in ins})}" if ins else "in none")
    released = (f"out {len(outs)} batches {min(s for _, s in outs):.3f}-"
                f"{max(s for _, s in outs):.3f}s" if outs else "out none")
    print(f"  {row['phase']:<22} {row['seconds']:>5}s {row['commands']:>6} cmds "
          f"({row['rate']}/s) errors {row['errors']} | p50 {row['p50_ms']} p90 {row['p90_ms']} "
          f"p99 {row['p99_ms']} max {row['max_ms']} ms, {row['over_1s']} over 1 s | waited "
          f"{row['waited']} "
          f"(mean {row['wait_mean_ms']} ms, p99 <= {row['wait_p99_le_s']} s, max <= "
          f"{row['wait_max_le_s']} s, timeouts {row['wait_timeouts']}) | fencing "
          f"{row['fencing_rejections']} | redirects {row['redirects']} rerouted "
          f"{row['rerouted']} unavailable {row['forward_unavailable']} | hand-offs {took}; "
          f"{released} | CPU µs/cmd {row['cpu_us_per_command']} | load {row['load']} "
          f"{row['notes'] or ''}", flush=True)


def histogram_table(rows: list[dict[str, Any]]) -> None:
    """The wait histogram per phase, per bucket (not cumulative), where anything fell."""
    shown = [r for r in rows if r["waited"]]
    if not shown:
        print("no command waited on a hand-off in any phase")
        return
    bounds = [b for b, _ in shown[0]["wait_histogram"]]
    print("\nhand-off wait histogram (commands per bucket, all sidecars summed)")
    print("| wait ≤ s | " + " | ".join(r["phase"] for r in shown) + " |")
    previous = {r["phase"]: 0 for r in shown}
    for n, bound in enumerate(bounds):
        counts = []
        for r in shown:
            cumulative = r["wait_histogram"][n][1]
            counts.append(cumulative - previous[r["phase"]])
            previous[r["phase"]] = cumulative
        if any(counts):
            print(f"| {bound:g} | " + " | ".join(str(c) for c in counts) + " |")


# --- the run -----------------------------------------------------------------------------------


def run(args: argparse.Namespace, workdir: Path) -> bool:
    protos = workdir / "protos"
    protos.mkdir()
    compile_bench_protos(protos)
    cluster = Cluster(workdir, protos, args)
    sidecar_pids: dict[str, int] = {}
    function_pids: dict[str, int] = {}
    phases: list[Phase] = []

    def started(pod: Pod) -> Pod:
        sidecar_pids[pod.name] = pod.sidecar.process.pid
        function_pids[pod.name] = pod.function_pid
        return pod

    def boundary() -> Mark:
        return mark(cluster, sidecar_pids, function_pids)

    client: Client | None = None
    try:
        # The first three are listed before they start (a sidecar is not ready before
        # its first map); they serve once they have asked each other to release.
        for name in ("s0", "s1", "s2"):
            cluster.listed[name] = (f"127.0.0.1:{internal_port()}", False)
        cluster.write_list()
        pods = [started(cluster.start(name)) for name in ("s0", "s1", "s2")]
        cluster.settle()
        cluster.serving = list(pods)
        client = Client(args.rate, args.entities, args.connections, workdir / "client.json")
        client.targets(cluster.serving)
        time.sleep(args.warmup)  # every entity active, every peer channel open
        print(f"steady load of {args.rate:g} commands/s over {args.entities} entities "
              f"through {len(cluster.serving)} sidecars", flush=True)

        def phase(name: str, begin: Mark, group: str = "", **notes: Any) -> Mark:
            end = boundary()
            phases.append(Phase(name, begin, end, notes, group))
            print(f"  {name}: {end.at - begin.at:.1f}s {notes or ''} (load average "
                  f"{end.load:.1f})", flush=True)
            return end

        at = boundary()
        time.sleep(args.steady)
        at = phase("steady", at)

        def join(name: str, group: str = "") -> None:
            nonlocal at
            pod = started(cluster.start(name))
            at = phase(f"{name} starts", at, group)
            cluster.join(pod, client)  # type: ignore[arg-type]
            settled = cluster.settle()
            time.sleep(args.tail)
            at = phase(f"{name} joins", at, group, settled_s=round(settled, 2))

        def leave(name: str, group: str = "") -> None:
            nonlocal at
            exited = cluster.leave(cluster.pods[name], client)  # type: ignore[arg-type]
            settled = cluster.settle()
            time.sleep(args.tail)
            at = phase(f"{name} leaves", at, group, exited_s=round(exited, 2),
                       settled_after_exit_s=round(settled, 2))

        join("s3")
        leave("s3")
        for old, new in (("s0", "s4"), ("s1", "s5"), ("s2", "s6")):
            join(new, "rolling update")
            leave(old, "rolling update")
        time.sleep(1.0)
        outcome = client.finish()
        client = None
    finally:
        if client is not None:
            client.process.kill()
        cluster.close()
        (workdir / "events.json").write_text(json.dumps(cluster.events))

    records, errors = outcome["records"], outcome["errors"]
    acked = sum(1 for r in records if r[2] == 200)
    with sqlite3.connect(cluster.journal) as db:
        stored = db.execute("SELECT count(*) FROM events").fetchone()[0]
    rows = summarize(phases, records, errors)
    print("\nper phase (latency from the due time; waits from the sidecars' histograms)")
    for row in rows:
        print_row(row)
    histogram_table(rows)
    all_waits = _row("all hand-off phases", [p for p in phases if p.name != "steady"],
                     records, errors)
    print(f"\nall hand-off phases: {all_waits['waited']} of {all_waits['commands']} commands "
          f"waited; wait p99 <= {all_waits['wait_p99_le_s']} s, max <= "
          f"{all_waits['wait_max_le_s']} s; client p99 {all_waits['p99_ms']} ms, max "
          f"{all_waits['max_ms']} ms; errors {all_waits['errors']}; fencing "
          f"{all_waits['fencing_rejections']}")
    print(f"journal: {stored} events stored, {acked} commands acknowledged, "
          f"{len(errors)} failed")
    for error in errors[:20]:
        print(f"  error: {error}")
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"rows": rows, "all": all_waits, "stored": stored, "acked": acked,
             "errors": errors[:200]}, indent=1))
    clean = not errors and stored == acked and all_waits["fencing_rejections"] == 0
    return clean


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=200.0, help="open-loop commands/s")
    parser.add_argument("--entities", type=int, default=300)
    parser.add_argument("--connections", type=int, default=64,
                        help="at most this many open to each sidecar")
    parser.add_argument("--steady", type=float, default=15.0, help="seconds of baseline")
    parser.add_argument("--tail", type=float, default=4.0,
                        help="seconds each hand-off phase goes on after the cluster settled")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--shard-count", type=int, default=16384)
    parser.add_argument("--src", help="run the sidecars from this checkout")
    parser.add_argument("--keep-logs", help="copy the sidecars' logs, the client's records and "
                        "the run's events here (always kept when a command failed)")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        import uvloop  # noqa: PLC0415 - only the client process needs it

        uvloop.run(open_loop(args))
        return
    head = subprocess.run(["git", "-C", str(Path(args.src or ROOT)), "rev-parse", "--short",
                           "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(Path(args.src or ROOT)), "status", "--porcelain",
                            "--", "sidecar/src/larder_sidecar", "protocol/proto"],
                           capture_output=True, text=True, check=True).stdout
    print(f"sidecar sources: {args.src or 'working tree'} at {head}"
          f"{' with uncommitted changes:' + dirty.replace(chr(10), ' ') if dirty else ''}; "
          f"load average {load_average():.1f}; {os.cpu_count()} CPUs", flush=True)
    with tempfile.TemporaryDirectory(prefix="larder-rebalance-") as tmp:
        workdir = Path(tmp)
        clean = False
        try:
            clean = run(args, workdir)
        finally:
            keep = args.keep_logs or (None if clean else str(ROOT / "test-logs" / "rebalance"))
            if keep:
                target = Path(keep) / time.strftime("%Y%m%d-%H%M%S")
                target.mkdir(parents=True, exist_ok=True)
                for kept in [*workdir.glob("*.log"), *workdir.glob("*.json")]:
                    shutil.copy(kept, target / kept.name)
                print(f"sidecar logs, the client's records (client.json: due time, latency, "
                      f"status, port) and the run's events (events.json) kept in {target}",
                      flush=True)
    if not clean:
        sys.exit("sharding_rebalance: errors, fencing rejections or a journal mismatch "
                 "(see above)")


if __name__ == "__main__":
    main()
