"""The load and the observers of tests/e2e/cluster/test_sharding_load.py: clients adding
items to shopping carts through the ready pods, a poller that keeps the clients' targets
to the ready pods (as a Service would) and scrapes every pod's sidecar metrics, and the
journal's own record of what was stored (read from Cassandra's tables, not through any
journal code)."""

from __future__ import annotations

import collections
import http.client
import json
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import shoppingcart.shopping_cart_domain_pb2 as domain
from cassandra.cluster import Cluster, Session

from tests.e2e.cluster.kubectl import Kubectl
from tests.infra.cassandra import CassandraServer

CARTS = 24
WORKERS = 4
# A client's patience: longer than any orderly hand-off should make a command wait.
CLIENT_TIMEOUT_S = 10.0
# Between one client's commands: a steady load the 2-core machine keeps up with.
PAUSE_S = 0.05
ENTITY_TYPE = "shopping-cart"
FENCING = "larder_fencing_rejections_total"


@dataclass(frozen=True)
class Failure:
    phase: str
    product: str
    target: str
    what: str
    """`HTTP <status> <body>` or the connection's error."""
    status: int | None


@dataclass
class Load:
    """Clients adding items with unique product ids to CARTS carts, each command to the
    next ready pod in turn; every acknowledged command is recorded."""

    targets: list[str] = field(default_factory=list)
    phase: str = "start"
    acked: dict[str, tuple[str, int]] = field(default_factory=dict)
    """product id -> (cart, quantity)"""
    failures: list[Failure] = field(default_factory=list)
    sent: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        for n in range(WORKERS):
            thread = threading.Thread(target=self._worker, args=(n,), name=f"client-{n}")
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(CLIENT_TIMEOUT_S + 5)

    def set_targets(self, ips: Iterable[str]) -> None:
        with self._lock:
            self.targets = sorted(ips)

    def failures_in(self, phase: str) -> list[Failure]:
        with self._lock:
            return [f for f in self.failures if f.phase == phase]

    def acked_snapshot(self) -> dict[str, tuple[str, int]]:
        with self._lock:
            return dict(self.acked)

    def until_more(self, commands: int, timeout_s: float = 30.0) -> None:
        """Until `commands` more were acknowledged: the load really runs."""
        target = len(self.acked) + commands
        deadline = time.monotonic() + timeout_s
        while len(self.acked) < target:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"the load stalled at {len(self.acked)} acknowledged commands "
                    f"(targets {self.targets}; last failures {self.failures[-5:]})"
                )
            time.sleep(0.1)

    def _worker(self, n: int) -> None:
        i = 0
        while not self._stop.is_set():
            with self._lock:
                targets = list(self.targets)
                phase = self.phase
            if not targets:
                time.sleep(0.1)
                continue
            cart = f"cart-{(n * 7 + i) % CARTS}"
            product = f"w{n}-{i}"
            quantity = i % 5 + 1
            target = targets[(n + i) % len(targets)]
            i += 1
            self.sent += 1
            failure = _add(target, cart, product, quantity)
            with self._lock:
                if failure is None:
                    self.acked[product] = (cart, quantity)
                else:
                    self.failures.append(Failure(phase, product, target, *failure))
            time.sleep(PAUSE_S)


def _add(ip: str, cart: str, product: str, quantity: int) -> tuple[str, int | None] | None:
    """One AddItem over HTTP; None when acknowledged, else what happened."""
    body = json.dumps({"product_id": product, "name": product, "quantity": quantity})
    connection = http.client.HTTPConnection(ip, 9000, timeout=CLIENT_TIMEOUT_S)
    try:
        connection.request(
            "POST", f"/cart/{cart}/items/add", body, {"Content-Type": "application/json"}
        )
        response = connection.getresponse()
        text = response.read().decode(errors="replace")
    except (OSError, http.client.HTTPException) as e:
        return f"{type(e).__name__}: {e}", None
    finally:
        connection.close()
    if response.status == 200:
        return None
    return f"HTTP {response.status} {text[:300]}", response.status


