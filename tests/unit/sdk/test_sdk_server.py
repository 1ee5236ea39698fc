"""The real gRPC server, driven in-process over the protocol: the test plays the sidecar."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import platform
import signal
from collections.abc import AsyncIterator, Iterable
from datetime import timedelta
from typing import Any, cast

import grpc
import pytest
from akkaserverless.component.action import action_pb2
from akkaserverless.component.entity import entity_pb2
from akkaserverless.component.eventsourcedentity import event_sourced_entity_pb2 as es_pb2
from akkaserverless.component.valueentity import value_entity_pb2 as ve_pb2
from akkaserverless.protocol import discovery_pb2
from google.protobuf import any_pb2, descriptor_pb2, empty_pb2
from google.protobuf.message import Message
from larder_sdk import Action, EventSourcedEntity, LarderService, ServerSettings, ValueEntity
from larder_sdktest import cart_pb2, counter_pb2, echo_pb2  # type: ignore[import-not-found]

# grpc-stubs does not describe grpc.aio's streaming calls fully; these are typed loosely.
EOF: Any = cast(Any, grpc.aio).EOF

ES_HANDLE = "/akkaserverless.component.eventsourcedentity.EventSourcedEntities/Handle"
VE_HANDLE = "/akkaserverless.component.valueentity.ValueEntities/Handle"
ACTIONS = "/akkaserverless.component.action.Actions/"
DISCOVERY = "/akkaserverless.protocol.Discovery/"


def pack(message: Message) -> any_pb2.Any:
    return any_pb2.Any(
        type_url="type.googleapis.com/" + message.DESCRIPTOR.full_name,
        value=message.SerializeToString(),
    )


class Sidecar:
    """Plays the sidecar's side of the protocol against the user function."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.channel: Any = channel

    async def unary(self, path: str, request: Message, response_type: Any) -> Any:
        call = self.channel.unary_unary(
            path,
            request_serializer=type(request).SerializeToString,
            response_deserializer=response_type.FromString,
        )
        return await call(request, timeout=10)

    def entity_stream(self, path: str, in_type: Any, out_type: Any) -> Any:
        return self.channel.stream_stream(
            path,
            request_serializer=in_type.SerializeToString,
            response_deserializer=out_type.FromString,
        )(timeout=10)


@pytest.fixture
async def sidecar(
    counter: EventSourcedEntity[Any], cart: ValueEntity[Any], echo: Action
) -> AsyncIterator[Sidecar]:
    counter.passivation_timeout = timedelta(seconds=30)
    service = LarderService(
        [counter, cart, echo],
        service_name="sdk-tests",
        service_version="1.2.3",
        settings=ServerSettings(host="127.0.0.1", port=0),
    )
    port = await service.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield Sidecar(channel)
    await service.stop(0)


def command(name: str, message: Message, command_id: int, **metadata: str) -> Any:
    cmd = entity_pb2.Command(entity_id="c-1", id=command_id, name=name, payload=pack(message))
    for key, value in metadata.items():
        cmd.metadata.entries.add(key=key, string_value=value)
    return cmd


# -- discovery ---------------------------------------------------------------------------------


async def test_discover_serves_descriptors_components_and_service_info(sidecar: Sidecar) -> None:
    spec = await sidecar.unary(
        DISCOVERY + "Discover",
        discovery_pb2.ProxyInfo(
            protocol_major_version=0, protocol_minor_version=7, proxy_name="test"
        ),
        discovery_pb2.Spec,
    )
    info = spec.service_info
    assert (info.service_name, info.service_version) == ("sdk-tests", "1.2.3")
    assert info.service_runtime == f"Python {platform.python_version()}"
    assert info.support_library_name == "larder-sdk"
    assert (info.protocol_major_version, info.protocol_minor_version) == (0, 7)
    files = descriptor_pb2.FileDescriptorSet.FromString(spec.proto)
    names = [f.name for f in files.file]
    for needed in (
        "larder_sdktest/counter.proto",
        "larder_sdktest/cart.proto",
        "larder_sdktest/echo.proto",
        "akkaserverless/annotations.proto",
        "google/protobuf/descriptor.proto",
        "google/protobuf/empty.proto",
    ):
        assert needed in names
    # Imports come before the files importing them.
    for position, file in enumerate(files.file):
        for dependency in file.dependency:
            assert names.index(dependency) < position
    components = {c.service_name: c for c in spec.components}
    counter = components["larder.sdktest.CounterService"]
    assert (
        counter.component_type == "akkaserverless.component.eventsourcedentity.EventSourcedEntities"
    )
    assert counter.entity.entity_type == "counter"
    assert counter.entity.passivation_strategy.timeout.timeout == 30_000
    assert components["larder.sdktest.CartService"].entity.entity_type == "cart"
    echo = components["larder.sdktest.EchoAction"]
    assert echo.component_type == "akkaserverless.component.action.Actions"
    assert echo.WhichOneof("component_settings") == "component"


