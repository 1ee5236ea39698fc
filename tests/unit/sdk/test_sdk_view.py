"""Views in the SDK: definition checks (every problem at once), update handlers through the
test kit, the Views/Handle protocol, and discovery, over the real gRPC server."""

from __future__ import annotations

import re
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, cast

import grpc
import pytest
from akkaserverless.component.view import view_pb2
from akkaserverless.protocol import discovery_pb2
from google.protobuf import any_pb2
from google.protobuf.message import Message
from larder_sdk import (
    DELETE_ROW,
    DefinitionError,
    DeleteRow,
    LarderService,
    ServerSettings,
    View,
    ViewContext,
)
from larder_sdk import _view as view_protocol
from larder_sdk.testkit import ViewTestKit, ViewUpdateResult
from larder_sdktest import customer_view_pb2 as pb  # type: ignore[import-not-found]

SERVICES = pb.DESCRIPTOR.services_by_name
EOF_: Any = cast(Any, grpc.aio).EOF


def make_customers_view() -> View:
    view = View(SERVICES["CustomersByName"], forward_headers=["x-tenant"])

    @view.update_handler
    def process_created(
        row: pb.CustomerRow | None, event: pb.CustomerCreated, ctx: ViewContext
    ) -> pb.CustomerRow:
        return pb.CustomerRow(customer_id=event.customer_id, name=event.name, city=event.city)

    @view.update_handler("ProcessRenamed")
    async def renamed(
        row: pb.CustomerRow | None, event: pb.CustomerRenamed, ctx: ViewContext
    ) -> pb.CustomerRow | None:
        if row is None:
            return None  # a rename of a customer this view never saw: nothing to change
        if event.new_name == "raise":
            raise ValueError("names may not be 'raise'")
        if event.new_name == "wrong type":
            return pb.ByName(name="not a row")
        if event.new_name == "context":
            subject = ctx.event_subject or "?"
            tenant = ctx.metadata.get("x-tenant", "?")
            assert isinstance(tenant, str)
            return pb.CustomerRow(
                name=f"{ctx.service_name}/{ctx.command_name}/{ctx.table}/{subject}/{tenant}"
            )
        row.name = event.new_name
        row.renames += 1
        return row

    @view.update_handler
    def process_removed(
        row: pb.CustomerRow | None, event: pb.CustomerRemoved, ctx: ViewContext
    ) -> DeleteRow:
        return DELETE_ROW

    return view


@pytest.fixture
def customers() -> View:
    return make_customers_view()


def test_the_view_reads_its_methods(customers: View) -> None:
    assert sorted(customers.updates) == ["ProcessCreated", "ProcessRemoved", "ProcessRenamed"]
    assert {u.table for u in customers.updates.values()} == {"customers"}
    assert all(u.transform for u in customers.updates.values())
    assert customers.queries == {"GetCustomers": "SELECT * FROM customers WHERE name = :name"}
    assert customers.tables == {"customers": pb.CustomerRow.DESCRIPTOR}
    rows = View("larder.sdktest.RowsByCity")
    assert rows.queries == {"GetRows": "SELECT * AS results FROM rows WHERE city = :name"}
    assert not rows.updates["UpdateRow"].transform
    rows.validate()  # nothing to handle: the sidecar stores the rows itself


def test_update_handlers_keep_a_table_through_the_test_kit(customers: View) -> None:
    kit = ViewTestKit(customers)
    created = kit.update(
        "ProcessCreated", pb.CustomerCreated(customer_id="c1", name="Ann", city="Oslo"), key="c1"
    )
    assert created == ViewUpdateResult(
        action="upsert", row=pb.CustomerRow(customer_id="c1", name="Ann", city="Oslo"), key="c1"
    )
    kit.update("ProcessCreated", pb.CustomerCreated(customer_id="c2", name="Bob"), key="c2")
    # The handler receives the stored row: renames count up.
    kit.update("ProcessRenamed", pb.CustomerRenamed(new_name="Anna"), key="c1")
    renamed = kit.update("ProcessRenamed", pb.CustomerRenamed(new_name="Annie"), key="c1")
    assert renamed.row == pb.CustomerRow(customer_id="c1", name="Annie", city="Oslo", renames=2)
    assert kit.row("customers", "c1") == renamed.row
    # None: the table is left as it is.
    ignored = kit.update("ProcessRenamed", pb.CustomerRenamed(new_name="Zed"), key="unknown")
    assert ignored == ViewUpdateResult(action="ignore")
    assert kit.row("customers", "unknown") is None
    # DELETE_ROW: the row goes.
    assert kit.update("ProcessRemoved", pb.CustomerRemoved(), key="c1") == ViewUpdateResult(
        action="delete", key="c1"
    )
    assert kit.rows("customers") == {"c2": pb.CustomerRow(customer_id="c2", name="Bob")}


