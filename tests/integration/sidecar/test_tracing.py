"""Tracing: the sidecar's spans, exported over OTLP to a receiver on loopback, for
commands over HTTP with a client's `traceparent`, a side effect to another entity, a
forward, a journal write that the journal refuses, and a client-streamed action."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from larder_sidecar.app import Sidecar
from larder_sidecar.journal.sqlite import SqliteJournal
from larder_sidecar.tracing import TracingConfig

from tests.infra.otlp import OtlpReceiver, ReceivedSpan, children, tree

from .conftest import Client, SidecarFactory
from .user_function import UserFunction

PKG = "larder.test"
CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"


async def post(
    port: int, path: str, body: dict[str, Any], *headers: str
) -> tuple[int, dict[str, str], Any]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    data = json.dumps(body).encode()
    writer.write(
        (
            f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\nConnection: close\r\n"
            + "".join(h + "\r\n" for h in headers)
            + "\r\n"
        ).encode()
        + data
    )
    raw = await reader.read()
    writer.close()
    head, _, payload = raw.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    fields = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), {k.lower(): v for k, v in fields.items()}, json.loads(payload)


def config(receiver: OtlpReceiver) -> TracingConfig:
    return TracingConfig(endpoint=receiver.endpoint, export_delay=0.05, service_name="cart")


def one(spans: list[ReceivedSpan], name: str) -> ReceivedSpan:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, f"{name}: {len(found)} spans in {sorted(s.name for s in spans)}"
    return found[0]


async def test_a_command_with_a_side_effect_continues_the_clients_trace(
    start_sidecar: SidecarFactory, user_function: UserFunction
) -> None:
    async with OtlpReceiver() as receiver:
        sidecar = await start_sidecar(user_function, tracing=config(receiver))
        status, _, body = await post(
            sidecar.public_port,
            f"/{PKG}.Counter/AddWithEffect",
            {"id": "a", "target": "b", "amount": 3, "synchronous": True},
            f"traceparent: 00-{CLIENT_TRACE}-{CLIENT_SPAN}-01",
        )
        assert (status, body) == (200, {"value": "3"})
        spans = await receiver.wait_for(
            lambda s: (
                sum(x.name == "journal write" for x in s) >= 2
                and any(x.kind == "SERVER" for x in s)
            )
        )
    server = one(spans, f"/{PKG}.Counter/AddWithEffect")
    # The client's trace, continued: its span is the parent of ours.
    assert (server.kind, server.trace_id, server.parent_id) == ("SERVER", CLIENT_TRACE, CLIENT_SPAN)
    assert server.attributes["rpc.method"] == "AddWithEffect"
    assert server.service == "cart"
    assert tree(spans, server) == [
        f"/{PKG}.Counter/AddWithEffect",
        f"  handle {PKG}.Counter/AddWithEffect",
        "    queue",
        "    activate",
        "    user function",
        "    journal write",
        f"  side effect {PKG}.Counter/Add",
        f"    handle {PKG}.Counter/Add",
        "      queue",
        "      activate",
        "      user function",
        "      journal write",
    ], "\n".join(tree(spans, server))
    handle = children(spans, server)[0]
    assert handle.attributes["larder.entity_id"] == "a"
    activate = children(spans, handle)[1]
    assert activate.attributes["larder.events.replayed"] == 0
    write = children(spans, handle)[3]
    assert write.attributes["larder.journal.events"] == 1
    assert write.status == "UNSET"
    assert write.attributes["larder.journal.outcome"] == "stored"
    effect = children(spans, server)[1]
    assert effect.attributes["larder.synchronous"] is True
    assert children(spans, effect)[0].attributes["larder.entity_id"] == "b"


async def test_the_user_function_gets_the_traceparent_of_its_call(
    start_sidecar: SidecarFactory, user_function: UserFunction
) -> None:
    async with OtlpReceiver() as receiver:
        sidecar = await start_sidecar(user_function, tracing=config(receiver))
        # Counter.Get replies with the metadata it received: the HTTP headers show it.
        status, headers, _ = await post(sidecar.public_port, f"/{PKG}.Counter/Get", {"id": "x"})
        assert status == 200
        spans = await receiver.wait_for(lambda s: any(x.name == "user function" for x in s))
    call = one(spans, "user function")
    version, trace_id, parent_id, flags = headers["traceparent"].split("-")
    assert (version, trace_id, parent_id) == ("00", call.trace_id, call.span_id)
    assert int(flags, 16) & 1  # sampled (0x02, W3C's "random trace id", may be set too)
    # No traceparent from the client: a new trace, rooted at the sidecar's SERVER span.
    server = one(spans, f"/{PKG}.Counter/Get")
    assert server.parent_id == ""


async def test_a_forward_is_a_span_around_the_forwarded_command(
    start_sidecar: SidecarFactory, user_function: UserFunction
) -> None:
    async with OtlpReceiver() as receiver:
        sidecar = await start_sidecar(user_function, tracing=config(receiver))
        status, _, body = await post(
            sidecar.public_port, f"/{PKG}.Counter/AddAndForward", {"id": "f", "amount": 2}
        )
        assert (status, body) == (200, {"value": "2"})
        spans = await receiver.wait_for(
            lambda s: any(x.name == f"handle {PKG}.Counter/Get" for x in s)
        )
    server = one(spans, f"/{PKG}.Counter/AddAndForward")
    assert tree(spans, server) == [
        f"/{PKG}.Counter/AddAndForward",
        f"  handle {PKG}.Counter/AddAndForward",
        "    queue",
        "    activate",
        "    user function",
        "    journal write",
        f"  forward {PKG}.Counter/Get",
        f"    handle {PKG}.Counter/Get",
        "      queue",
        "      user function",
    ], "\n".join(tree(spans, server))


async def test_a_write_the_journal_refuses_is_a_failed_span(
    start_sidecar: SidecarFactory, user_function: UserFunction, tmp_path: Path
) -> None:
    path = str(tmp_path / "shared.sqlite3")
    async with OtlpReceiver() as receiver:
        # Two sidecars on one journal without sharding: the second writes the entity,
        # then the first, still holding its old position, is refused by the fencing.
        first = await start_sidecar(
            user_function, journal=SqliteJournal(path), tracing=config(receiver)
        )
        second = await start_sidecar(user_function, journal=SqliteJournal(path))
        assert (await post(first.public_port, f"/{PKG}.Counter/Add", {"id": "w", "amount": 1}))[
            0
        ] == 200
        assert (await post(second.public_port, f"/{PKG}.Counter/Add", {"id": "w", "amount": 1}))[
            0
        ] == 200
        status, _, body = await post(
            first.public_port, f"/{PKG}.Counter/Add", {"id": "w", "amount": 1}
        )
        assert status == 409, body
        def failed_with_its_server_span(found: Any) -> bool:
            # The two spans may arrive in different export batches.
            traces = {
                x.trace_id for x in found if x.name == "journal write" and x.status == "ERROR"
            }
            return any(x.kind == "SERVER" and x.trace_id in traces for x in found)

        spans = await receiver.wait_for(failed_with_its_server_span)
    failed = [s for s in spans if s.name == "journal write" and s.status == "ERROR"]
    assert len(failed) == 1
    assert failed[0].attributes["larder.journal.outcome"] == "fenced"
    assert "exception" in failed[0].events
    server = next(s for s in spans if s.kind == "SERVER" and s.trace_id == failed[0].trace_id)
    assert server.attributes["rpc.grpc.status_code"] == 10  # ABORTED
    assert server.status == "ERROR"


async def test_a_client_streamed_action_is_traced_as_a_unary_call(
    start_sidecar: SidecarFactory,
    user_function: UserFunction,
    connect: Callable[[Sidecar], Client],
) -> None:
    async with OtlpReceiver() as receiver:
        client = connect(await start_sidecar(user_function, tracing=config(receiver)))
        pb = client.pb

        async def texts(*values: str) -> AsyncIterator[Any]:
            for v in values:
                yield pb.Text(text=v)

        join = client.channel.stream_unary(
            f"/{PKG}.Echo/Join",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=pb.Text.FromString,
        )
        joined = await join(
            texts("a", "b"),
            timeout=10,
            metadata=(("traceparent", f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"),),
        )
        assert joined.text == "a+b"
        spans = await receiver.wait_for(lambda s: any(x.kind == "SERVER" for x in s))
    server = one(spans, f"/{PKG}.Echo/Join")
    assert (server.kind, server.trace_id, server.parent_id) == ("SERVER", CLIENT_TRACE, CLIENT_SPAN)
    assert server.attributes["rpc.method"] == "Join"
    assert tree(spans, server) == [f"/{PKG}.Echo/Join", "  user function"]


async def test_streamed_actions_are_server_spans_open_until_their_last_reply(
    start_sidecar: SidecarFactory,
    user_function: UserFunction,
    connect: Callable[[Sidecar], Client],
) -> None:
    async with OtlpReceiver() as receiver:
        client = connect(await start_sidecar(user_function, tracing=config(receiver)))
        pb = client.pb
        traced = (("traceparent", f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"),)
        # Server-streamed: served by the public port itself.
        repeat = client.channel.unary_stream(
            f"/{PKG}.Echo/Repeat",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=pb.Text.FromString,
        )
        replies = [r.text async for r in repeat(pb.Text(text="r"), timeout=10, metadata=traced)]
        assert replies == ["r0", "r1", "r2"]

        async def texts(*values: str) -> AsyncIterator[Any]:
            for v in values:
                yield pb.Text(text=v)

        # Bidirectional: relayed to the grpc.aio front. Without a client's traceparent.
        chat = client.channel.stream_stream(
            f"/{PKG}.Echo/Chat",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=pb.Text.FromString,
        )
        replies = [r.text async for r in chat(texts("a", "b"), timeout=10)]
        assert replies == ["A", "B"]
        spans = await receiver.wait_for(
            lambda s: sum(x.kind == "SERVER" for x in s) >= 2, within=10
        )
    for name, sent, parent in (("Repeat", 3, CLIENT_SPAN), ("Chat", 2, "")):
        server = one(spans, f"/{PKG}.Echo/{name}")
        assert (server.kind, server.parent_id) == ("SERVER", parent), name
        assert server.attributes["rpc.method"] == name
        assert server.attributes["larder.messages.sent"] == sent
        assert server.attributes["rpc.grpc.status_code"] == 0
        assert server.status == "UNSET"
        # The user function continues the SERVER span: its context in the first command.
        got = dict(user_function.record.streamed_metadata)[name]["traceparent"]
        assert got.split("-")[1:3] == [server.trace_id, server.span_id], name
    assert one(spans, f"/{PKG}.Echo/Repeat").trace_id == CLIENT_TRACE