async def test_version_probe_gets_service_info_only(sidecar: Sidecar) -> None:
    spec = await sidecar.unary(
        DISCOVERY + "Discover", discovery_pb2.ProxyInfo(), discovery_pb2.Spec
    )
    assert spec.service_info.support_library_name == "larder-sdk"
    assert not spec.proto and not spec.components


async def test_health_check_and_report_error(
    sidecar: Sidecar, caplog: pytest.LogCaptureFixture
) -> None:
    await sidecar.unary(DISCOVERY + "HealthCheck", empty_pb2.Empty(), empty_pb2.Empty)
    error = discovery_pb2.UserFunctionError(code="AS-001", message="bad key", detail="more")
    with caplog.at_level(logging.ERROR, logger="larder_sdk.discovery"):
        await sidecar.unary(DISCOVERY + "ReportError", error, empty_pb2.Empty)
    assert "[AS-001]: bad key" in caplog.text


# -- event-sourced entities --------------------------------------------------------------------


async def test_event_sourced_stream_init_replay_commands_and_bad_input(sidecar: Sidecar) -> None:
    stream = sidecar.entity_stream(
        ES_HANDLE, es_pb2.EventSourcedStreamIn, es_pb2.EventSourcedStreamOut
    )
    snapshot = es_pb2.EventSourcedSnapshot(
        snapshot_sequence=5, snapshot=pack(counter_pb2.CounterState(value=50, changes=5))
    )
    await stream.write(
        es_pb2.EventSourcedStreamIn(
            init=es_pb2.EventSourcedInit(
                service_name="larder.sdktest.CounterService", entity_id="c-1", snapshot=snapshot
            )
        )
    )
    await stream.write(
        es_pb2.EventSourcedStreamIn(
            event=es_pb2.EventSourcedEvent(
                sequence=6, payload=pack(counter_pb2.ValueIncreased(value=1))
            )
        )
    )

    async def send(cmd: Any) -> Any:
        await stream.write(es_pb2.EventSourcedStreamIn(command=cmd))
        out = await stream.read()
        return out.reply

    got = await send(command("GetCurrentCounter", counter_pb2.GetCounter(), 1))
    assert got.command_id == 1
    assert counter_pb2.CurrentCounter.FromString(got.client_action.reply.payload.value).value == 51

    increased = await send(
        command("Increase", counter_pb2.IncreaseValue(value=2), 2, **{"x-echo": "e"})
    )
    assert [e.type_url for e in increased.events] == [
        "type.googleapis.com/larder.sdktest.ValueIncreased"
    ]
    # Sequence 6 -> 7 does not cross snapshot_every=3; the next command (7 -> 8) does not
    # either, 8 -> 9 does.
    assert not increased.HasField("snapshot")
    assert increased.client_action.reply.metadata.entries[0].string_value == "e"

    unknown = await send(command("Explode", counter_pb2.GetCounter(), 3))
    assert unknown.command_id == 3
    assert "unknown command 'Explode'" in unknown.client_action.failure.description
    assert unknown.client_action.failure.command_id == 3

    garbage = entity_pb2.Command(
        entity_id="c-1",
        id=4,
        name="Increase",
        payload=any_pb2.Any(type_url="type.googleapis.com/x", value=b"\xff\xff\xff"),
    )
    undecodable = await send(garbage)
    assert "payload is not a valid larder.sdktest.IncreaseValue" in (
        undecodable.client_action.failure.description
    )

    failed = await send(command("Misbehave", counter_pb2.MisbehaveCommand(how="raise"), 5))
    description = failed.client_action.failure.description
    assert "event-sourced entity 'counter' (larder.sdktest.CounterService)" in description
    assert "entity 'c-1'" in description and "command 'Misbehave'" in description
    assert "ValueError: the handler broke" in description
    assert not failed.events

    # The stream is still usable, and the failed commands changed nothing.
    await send(command("Increase", counter_pb2.IncreaseValue(value=1), 6))
    crossing = await send(command("Increase", counter_pb2.IncreaseValue(value=1), 7))
    assert counter_pb2.CounterState.FromString(crossing.snapshot.value) == counter_pb2.CounterState(
        value=55, changes=9
    )

    forwarded = await send(command("IncreaseElsewhere", counter_pb2.IncreaseValue(value=3), 8))
    assert forwarded.client_action.forward.service_name == "larder.sdktest.CounterService"
    assert forwarded.client_action.forward.command_name == "Increase"
    assert [s.synchronous for s in forwarded.side_effects] == [True, False]
    await stream.done_writing()
    assert await stream.read() is EOF