def make_keyed_view(row_key: object) -> View:
    """A view whose handlers key the rows themselves: one row per customer and city."""
    view = View(SERVICES["CustomersByName"])

    @view.update_handler
    def process_created(
        row: pb.CustomerRow | None, event: pb.CustomerCreated, ctx: ViewContext
    ) -> pb.CustomerRow:
        # A wrong type on purpose too: what a handler without type checks could set.
        chosen: Any = row_key if row_key is not None else f"{event.customer_id}@{event.city}"
        ctx.row_key = chosen
        return pb.CustomerRow(customer_id=event.customer_id, name=event.name, city=event.city)

    @view.update_handler
    def process_renamed(
        row: pb.CustomerRow | None, event: pb.CustomerRenamed, ctx: ViewContext
    ) -> pb.CustomerRow | None:
        return None

    @view.update_handler
    def process_removed(
        row: pb.CustomerRow | None, event: pb.CustomerRemoved, ctx: ViewContext
    ) -> DeleteRow:
        ctx.row_key = f"{ctx.event_subject}@Oslo"
        return DELETE_ROW

    return view


def test_a_handler_can_key_its_rows_itself() -> None:
    kit = ViewTestKit(make_keyed_view(None))
    for city in ("Oslo", "Rome"):
        created = kit.update(
            "ProcessCreated", pb.CustomerCreated(customer_id="c1", name="Ann", city=city), key="c1"
        )
        assert created.key == f"c1@{city}"
    assert sorted(kit.rows("customers")) == ["c1@Oslo", "c1@Rome"]
    assert kit.update("ProcessRemoved", pb.CustomerRemoved(), key="c1") == ViewUpdateResult(
        action="delete", key="c1@Oslo"
    )
    assert kit.rows("customers") == {
        "c1@Rome": pb.CustomerRow(customer_id="c1", name="Ann", city="Rome")
    }


async def test_the_handlers_row_key_goes_on_the_wire() -> None:
    view = make_keyed_view(None)
    receive = view_pb2.ReceiveEvent(
        service_name=view.service_name,
        command_name="ProcessCreated",
        initial_table="customers",
        key=view_pb2.Key(parts=[view_pb2.KeyPart(string_part="c1")]),
    )
    receive.payload.Pack(pb.CustomerCreated(customer_id="c1", city="Oslo"))
    out = await view_protocol.handle_receive(receive, {view.service_name: view})
    assert list(out.upsert.row.key.parts) == [view_pb2.KeyPart(string_part="c1@Oslo")]


@pytest.mark.parametrize("bad", ["", 7])
def test_a_row_key_that_is_not_a_non_empty_str_fails_the_update(bad: object) -> None:
    kit = ViewTestKit(make_keyed_view(bad))
    result = kit.update("ProcessCreated", pb.CustomerCreated(customer_id="c1"), key="c1")
    assert result.status == "UNKNOWN"
    assert result.failure is not None
    assert f"set context.row_key to {bad!r}; a row key is a non-empty str" in result.failure
    assert kit.rows("customers") == {}


def test_the_handler_context(customers: View) -> None:
    kit = ViewTestKit(customers)
    kit.update("ProcessCreated", pb.CustomerCreated(customer_id="c1"), key="c1")
    result = kit.update(
        "ProcessRenamed",
        pb.CustomerRenamed(new_name="context"),
        key="c1",
        metadata={"x-tenant": "t9"},
    )
    assert result.row is not None
    assert result.row.name == "larder.sdktest.CustomersByName/ProcessRenamed/customers/c1/t9"  # type: ignore[attr-defined]