class PodWatcher:
    """Every second: the clients' targets from the public Service's EndpointSlices (ready,
    not terminating), and each pod's fencing rejections from its sidecar's /metrics (the
    last value seen per pod, so pods that are gone still count)."""

    def __init__(self, kubectl: Kubectl, load: Load, function: str) -> None:
        self._kubectl = kubectl
        self._load = load
        self._function = function
        self.fencing: dict[str, float] = {}
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pod-watcher")

    def start(self) -> None:
        self.refresh()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    def fencing_rejections(self) -> float:
        return sum(self.fencing.values())

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            try:
                self.refresh()
            # A failed poll is retried the next second; kept for the report.
            except Exception as e:
                self.errors.append(f"{type(e).__name__}: {e}")

    def refresh(self) -> None:
        slices = self._kubectl.json(
            "get", "endpointslices", "-l", f"kubernetes.io/service-name={self._function}"
        )["items"]
        self._load.set_targets(
            {
                endpoint["addresses"][0]
                for item in slices
                for endpoint in item.get("endpoints") or ()
                if (endpoint.get("conditions") or {}).get("ready")
                and not (endpoint.get("conditions") or {}).get("terminating")
            }
        )
        pods = self._kubectl.pods(f"larder.dev/function={self._function}")
        for pod in pods:
            ip = pod["status"].get("podIP")
            if ip:
                value = _fencing(ip)
                if value is not None:
                    self.fencing[pod["metadata"]["name"]] = value


def _fencing(ip: str) -> float | None:
    connection = http.client.HTTPConnection(ip, 9603, timeout=2)
    try:
        connection.request("GET", "/metrics")
        text = connection.getresponse().read().decode(errors="replace")
    except (OSError, http.client.HTTPException):
        return None
    finally:
        connection.close()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(FENCING)
    )


class StatusWatcher:
    """The StatefulFunction's `status.shardMap` and ShardMapAgreed condition, every
    second, with the test's phase: the story the status told."""

    def __init__(self, kubectl: Kubectl, load: Load, function: str) -> None:
        self._kubectl = kubectl
        self._load = load
        self._function = function
        self.seen: list[tuple[float, str, str, str, str]] = []
        """(time, phase, agreement, reason, members)"""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="status-watcher")
        self._started = time.monotonic()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            try:
                status = self._kubectl.json("get", "statefulfunction", self._function).get(
                    "status", {}
                )
            except AssertionError:
                continue
            shard_map = status.get("shardMap") or {}
            condition: dict[str, Any] = next(
                (c for c in status.get("conditions", []) if c["type"] == "ShardMapAgreed"), {}
            )
            entry = (
                round(time.monotonic() - self._started, 1),
                self._load.phase,
                str(shard_map.get("agreement")),
                str(condition.get("reason")),
                ",".join(shard_map.get("members") or []),
            )
            if not self.seen or self.seen[-1][1:] != entry[1:]:
                self.seen.append(entry)

    def story(self) -> str:
        return "\n".join(
            f"  {t:7.1f}s {phase:<16} map {agreement:<5} {reason:<16} {members}"
            for t, phase, agreement, reason, members in self.seen
        )


class JournalReader:
    """The events of the carts, read from Cassandra's tables."""

    def __init__(self, cassandra: CassandraServer, keyspace: str) -> None:
        # Patient: the test machine's two cores also run the cluster, the load and Cassandra.
        self._cluster = Cluster(
            cassandra.contact_points,
            port=cassandra.port,
            connect_timeout=30,
            control_connection_timeout=30,
        )
        self._session: Session | None = None
        self._keyspace = keyspace

    def close(self) -> None:
        self._cluster.shutdown()

    def stored(self) -> collections.Counter[str]:
        """How often each product id was added, over every cart; each cart's events are
        numbered 1, 2, ... without a gap or a repeat (one writer at a time)."""
        if self._session is None:
            self._session = self._cluster.connect(self._keyspace)
            self._session.default_timeout = 60
        counts: collections.Counter[str] = collections.Counter()
        for n in range(CARTS):
            pid = f"{ENTITY_TYPE}|cart-{n}"
            sequence: list[int] = []
            partition = 0
            while True:
                rows = list(
                    self._session.execute(
                        "SELECT sequence_nr, payload FROM events "
                        "WHERE persistence_id = %s AND partition_nr = %s",
                        (pid, partition),
                    )
                )
                if not rows and partition > 0:
                    break
                for row in rows:
                    sequence.append(row.sequence_nr)
                    if row.payload is not None:
                        counts[domain.ItemAdded.FromString(row.payload).item.product_id] += 1
                partition += 1
            assert sequence == list(range(1, len(sequence) + 1)), (
                f"{pid}: sequence numbers {sequence[:50]}... are not 1..{len(sequence)}"
            )
        return counts


def check_journal(
    reader: JournalReader, acked: dict[str, tuple[str, int]], when: str
) -> dict[str, Any]:
    """Every acknowledged command is stored exactly once, and nothing twice."""
    stored = reader.stored()
    missing = sorted(p for p in acked if stored[p] == 0)
    twice = sorted(p for p, n in stored.items() if n > 1)
    assert not missing, f"{when}: {len(missing)} acknowledged commands are not in the journal: " + (
        ", ".join(missing[:20])
    )
    assert not twice, f"{when}: stored more than once: {', '.join(twice[:20])}"
    return {"acked": len(acked), "stored": sum(stored.values())}
