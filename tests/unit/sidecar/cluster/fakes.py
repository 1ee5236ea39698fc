"""Members of a cluster in one process: each a fake entity host, the real sharded router
and the real internal server's sessions (what a connection does with its frames), wired
by a transport that calls the other members' sessions directly (no sockets) and can take
a member down. The framing and the sockets are tested in test_peer_transport.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import grpc
from larder_sidecar.cluster import wire
from larder_sidecar.cluster.handoff import ShardState
from larder_sidecar.cluster.internal import InternalServer, PeerSession, Refused
from larder_sidecar.cluster.membership import Member, MemberId, Membership
from larder_sidecar.cluster.metrics import ClusterMetrics
from larder_sidecar.cluster.peers import PeerUnavailable
from larder_sidecar.cluster.sharded import ShardedRouter
from larder_sidecar.cluster.shards import ShardId, ShardMap
from larder_sidecar.entities import Command, EntityHost
from larder_sidecar.invoke import InvokeError
from larder_sidecar.journal.memory import MemoryJournal
from larder_sidecar.model import Method
from prometheus_client import CollectorRegistry

from ..entities.fakes import FakeStub, emit_one, make_host

SHARDS = 64
_MOVING = (ShardState.ACQUIRING, ShardState.RELEASING, ShardState.RETURNING)


class Source:
    """A membership source fed by the test."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Membership] = asyncio.Queue()

    async def snapshots(self) -> AsyncGenerator[Membership, None]:
        while True:
            yield await self.queue.get()


class Network:
    """Delivers calls between members in-process; `down` members refuse connections."""

    def __init__(self) -> None:
        self.servers: dict[str, InternalServer] = {}
        self.down: set[str] = set()
        self.forwards: list[tuple[str, Any]] = []
        self.views: list[tuple[str, Any]] = []
        """The map views sent, as a connection sends them: once, then on each change."""
        self.releases: list[tuple[str, list[int]]] = []
        self.peer_ip = "127.0.0.1"
        self.while_connecting: Callable[[], Awaitable[None]] | None = None
        """Runs while a call to a member that is down waits to connect."""

    def transport(self) -> Transport:
        return Transport(self)


def _copy(message: Any) -> Any:
    """A copy on the wire."""
    return type(message).FromString(message.SerializeToString())


class Transport:
    def __init__(self, network: Network) -> None:
        self._network = network
        self._sessions: dict[tuple[int, str], tuple[PeerSession, list[Any]]] = {}

    async def _deliver(self, address: str, handler: str, view: Any, request: Any) -> Any:
        if address in self._network.down or address not in self._network.servers:
            if self._network.while_connecting is not None:
                await self._network.while_connecting()
            # Refused: the request never left.
            raise PeerUnavailable(grpc.StatusCode.UNAVAILABLE, "connection refused", sent=False)
        server = self._network.servers[address]
        # One session per connection: per server and the address the calls come from.
        key = (id(server), self._network.peer_ip)
        if key not in self._sessions:
            self._sessions[key] = (server.session(self._network.peer_ip), [None])
        session, sent = self._sessions[key]
        if sent[0] != wire.view_key(view):
            sent[0] = wire.view_key(view)
            self._network.views.append((address, _copy(view)))
            session.set_view(_copy(view))
        try:
            reply = await getattr(session, handler)(_copy(request), session.current)
        except Refused as e:
            raise PeerUnavailable(e.code, e.details) from e
        return _copy(reply)

    async def forward(self, address: str, view: Any, request: Any) -> Any:
        self._network.forwards.append((address, request))
        return await self._deliver(address, "forward", view, request)

    async def release(self, address: str, request: Any) -> Any:
        self._network.releases.append((address, list(request.shards)))
        body = wire.ReleaseRequest(shards=request.shards, map_version=request.view.version)
        return await self._deliver(address, "release", request.view, body)

    async def forget(self, keep: Iterable[str]) -> None:
        return None