def test_a_failing_handler_fails_the_update_and_leaves_the_table(customers: View) -> None:
    kit = ViewTestKit(customers)
    kit.update("ProcessCreated", pb.CustomerCreated(customer_id="c1", name="Ann"), key="c1")
    raised = kit.update("ProcessRenamed", pb.CustomerRenamed(new_name="raise"), key="c1")
    assert raised.failed and raised.status == "UNKNOWN"
    assert raised.failure == (
        "view larder.sdktest.CustomersByName: update 'ProcessRenamed' failed: "
        "ValueError: names may not be 'raise'"
    )
    wrong = kit.update("ProcessRenamed", pb.CustomerRenamed(new_name="wrong type"), key="c1")
    assert wrong.status == "UNKNOWN"
    assert wrong.failure is not None and wrong.failure.endswith(
        "returned ByName; it returns a larder.sdktest.CustomerRow, None or DELETE_ROW"
    )
    assert kit.row("customers", "c1") == pb.CustomerRow(customer_id="c1", name="Ann")


def test_the_kit_stores_untransformed_input_as_the_row() -> None:
    kit = ViewTestKit(View("larder.sdktest.RowsByCity"))
    row = pb.CustomerRow(customer_id="c1", city="Oslo")
    assert kit.update("UpdateRow", row, key="c1") == ViewUpdateResult(
        action="upsert", row=row, key="c1"
    )
    assert kit.rows("rows") == {"c1": row}
    with pytest.raises(
        TypeError, match=r"stores its input as the row, a larder\.sdktest\.CustomerRow"
    ):
        kit.update("UpdateRow", pb.ByName(), key="c1")
    with pytest.raises(LookupError, match="has no update method 'GetRows'"):
        kit.update("GetRows", pb.ByName())
    with pytest.raises(LookupError, match="has no table 'customers'; it has: rows"):
        kit.rows("customers")


def test_every_problem_of_a_view_service_at_once() -> None:
    with pytest.raises(DefinitionError) as caught:
        View(SERVICES["BadView"])
    assert caught.value.problems == (
        "method 'Plain' is neither a view update nor a view query; give it option "
        "(akkaserverless.method).view.update or .view.query",
        "update method 'Streamed' is streamed; update methods take one message and return one row",
        "table 't' has rows of larder.sdktest.CustomerRow ('Streamed') and of "
        "larder.sdktest.ByName ('OtherRow'); every method writing a table returns its row type",
        "update method 'NoTable' names no table",
    )


def test_every_problem_of_a_handler_at_once() -> None:
    view = View(SERVICES["CustomersByName"])
    with pytest.raises(DefinitionError) as caught:

        @view.update_handler
        def process_created(row: pb.ByName | None, event: pb.CustomerRenamed) -> pb.ByName:
            return pb.ByName()

    assert caught.value.problems == (
        "test_every_problem_of_a_handler_at_once.<locals>.process_created must take 3 "
        "positional parameters (row, event, context), but its signature is "
        "(row: 'pb.ByName | None', event: 'pb.CustomerRenamed') -> 'pb.ByName'",
        "test_every_problem_of_a_handler_at_once.<locals>.process_created: its event "
        "parameter is annotated larder.sdktest.CustomerRenamed, but the method takes "
        "larder.sdktest.CustomerCreated",
        "test_every_problem_of_a_handler_at_once.<locals>.process_created: its row parameter "
        "annotation names larder.sdktest.ByName, but the table's rows are "
        "larder.sdktest.CustomerRow",
        "test_every_problem_of_a_handler_at_once.<locals>.process_created: its return "
        "annotation names larder.sdktest.ByName, but the table's rows are "
        "larder.sdktest.CustomerRow",
    )


def test_queries_and_untransformed_updates_take_no_handler() -> None:
    view = View(SERVICES["CustomersByName"])
    with pytest.raises(DefinitionError, match="'GetCustomers' is a query; the sidecar answers it"):

        @view.update_handler
        def get_customers(row: Any, event: Any, ctx: ViewContext) -> Any: ...

    rows = View("larder.sdktest.RowsByCity")
    with pytest.raises(DefinitionError, match="'UpdateRow' does not set transform_updates"):

        @rows.update_handler
        def update_row(row: Any, event: Any, ctx: ViewContext) -> Any: ...

    with pytest.raises(
        DefinitionError, match="has no such method \\(did you mean 'ProcessRenamed'"
    ):

        @view.update_handler
        def process_renamd(row: Any, event: Any, ctx: ViewContext) -> Any: ...

    with pytest.raises(DefinitionError, match="is a generator, but an update returns one row"):

        @view.update_handler
        def process_created(row: Any, event: Any, ctx: ViewContext) -> Iterator[Any]:
            yield None