@pytest.mark.parametrize(
    ("messages", "expected"),
    [
        ([es_pb2.EventSourcedStreamIn(command=entity_pb2.Command(name="Increase"))], "before Init"),
        (
            [es_pb2.EventSourcedStreamIn(init=es_pb2.EventSourcedInit(service_name="no.Such"))],
            "no event-sourced entity serves 'no.Such'",
        ),
        (
            [
                es_pb2.EventSourcedStreamIn(
                    init=es_pb2.EventSourcedInit(
                        service_name="larder.sdktest.CounterService", entity_id="c-2"
                    )
                ),
                es_pb2.EventSourcedStreamIn(
                    event=es_pb2.EventSourcedEvent(
                        sequence=1, payload=pack(counter_pb2.Unhandled())
                    )
                ),
            ],
            "cannot replay event 1 (larder.sdktest.Unhandled)",
        ),
        (
            [
                es_pb2.EventSourcedStreamIn(
                    init=es_pb2.EventSourcedInit(service_name="larder.sdktest.CounterService")
                ),
                es_pb2.EventSourcedStreamIn(
                    init=es_pb2.EventSourcedInit(service_name="larder.sdktest.CounterService")
                ),
            ],
            "second Init",
        ),
    ],
)
async def test_event_sourced_protocol_errors_fail_the_stream(
    sidecar: Sidecar, messages: list[Any], expected: str
) -> None:
    stream = sidecar.entity_stream(
        ES_HANDLE, es_pb2.EventSourcedStreamIn, es_pb2.EventSourcedStreamOut
    )
    for message in messages:
        await stream.write(message)
    out = await stream.read()
    assert out.WhichOneof("message") == "failure"
    assert expected in out.failure.description
    assert await stream.read() is EOF


# -- value entities ----------------------------------------------------------------------------


async def test_value_entity_stream(sidecar: Sidecar) -> None:
    stream = sidecar.entity_stream(
        VE_HANDLE, ve_pb2.ValueEntityStreamIn, ve_pb2.ValueEntityStreamOut
    )
    stored = cart_pb2.Cart(items=[cart_pb2.LineItem(product_id="a", quantity=1)])
    await stream.write(
        ve_pb2.ValueEntityStreamIn(
            init=ve_pb2.ValueEntityInit(
                service_name="larder.sdktest.CartService",
                entity_id="cart-1",
                state=ve_pb2.ValueEntityInitState(value=pack(stored)),
            )
        )
    )

    async def send(cmd: Any) -> Any:
        await stream.write(ve_pb2.ValueEntityStreamIn(command=cmd))
        return (await stream.read()).reply

    added = await send(command("AddItem", cart_pb2.AddLineItem(product_id="b", quantity=2), 1))
    updated = cart_pb2.Cart.FromString(added.state_action.update.value.value)
    assert [i.product_id for i in updated.items] == ["a", "b"]
    failed = await send(command("CheckoutCart", cart_pb2.Checkout(fail=True), 2))
    assert "RuntimeError: checkout broke" in failed.client_action.failure.description
    assert not failed.HasField("state_action")
    checkout = await send(command("CheckoutCart", cart_pb2.Checkout(cart_id="cart-1"), 3))
    assert checkout.state_action.WhichOneof("action") == "delete"
    assert checkout.side_effects[0].service_name == "larder.sdktest.EchoAction"
    assert checkout.client_action.forward.command_name == "Increase"
    got = await send(command("GetCart", cart_pb2.GetShoppingCart(), 4))
    assert cart_pb2.Cart.FromString(got.client_action.reply.payload.value) == cart_pb2.Cart()
    await stream.done_writing()
    assert await stream.read() is EOF


