"""The internal port over real loopback sockets: the peer client (`PeerClients`) and the
internal server (`InternalServer`) of a member with the real router, and scripted raw
peers that misbehave (close mid-call, go silent, speak another version, send garbage)."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest
from larder_sidecar.cluster import frames, wire
from larder_sidecar.cluster.frames import Kind
from larder_sidecar.cluster.membership import Member, MemberId, Membership
from larder_sidecar.cluster.peers import PeerClients, PeerUnavailable
from larder_sidecar.model import Method
from larder_sidecar.outcome import protocol_metadata

from ..entities.fakes import es_method
from .fakes import (
    SHARDS,
    Cluster,
    Network,
    Node,
    entity_owned_by,
    eventually,
    membership,
    shard_map,
)

MEMBERS = membership(1, "a", "b")


@pytest.fixture
def method() -> Method:
    return es_method()


@pytest.fixture
async def cluster(method: Method) -> AsyncIterator[Cluster]:
    # b's first-map hand-off from a (not running here) gives up at once.
    c = Cluster(Network(), method, handoff_wait=0.05)
    yield c
    for node in c.nodes.values():
        await node.server.stop(0.1)
    await c.close()


@pytest.fixture
async def clients() -> AsyncIterator[PeerClients]:
    c = PeerClients(1 << 16, connect_wait=0.3, ping_every=0.1, silent_after=0.5)
    yield c
    await c.close()


async def _b(cluster: Cluster) -> tuple[Node, str]:
    """Member b, serving on a real socket; its address."""
    b = await cluster.start("b", MEMBERS)
    port = await b.server.start("127.0.0.1", 0)
    return b, f"127.0.0.1:{port}"


def _view(sender: str = "a", version: int = 1, shard_count: int = SHARDS) -> Any:
    m = membership(version, "a", "b")
    return wire.MapView(
        sender=sender,
        version=version,
        fingerprint=m.fingerprint,
        shard_count=shard_count,
    )


def _forward(method: Method, entity_id: str, version: int = 1, payload: bytes = b"") -> Any:
    return wire.ForwardRequest(
        entity_type="svc",
        entity_id=entity_id,
        method=method.model.path,
        payload=payload or entity_id.encode(),
        metadata=protocol_metadata([("k", "v")]),
        map_version=version,
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_many_calls_share_one_connection_and_the_view_goes_once(
    cluster: Cluster, clients: PeerClients, method: Method
) -> None:
    b, address = await _b(cluster)
    entities = [entity_owned_by(shard_map(MEMBERS), "b", start=n * 50) for n in range(10)]
    view = _view()
    replies = await asyncio.gather(
        *(clients.forward(address, view, _forward(method, e)) for e in entities * 5)
    )
    assert all(r.WhichOneof("result") == "outcome" for r in replies)
    assert sorted(b.ran()) == sorted(entities * 5)
    (connection,) = b.server.connections
    session = connection._session
    assert session is not None and session.current is not None
    assert session.current.view == view
    assert b.sample("larder_forwarded_commands_in_total", result="ok") == 50


async def test_a_new_view_is_sent_when_the_map_changes_and_calls_carry_its_version(
    cluster: Cluster, clients: PeerClients, method: Method
) -> None:
    b, address = await _b(cluster)
    entity = entity_owned_by(shard_map(MEMBERS), "b")
    await clients.forward(address, _view(version=1), _forward(method, entity, version=1))
    (connection,) = b.server.connections
    assert connection._session is not None
    first = connection._session.current
    await clients.forward(address, _view(version=2), _forward(method, entity, version=2))
    second = connection._session.current
    assert second is not first and second is not None and second.view.version == 2
    # A call that says it was routed under another version than its view is refused.
    with pytest.raises(PeerUnavailable) as info:
        await clients.forward(address, _view(version=2), _forward(method, entity, version=1))
    assert info.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert b.ran() == [entity, entity]


async def test_a_non_member_is_refused_and_its_connection_closed(
    cluster: Cluster, clients: PeerClients, method: Method, caplog: pytest.LogCaptureFixture
) -> None:
    b, address = await _b(cluster)
    entity = entity_owned_by(shard_map(MEMBERS), "b")
    with pytest.raises(PeerUnavailable) as info:
        await clients.forward(address, _view(sender="mallory"), _forward(method, entity))
    assert info.value.code is grpc.StatusCode.PERMISSION_DENIED
    assert "'mallory' is not a member" in info.value.details
    await eventually(lambda: not b.server.connections)
    assert "refusing the internal connection from 127.0.0.1" in caplog.text
    assert b.ran() == []


async def test_another_shard_count_is_refused_with_both_counts(
    cluster: Cluster, clients: PeerClients, method: Method
) -> None:
    b, address = await _b(cluster)
    entity = entity_owned_by(shard_map(MEMBERS), "b")
    with pytest.raises(PeerUnavailable) as info:
        await clients.forward(address, _view(shard_count=128), _forward(method, entity))
    assert info.value.code is grpc.StatusCode.FAILED_PRECONDITION
    assert "128" in info.value.details and str(SHARDS) in info.value.details
    # Refused without running: safe to send elsewhere.
    assert info.value.sent is False
    assert b.ran() == []


async def test_a_peer_that_is_down_fails_fast_and_the_request_was_never_sent(
    clients: PeerClients, method: Method
) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(PeerUnavailable) as info:
        await clients.forward(f"127.0.0.1:{_free_port()}", _view(), _forward(method, "e1"))
    assert loop.time() - started < 1.0
    assert info.value.code is grpc.StatusCode.UNAVAILABLE and info.value.sent is False
    assert "no connection" in info.value.details


async def test_a_restarted_peer_is_reached_by_the_next_call(
    cluster: Cluster, clients: PeerClients, method: Method
) -> None:
    b, address = await _b(cluster)
    entity = entity_owned_by(shard_map(MEMBERS), "b")
    await clients.forward(address, _view(), _forward(method, entity))
    await b.server.stop(0.1)
    with pytest.raises(PeerUnavailable) as info:
        await clients.forward(address, _view(), _forward(method, entity))
    assert info.value.sent is False
    await b.server.start("127.0.0.1", int(address.rpartition(":")[2]))
    reply = await clients.forward(address, _view(), _forward(method, entity))
    assert reply.WhichOneof("result") == "outcome"
    assert b.ran() == [entity, entity]


async def test_a_request_over_the_size_limit_is_refused_by_its_sender(
    cluster: Cluster, clients: PeerClients, method: Method
) -> None:
    b, address = await _b(cluster)
    entity = entity_owned_by(shard_map(MEMBERS), "b")
    with pytest.raises(PeerUnavailable) as info:
        await clients.forward(address, _view(), _forward(method, entity, payload=b"x" * 70_000))
    assert info.value.code is grpc.StatusCode.RESOURCE_EXHAUSTED and info.value.sent is False
    assert "LARDER_MAX_MESSAGE_BYTES" in info.value.details
    # The connection is still good.
    assert (await clients.forward(address, _view(), _forward(method, entity))).outcome
    assert b.ran() == [entity]


async def test_garbage_truncated_frames_and_huge_lengths_close_the_connection_and_run_nothing(
    cluster: Cluster, method: Method, caplog: pytest.LogCaptureFixture
) -> None:
    b, address = await _b(cluster)
    host, _, port = address.rpartition(":")
    entity = entity_owned_by(shard_map(MEMBERS), "b")
    good = frames.frame(Kind.VIEW, 0, _view().SerializeToString())
    call = frames.frame(Kind.FORWARD, 1, _forward(method, entity).SerializeToString())
    cases = [
        b"GET / HTTP/1.1\r\n\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        frames.preface(1 << 20) + good + frames.HEADER.pack(0x7FFFFFFF, Kind.FORWARD, 1),
        frames.preface(1 << 20) + good + frames.HEADER.pack(5, 77, 1),
        frames.preface(1 << 20) + good + frames.frame(Kind.FORWARD, 1, b"\xff\xff\xff"),
    ]
    for data in cases:
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(data)
        await writer.drain()
        # The server closes: the read ends (after its preface, if ours was one).
        await asyncio.wait_for(reader.read(), 2)
        writer.close()
    assert caplog.text.count("closing the internal connection with 127.0.0.1:") == len(cases)
    assert "HTTP/2" in caplog.text and "unknown kind 77" in caplog.text
    # A call cut short by the connection's end never runs.
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(frames.preface(1 << 20) + good + call[:-3])
    await writer.drain()
    writer.close()
    await asyncio.sleep(0.2)
    assert b.ran() == []
    await eventually(lambda: not b.server.connections)


# --- scripted raw peers -----------------------------------------------------------------

Script = Callable[
    [asyncio.StreamReader, asyncio.StreamWriter, list[tuple[int, int, bytes]]], Awaitable[None]
]


async def _read_frame(reader: asyncio.StreamReader) -> tuple[int, int, bytes]:
    length, kind, call = frames.HEADER.unpack(await reader.readexactly(frames.HEADER.size))
    return kind, call, await reader.readexactly(length - frames.HEADER_AFTER_LENGTH)


class RawPeer:
    """A server that answers the preface (with `version`) and then runs `script`."""

    def __init__(self, script: Script, version: int = frames.VERSION) -> None:
        self.script = script
        self.version = version
        self.received: list[tuple[int, int, bytes]] = []
        self.server: asyncio.Server | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for task in self.tasks:
            task.cancel()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        try:
            await reader.readexactly(frames.PREFACE.size)
            writer.write(frames.PREFACE.pack(frames.MAGIC, self.version, 1 << 20))
            await self.script(reader, writer, self.received)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


async def _until_a_call(
    reader: asyncio.StreamReader, received: list[Any]
) -> tuple[int, int, bytes]:
    while True:
        frame = await _read_frame(reader)
        received.append(frame)
        if frame[0] in (Kind.FORWARD, Kind.RELEASE):
            return frame


async def test_a_peer_that_closes_mid_call_fails_its_calls_as_sent(
    clients: PeerClients, method: Method
) -> None:
    async def close_after_two_calls(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, received: list[Any]
    ) -> None:
        await _until_a_call(reader, received)
        await _until_a_call(reader, received)

    async with RawPeer(close_after_two_calls) as address:
        results = await asyncio.gather(
            clients.forward(address, _view(), _forward(method, "e1")),
            clients.forward(address, _view(), _forward(method, "e2")),
            return_exceptions=True,
        )
    for result in results:
        assert isinstance(result, PeerUnavailable)
        assert result.code is grpc.StatusCode.UNAVAILABLE and result.sent is True
        assert "closed" in result.details


async def test_a_silent_peer_is_noticed_by_pings_within_seconds(method: Method) -> None:
    async def silent(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, received: list[Any]
    ) -> None:
        while True:
            received.append(await _read_frame(reader))

    clients = PeerClients(1 << 16, forward_timeout=30.0, ping_every=0.1, silent_after=0.5)
    try:
        async with RawPeer(silent) as address:
            loop = asyncio.get_running_loop()
            started = loop.time()
            with pytest.raises(PeerUnavailable) as info:
                await clients.forward(address, _view(), _forward(method, "e1"))
            assert loop.time() - started < 2.0
            assert "nothing heard" in info.value.details
    finally:
        await clients.close()


async def test_a_call_has_a_deadline_and_the_peer_is_told_to_cancel(method: Method) -> None:
    async def answers_pings_only(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, received: list[Any]
    ) -> None:
        while True:
            frame = await _read_frame(reader)
            received.append(frame)
            if frame[0] == Kind.PING:
                writer.write(frames.frame(Kind.PONG, 0))

    clients = PeerClients(1 << 16, forward_timeout=0.3)
    try:
        peer = RawPeer(answers_pings_only)
        async with peer as address:
            with pytest.raises(PeerUnavailable) as info:
                await clients.forward(address, _view(), _forward(method, "e1"))
            assert info.value.code is grpc.StatusCode.DEADLINE_EXCEEDED
            await eventually(lambda: any(k == Kind.CANCEL for k, _, _ in peer.received))
            ((_, call, _),) = [f for f in peer.received if f[0] == Kind.FORWARD]
            assert (Kind.CANCEL, call, b"") in peer.received
    finally:
        await clients.close()


async def test_a_caller_that_gives_up_leaves_nothing_behind(
    clients: PeerClients, method: Method
) -> None:
    async def answer_the_second_only(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, received: list[Any]
    ) -> None:
        await _until_a_call(reader, received)
        _, call, _ = await _until_a_call(reader, received)
        reply = wire.ForwardReply(error=wire.Status(code=5, message="no such entity"))
        writer.write(frames.frame(Kind.FORWARD_REPLY, call, reply.SerializeToString()))
        while True:
            received.append(await _read_frame(reader))

    peer = RawPeer(answer_the_second_only)
    async with peer as address:
        first = asyncio.create_task(clients.forward(address, _view(), _forward(method, "e1")))
        await eventually(lambda: len(peer.received) >= 2)
        first.cancel()
        reply = await clients.forward(address, _view(), _forward(method, "e2"))
        assert reply.error.message == "no such entity"
        await eventually(lambda: any(k == Kind.CANCEL for k, _, _ in peer.received))
        connection = clients._links[address].connection
        assert connection is not None and connection.in_flight == 0


async def test_another_framing_version_is_refused_with_both_versions(
    clients: PeerClients, method: Method, caplog: pytest.LogCaptureFixture
) -> None:
    async def nothing(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, received: list[Any]
    ) -> None:
        await reader.read()

    with caplog.at_level(logging.ERROR):
        async with RawPeer(nothing, version=frames.VERSION + 1) as address:
            with pytest.raises(PeerUnavailable) as info:
                await clients.forward(address, _view(), _forward(method, "e1"))
    assert info.value.code is grpc.StatusCode.FAILED_PRECONDITION and info.value.sent is False
    assert f"version {frames.VERSION + 1}, this one {frames.VERSION}" in info.value.details


async def test_forget_lets_calls_in_flight_finish_then_closes(
    clients: PeerClients, method: Method
) -> None:
    go = asyncio.Event()

    async def answer_when_told(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, received: list[Any]
    ) -> None:
        _, call, _ = await _until_a_call(reader, received)
        await go.wait()
        reply = wire.ForwardReply(error=wire.Status(code=5, message="answered"))
        writer.write(frames.frame(Kind.FORWARD_REPLY, call, reply.SerializeToString()))
        await reader.read()

    peer = RawPeer(answer_when_told)
    async with peer as address:
        call = asyncio.create_task(clients.forward(address, _view(), _forward(method, "e1")))
        await eventually(lambda: any(k == Kind.FORWARD for k, _, _ in peer.received))
        connection = clients._links[address].connection
        assert connection is not None
        await clients.forget([])
        assert not connection.closed
        go.set()
        assert (await call).error.message == "answered"
        await eventually(lambda: connection.closed)


async def test_a_stopped_server_closes_its_connections_and_the_next_call_is_not_sent(
    cluster: Cluster, clients: PeerClients, method: Method
) -> None:
    b, address = await _b(cluster)
    entity = entity_owned_by(shard_map(MEMBERS), "b")
    await clients.forward(address, _view(), _forward(method, entity))
    await b.server.stop(1.0)
    assert not b.server.connections
    # The next call finds the connection gone and no server: never sent.
    with pytest.raises(PeerUnavailable) as info:
        await clients.forward(address, _view(), _forward(method, entity))
    assert info.value.sent is False


def test_the_transport_runs_on_uvloop_as_the_sidecar_does(method: Method) -> None:
    # uvloop's transports are not asyncio.Transport subclasses.
    import uvloop  # noqa: PLC0415 - only this test needs it

    async def scenario() -> list[str]:
        cluster = Cluster(Network(), method, handoff_wait=0.05)
        clients = PeerClients(1 << 16)
        try:
            b, address = await _b(cluster)
            entity = entity_owned_by(shard_map(MEMBERS), "b")
            replies = await asyncio.gather(
                *(clients.forward(address, _view(), _forward(method, entity)) for _ in range(3))
            )
            assert all(r.WhichOneof("result") == "outcome" for r in replies)
            return b.ran()
        finally:
            await clients.close()
            for node in cluster.nodes.values():
                await node.server.stop(0.1)
            await cluster.close()

    ran = uvloop.run(scenario())
    assert len(ran) == 3


async def test_a_call_waiting_to_connect_to_a_member_that_leaves_fails_as_never_sent(
    method: Method,
) -> None:
    clients = PeerClients(1 << 16, connect_wait=5.0)
    try:
        address = f"127.0.0.1:{_free_port()}"
        call = asyncio.create_task(clients.forward(address, _view(), _forward(method, "e1")))
        await eventually(lambda: address in clients._links)
        await asyncio.sleep(0.05)
        await clients.forget([])
        # Not a CancelledError: the caller (a front end's handler) must get an answer.
        with pytest.raises(PeerUnavailable) as info:
            await asyncio.wait_for(call, 2)
        assert info.value.sent is False and "stopped" in info.value.details
    finally:
        await clients.close()


async def test_a_connection_from_no_members_address_is_turned_away_at_accept(
    method: Method, caplog: pytest.LogCaptureFixture
) -> None:
    # Every member is elsewhere: 127.0.0.1, where the test connects from, is no member's.
    elsewhere = Membership(
        (Member(MemberId("a"), "10.0.0.1:9604"), Member(MemberId("b"), "10.0.0.2:9604")), 1
    )
    cluster = Cluster(Network(), method, handoff_wait=0.05)
    try:
        b = await cluster.start("b", elsewhere)
        port = await b.server.start("127.0.0.1", 0)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(frames.preface(1 << 20))
        # The server's preface, then (without a word from us) a go-away, then the end.
        data = await asyncio.wait_for(reader.read(), 5)
        assert data.startswith(
            frames.PREFACE.pack(frames.MAGIC, frames.VERSION, b.server.max_frame)
        )
        rest = frames.Decoder(1 << 20).feed(data[frames.PREFACE.size :])
        ((kind, _, body),) = rest
        assert kind == Kind.GOAWAY
        status = wire.Status.FromString(body)
        assert status.code == grpc.StatusCode.PERMISSION_DENIED.value[0]
        assert "127.0.0.1 is no member's address" in status.message
        assert "refusing the internal connection from 127.0.0.1:" in caplog.text
        writer.close()
        await eventually(lambda: not b.server.connections)
    finally:
        for node in cluster.nodes.values():
            await node.server.stop(0.1)
        await cluster.close()


async def test_a_retired_connection_whose_call_never_answers_closes_at_its_deadline(
    method: Method,
) -> None:
    async def answers_pings_only(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, received: list[Any]
    ) -> None:
        while True:
            frame = await _read_frame(reader)
            received.append(frame)
            if frame[0] == Kind.PING:
                writer.write(frames.frame(Kind.PONG, 0))

    clients = PeerClients(1 << 16, forward_timeout=0.5, ping_every=0.1, silent_after=2.0)
    try:
        peer = RawPeer(answers_pings_only)
        async with peer as address:
            call = asyncio.create_task(clients.forward(address, _view(), _forward(method, "e1")))
            await eventually(lambda: any(k == Kind.FORWARD for k, _, _ in peer.received))
            connection = clients._links[address].connection
            assert connection is not None
            await clients.forget([])
            with pytest.raises(PeerUnavailable) as info:
                await call
            assert info.value.code is grpc.StatusCode.DEADLINE_EXCEEDED
            await eventually(lambda: connection.closed, within=2.0)
    finally:
        await clients.close()


async def test_a_call_that_joins_a_failing_attempt_late_gets_its_own_full_wait(
    cluster: Cluster, method: Method
) -> None:
    # The first call's attempt retries at 0, 0.1, 0.3, 0.7 s and gives up at 1 s; the peer
    # starts listening at 0.75 s, after the attempt's last try.
    clients = PeerClients(1 << 16, connect_wait=1.0)
    try:
        port = _free_port()
        address = f"127.0.0.1:{port}"
        entity = entity_owned_by(shard_map(MEMBERS), "b")
        first = asyncio.create_task(clients.forward(address, _view(), _forward(method, entity)))
        await asyncio.sleep(0.75)
        b = await cluster.start("b", MEMBERS)
        await b.server.start("127.0.0.1", port)
        await asyncio.sleep(0.05)
        late = await clients.forward(address, _view(), _forward(method, entity))
        assert late.WhichOneof("result") == "outcome"
        # The first call either failed as never sent or was answered too.
        try:
            await first
        except PeerUnavailable as e:
            assert e.sent is False
    finally:
        await clients.close()