@dataclass
class Node:
    name: MemberId
    address: str
    host: EntityHost
    stub: FakeStub
    router: ShardedRouter
    server: InternalServer
    source: Source
    metrics: ClusterMetrics
    registry: CollectorRegistry

    def sample(self, name: str, **labels: str) -> float:
        value = self.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value

    async def submit(self, method: Method, entity_id: str) -> Any:
        owner = await self.router.owner(method.component.entity_type, entity_id)
        return await owner.submit(method, entity_id, entity_id.encode(), [("k", "v")])

    def ran(self) -> list[str]:
        """Entity ids of the commands this member's fake user function received."""
        return [
            m.command.entity_id
            for call in self.stub.calls
            for m in call.sent
            if m.WhichOneof("message") == "command"
        ]


def address(name: str) -> str:
    return f"127.0.0.1:{1000 + sum(name.encode())}"


def membership(version: int, *names: str, terminating: Iterable[str] = ()) -> Membership:
    ending = set(terminating)
    return Membership(tuple(Member(MemberId(n), address(n), n in ending) for n in names), version)


class Cluster:
    def __init__(
        self,
        network: Network,
        method: Method,
        journal: MemoryJournal | None = None,
        *,
        handoff_wait: float = 2.0,
        redirect_wait: float = 0.05,
    ) -> None:
        self.network = network
        self.method = method
        self.journal = journal or MemoryJournal()
        self.handoff_wait = handoff_wait
        self.redirect_wait = redirect_wait
        self.nodes: dict[str, Node] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self, name: str, first: Membership) -> Node:
        holder: list[ShardedRouter] = []

        def reenter(command: Command) -> None:
            task = asyncio.get_running_loop().create_task(self._reenter(holder[0], command))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        host, stub = make_host(self.journal, emit_one, reenter=reenter)
        registry = CollectorRegistry()
        metrics = ClusterMetrics(registry)
        source = Source()
        router = ShardedRouter(
            host,
            MemberId(name),
            SHARDS,
            source=source,
            transport=self.network.transport(),
            metrics=metrics,
            handoff_wait=self.handoff_wait,
            redirect_wait=self.redirect_wait,
        )
        holder.append(router)
        server = InternalServer(router, {self.method.model.path: self.method}, metrics, 1 << 20)
        node = Node(
            MemberId(name), address(name), host, stub, router, server, source, metrics, registry
        )
        self.network.servers[node.address] = server
        self.nodes[name] = node
        await router.start()
        await self.apply(node, first)
        return node

    async def apply(self, node: Node, m: Membership) -> None:
        node.source.queue.put_nowait(m)
        for _ in range(1000):
            current = node.router.map
            if current is not None and current.membership == m:
                return
            await asyncio.sleep(0)
        raise AssertionError(f"{node.name} never applied membership v{m.version}")

    async def _reenter(self, router: ShardedRouter, command: Command) -> None:
        try:
            owner = await router.owner(command.method.component.entity_type, command.entity_id)
            outcome = await owner.submit(
                command.method, command.entity_id, command.payload, command.metadata
            )
        except InvokeError as e:
            if not command.future.done():
                command.future.set_exception(e)
            return
        if not command.future.done():
            command.future.set_result(outcome)

    async def settled(self, within: float = 5.0) -> None:
        """Until no member is acquiring or releasing a shard."""
        await eventually(
            lambda: (
                not any(n.router.table.in_state(s) for n in self.nodes.values() for s in _MOVING)
            ),
            within,
        )

    async def close(self) -> None:
        for node in self.nodes.values():
            await node.router.close()
            await node.host.shutdown()
        for task in list(self._tasks):
            task.cancel()


async def eventually(condition: Callable[[], bool], within: float = 5.0) -> None:
    """Until `condition` holds (another member's state, observed by polling)."""
    for _ in range(int(within / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the condition never held")


def entity_owned_by(shard_map: ShardMap, owner: str, start: int = 0) -> str:
    for n in range(start, start + 10_000):
        entity_id = f"e{n}"
        if shard_map.owner_of("svc", entity_id) == owner:
            return entity_id
    raise AssertionError(f"no entity of {owner} found")


def shard_map(m: Membership) -> ShardMap:
    return ShardMap(m, SHARDS)


def shard(entity_id: str) -> ShardId:
    return ShardMap(Membership((), 1), SHARDS).shard_of("svc", entity_id)