# -- actions -----------------------------------------------------------------------------------


def action_command(name: str | None, message: Message | None) -> Any:
    cmd = action_pb2.ActionCommand()
    if name is not None:
        cmd.service_name = "larder.sdktest.EchoAction"
        cmd.name = name
    if message is not None:
        cmd.payload.CopyFrom(pack(message))
    return cmd


def pong(response: Any) -> str:
    return str(echo_pb2.Pong.FromString(response.reply.payload.value).text)


async def test_action_unary_over_grpc(sidecar: Sidecar) -> None:
    async def call(ping: Any) -> Any:
        return await sidecar.unary(
            ACTIONS + "HandleUnary", action_command("Echo", ping), action_pb2.ActionResponse
        )

    assert pong(await call(echo_pb2.Ping(text="hi"))) == "hi"
    assert (await call(echo_pb2.Ping(text="c", mode="forward"))).forward.command_name == "Increase"
    assert (await call(echo_pb2.Ping(text="x", mode="fail"))).failure.description == (
        "echo refused 'x'"
    )
    none = await call(echo_pb2.Ping(text="n", mode="none"))
    assert none.WhichOneof("response") is None and len(none.side_effects) == 1
    unknown = await sidecar.unary(
        ACTIONS + "HandleUnary", action_command("Nope", echo_pb2.Ping()), action_pb2.ActionResponse
    )
    assert "unknown command 'Nope'" in unknown.failure.description


async def test_action_streams_over_grpc(sidecar: Sidecar) -> None:
    def requests(texts: Iterable[str]) -> list[Any]:
        return [action_command("Collect", None)] + [
            action_command(None, echo_pb2.Ping(text=t)) for t in texts
        ]

    collect = sidecar.channel.stream_unary(
        ACTIONS + "HandleStreamedIn",
        request_serializer=action_pb2.ActionCommand.SerializeToString,
        response_deserializer=action_pb2.ActionResponse.FromString,
    )
    assert pong(await collect(iter(requests(["a", "b"])), timeout=10)) == "a,b"

    repeat = sidecar.channel.unary_stream(
        ACTIONS + "HandleStreamedOut",
        request_serializer=action_pb2.ActionCommand.SerializeToString,
        response_deserializer=action_pb2.ActionResponse.FromString,
    )
    replies = [
        r
        async for r in repeat(
            action_command("Repeat", echo_pb2.Ping(text="r", count=2)), timeout=10
        )
    ]
    assert [pong(r) for r in replies] == ["r-0", "r-1"]

    chat = sidecar.channel.stream_stream(
        ACTIONS + "HandleStreamed",
        request_serializer=action_pb2.ActionCommand.SerializeToString,
        response_deserializer=action_pb2.ActionResponse.FromString,
    )
    call = chat(timeout=10)
    await call.write(action_command("Chat", None))
    await call.write(action_command(None, echo_pb2.Ping(text="one")))
    assert pong(await call.read()) == "ONE"
    await call.write(action_command(None, echo_pb2.Ping(text="two")))
    assert pong(await call.read()) == "TWO"
    await call.write(action_command(None, echo_pb2.Ping(mode="fail", text="three")))
    assert (await call.read()).failure.description == "chat refused 'three'"
    assert await call.read() is EOF


# -- lifecycle ---------------------------------------------------------------------------------