def test_missing_update_handlers_are_reported_by_the_service() -> None:
    view = View(SERVICES["CustomersByName"])

    @view.update_handler
    def process_created(row: Any, event: Any, ctx: ViewContext) -> Any: ...

    with pytest.raises(DefinitionError) as caught:
        LarderService([view])
    assert caught.value.problems == (
        "view larder.sdktest.CustomersByName: no update handler for 'ProcessRenamed', "
        "'ProcessRemoved' of larder.sdktest.CustomersByName (transform_updates is set)",
    )


def _receive(
    command: str,
    payload: Message,
    *,
    service: str = "larder.sdktest.CustomersByName",
    row: Message | None = None,
) -> Any:
    key = view_pb2.Key(parts=[view_pb2.KeyPart(string_part="c1")])
    receive = view_pb2.ReceiveEvent(
        service_name=service,
        command_name=command,
        payload=_pack(payload),
        initial_table="customers",
        key=key,
    )
    if row is not None:
        receive.by_subject_lookup_result.value.CopyFrom(_pack(row))
    return receive


def _pack(message: Message) -> any_pb2.Any:
    return any_pb2.Any(
        type_url="type.googleapis.com/" + message.DESCRIPTOR.full_name,
        value=message.SerializeToString(),
    )


BAD_INPUT = [
    (
        _receive("ProcessCreated", pb.CustomerCreated(), service="larder.sdktest.Nope"),
        "no view serves 'larder.sdktest.Nope'; this user function has: "
        "larder.sdktest.CustomersByName",
    ),
    (
        _receive("GetCustomers", pb.ByName()),
        "view larder.sdktest.CustomersByName: 'GetCustomers' is not an update method; "
        "it has: ProcessCreated, ProcessRemoved, ProcessRenamed",
    ),
    (
        _receive("ProcessCreated", pb.ByName()),
        "view larder.sdktest.CustomersByName: update 'ProcessCreated': the message is a "
        "larder.sdktest.ByName, not a larder.sdktest.CustomerCreated",
    ),
    (
        _receive("ProcessRenamed", pb.CustomerRenamed(), row=pb.ByName()),
        "view larder.sdktest.CustomersByName: update 'ProcessRenamed': the stored row is a "
        "larder.sdktest.ByName, not a larder.sdktest.CustomerRow",
    ),
]


@pytest.mark.parametrize(("receive", "description"), BAD_INPUT)
async def test_bad_input_is_an_invalid_argument(
    customers: View, receive: Any, description: str
) -> None:
    with pytest.raises(view_protocol.ViewStreamFailure) as caught:
        await view_protocol.handle_receive(receive, {customers.service_name: customers})
    assert (caught.value.code, caught.value.description) == ("INVALID_ARGUMENT", description)


async def test_an_undecodable_payload_is_an_invalid_argument(customers: View) -> None:
    receive = _receive("ProcessCreated", pb.CustomerCreated())
    receive.payload.value = b"\xff\xff\xff"
    with pytest.raises(
        view_protocol.ViewStreamFailure, match=r"is not a valid larder\.sdktest\.CustomerCreated"
    ):
        await view_protocol.handle_receive(receive, {customers.service_name: customers})


# -- over gRPC, the test playing the sidecar ----------------------------------------------


@pytest.fixture
async def channel(customers: View) -> AsyncIterator[Any]:
    service = LarderService(
        [customers, View("larder.sdktest.RowsByCity")],
        settings=ServerSettings(host="127.0.0.1", port=0),
    )
    port = await service.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield channel
    await service.stop(0)


async def test_discovery_announces_views_as_the_published_sdks_do(channel: Any) -> None:
    discover = channel.unary_unary(
        "/akkaserverless.protocol.Discovery/Discover",
        request_serializer=discovery_pb2.ProxyInfo.SerializeToString,
        response_deserializer=discovery_pb2.Spec.FromString,
    )
    spec = await discover(
        discovery_pb2.ProxyInfo(protocol_major_version=0, protocol_minor_version=7)
    )
    assert [
        (c.component_type, c.service_name, c.WhichOneof("component_settings"))
        for c in spec.components
    ] == [
        ("akkaserverless.component.view.Views", "larder.sdktest.CustomersByName", "component"),
        ("akkaserverless.component.view.Views", "larder.sdktest.RowsByCity", "component"),
    ]
    assert list(spec.components[0].component.forward_headers) == ["x-tenant"]


def _handle(channel: Any) -> Any:
    return channel.stream_stream(
        "/akkaserverless.component.view.Views/Handle",
        request_serializer=view_pb2.ViewStreamIn.SerializeToString,
        response_deserializer=view_pb2.ViewStreamOut.FromString,
    )(timeout=10)


async def test_handle_answers_each_message_with_an_upsert(channel: Any) -> None:
    call = _handle(channel)
    await call.write(
        view_pb2.ViewStreamIn(
            receive=_receive("ProcessCreated", pb.CustomerCreated(customer_id="c1", name="Ann"))
        )
    )
    created = await call.read()
    assert created.upsert.row.index == "customers"
    assert [p.string_part for p in created.upsert.row.key.parts] == ["c1"]
    assert pb.CustomerRow.FromString(created.upsert.row.value.value) == pb.CustomerRow(
        customer_id="c1", name="Ann"
    )
    stored = pb.CustomerRow(customer_id="c1", name="Ann")
    await call.write(
        view_pb2.ViewStreamIn(
            receive=_receive("ProcessRenamed", pb.CustomerRenamed(new_name="Bo"), row=stored)
        )
    )
    renamed = await call.read()
    assert pb.CustomerRow.FromString(renamed.upsert.row.value.value) == pb.CustomerRow(
        customer_id="c1", name="Bo", renames=1
    )
    await call.write(
        view_pb2.ViewStreamIn(receive=_receive("ProcessRenamed", pb.CustomerRenamed(new_name="Bo")))
    )
    ignored = await call.read()
    assert ignored.HasField("upsert") and not ignored.upsert.HasField("row")
    await call.write(
        view_pb2.ViewStreamIn(receive=_receive("ProcessRemoved", pb.CustomerRemoved(), row=stored))
    )
    deleted = await call.read()
    assert deleted.upsert.HasField("row") and not deleted.upsert.row.HasField("value")
    assert [p.string_part for p in deleted.upsert.row.key.parts] == ["c1"]
    await call.done_writing()
    assert await call.read() is EOF_
    assert await call.code() == grpc.StatusCode.OK


async def test_an_update_that_cannot_be_answered_ends_the_call_with_its_status(
    channel: Any,
) -> None:
    call = _handle(channel)
    await call.write(view_pb2.ViewStreamIn(receive=_receive("ProcessCreated", pb.ByName())))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call.read()
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "the message is a larder.sdktest.ByName" in (caught.value.details() or "")
    failing = _handle(channel)
    stored = pb.CustomerRow(customer_id="c1")
    await failing.write(
        view_pb2.ViewStreamIn(
            receive=_receive("ProcessRenamed", pb.CustomerRenamed(new_name="raise"), row=stored)
        )
    )
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await failing.read()
    assert raised.value.code() == grpc.StatusCode.UNKNOWN
    assert raised.value.details() == (
        "view larder.sdktest.CustomersByName: update 'ProcessRenamed' failed: "
        "ValueError: names may not be 'raise'"
    )
    empty = _handle(channel)
    await empty.write(view_pb2.ViewStreamIn())
    with pytest.raises(grpc.aio.AioRpcError, match="a ViewStreamIn without a ReceiveEvent"):
        await empty.read()


def test_the_documented_view_is_real(monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/sdk-python.md's view example runs against this file's protos."""
    doc = (Path(__file__).resolve().parents[3] / "docs" / "sdk-python.md").read_text()
    section = doc.split("\n## Views\n", 1)[1].split("\n## ", 1)[0]
    (code,) = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)
    monkeypatch.setitem(sys.modules, "customer_view_pb2", pb)
    namespace: dict[str, Any] = {}
    exec(compile(code, "docs/sdk-python.md", "exec"), namespace)
    kit = ViewTestKit(namespace["customers_by_name"])
    kit.update("ProcessCreated", pb.CustomerCreated(customer_id="c1", name="Ann"), key="c1")
    assert kit.update("ProcessRenamed", pb.CustomerRenamed(new_name="Bo"), key="c1").row == (
        pb.CustomerRow(customer_id="c1", name="Bo", renames=1)
    )
    assert kit.update("ProcessRenamed", pb.CustomerRenamed(new_name="X"), key="c2").action == (
        "ignore"
    )
    assert kit.update("ProcessRemoved", pb.CustomerRemoved(), key="c1").action == "delete"
    assert kit.rows("customers") == {}