async def _serving(service: LarderService) -> tuple[asyncio.Task[None], Sidecar, Any]:
    serving = asyncio.create_task(service.serve())
    port = await service.wait_started()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    return serving, Sidecar(channel), channel


async def _stop(serving: asyncio.Task[None], channel: Any) -> None:
    """Cancel the serving task (a no-op if it has finished) and wait until it is gone."""
    serving.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await serving
    await channel.close()


async def _discover(sidecar: Sidecar) -> None:
    info = discovery_pb2.ProxyInfo(protocol_major_version=0, protocol_minor_version=7)
    await sidecar.unary(DISCOVERY + "Discover", info, discovery_pb2.Spec)


async def test_proxy_terminated_alone_keeps_serving_for_the_next_sidecar(echo: Action) -> None:
    # A sidecar container can restart while the pod lives on: the function stays up, and
    # a later SIGTERM shuts it down at once because the sidecar has already gone.
    service = LarderService(
        [echo], settings=ServerSettings(host="127.0.0.1", port=0), shutdown_wait=60
    )
    serving, sidecar, channel = await _serving(service)
    try:
        await _discover(sidecar)
        await sidecar.unary(DISCOVERY + "ProxyTerminated", empty_pb2.Empty(), empty_pb2.Empty)
        assert service.proxy_terminated
        await sidecar.unary(DISCOVERY + "HealthCheck", empty_pb2.Empty(), empty_pb2.Empty)
        assert not serving.done()
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(serving, 10)
    finally:
        await _stop(serving, channel)


async def test_a_new_discovery_forgets_an_earlier_proxy_terminated(echo: Action) -> None:
    service = LarderService(
        [echo], settings=ServerSettings(host="127.0.0.1", port=0), shutdown_wait=60
    )
    serving, sidecar, channel = await _serving(service)
    try:
        await _discover(sidecar)
        await sidecar.unary(DISCOVERY + "ProxyTerminated", empty_pb2.Empty(), empty_pb2.Empty)
        await _discover(sidecar)  # the restarted sidecar
        assert not service.proxy_terminated
        os.kill(os.getpid(), signal.SIGTERM)
        await sidecar.unary(DISCOVERY + "HealthCheck", empty_pb2.Empty(), empty_pb2.Empty)
        assert not serving.done()  # waiting for the new sidecar to terminate
        await sidecar.unary(DISCOVERY + "ProxyTerminated", empty_pb2.Empty(), empty_pb2.Empty)
        await asyncio.wait_for(serving, 10)
    finally:
        await _stop(serving, channel)


async def test_sigterm_waits_for_the_sidecar_to_terminate(echo: Action) -> None:
    service = LarderService([echo], settings=ServerSettings(host="127.0.0.1", port=0))
    serving, sidecar, channel = await _serving(service)
    try:
        await _discover(sidecar)
        os.kill(os.getpid(), signal.SIGTERM)
        # Still serving: the sidecar may be draining its entities through us.
        for _ in range(3):
            await sidecar.unary(DISCOVERY + "HealthCheck", empty_pb2.Empty(), empty_pb2.Empty)
        assert not serving.done()
        await sidecar.unary(DISCOVERY + "ProxyTerminated", empty_pb2.Empty(), empty_pb2.Empty)
        await asyncio.wait_for(serving, 10)
    finally:
        await _stop(serving, channel)


async def test_sigterm_without_proxy_terminated_waits_a_bounded_time(echo: Action) -> None:
    service = LarderService(
        [echo], settings=ServerSettings(host="127.0.0.1", port=0), shutdown_wait=0.2
    )
    serving, sidecar, channel = await _serving(service)
    try:
        await _discover(sidecar)
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(serving, 10)
    finally:
        await _stop(serving, channel)
    assert not service.proxy_terminated


def test_settings_from_env() -> None:
    assert ServerSettings.from_env({}) == ServerSettings("0.0.0.0", 8080)
    assert ServerSettings.from_env({"HOST": "127.0.0.1", "PORT": "9"}) == ServerSettings(
        "127.0.0.1", 9
    )
    with pytest.raises(ValueError, match="PORT='http' is not a port number"):
        ServerSettings.from_env({"PORT": "http"})
