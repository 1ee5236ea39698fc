"""The views tests' user function, on our SDK: the shop of
`tests/unit/sidecar/views/view_protos/larder/viewshop/shop.proto` (items are value
entities, accounts event-sourced; a view of the items as they are, a view of the accounts'
balances through an update handler), and a function whose view query is refused."""

from __future__ import annotations

import asyncio
import importlib
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from google.protobuf.empty_pb2 import Empty
from larder_protocol import compile_protos
from larder_sdk import (
    EventSourcedContext,
    EventSourcedEntity,
    LarderService,
    ServerSettings,
    ValueEntity,
    ValueEntityContext,
    View,
    ViewContext,
)

SHOP_PROTOS = Path(__file__).parents[2] / "unit" / "sidecar" / "views" / "view_protos"
BAD_PROTOS = Path(__file__).parent / "protos"


def _compile(protos: Path, relative: str, module: str, out: Path) -> ModuleType:
    compile_protos([protos / relative], out, include=[protos])
    if str(out) not in sys.path:
        sys.path.insert(0, str(out))
    return importlib.import_module(module)


def compile_shop(out: Path) -> ModuleType:
    return _compile(SHOP_PROTOS, "larder/viewshop/shop.proto", "larder.viewshop.shop_pb2", out)


def compile_bad(out: Path) -> ModuleType:
    return _compile(BAD_PROTOS, "larder/viewbad/bad.proto", "larder.viewbad.bad_pb2", out)


class Gate:
    """Holds the balances' update handler while closed: a view update in flight that a
    test can kill the sidecar under. `entered` is set when the handler is waiting."""

    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.open.set()
        self.entered = asyncio.Event()


def shop_service(pb: ModuleType, gate: Gate | None = None) -> LarderService:
    gate = gate or Gate()
    services = pb.DESCRIPTOR.services_by_name
    items: ValueEntity[Any] = ValueEntity(
        services["Items"], entity_type="items", state_type=pb.Item
    )

    @items.command_handler("Put")
    def put(state: Any, command: Any, context: ValueEntityContext[Any]) -> Any:
        context.update_state(command)
        return Empty()

    @items.command_handler("Remove")
    def remove(state: Any, command: Any, context: ValueEntityContext[Any]) -> Any:
        context.delete_state()
        return Empty()

    accounts: EventSourcedEntity[Any] = EventSourcedEntity(
        services["Accounts"], entity_type="accounts", state_type=pb.Account,
        events=[pb.Deposited],
    )

    @accounts.command_handler("Add")
    def add(state: Any, command: Any, context: EventSourcedContext) -> Any:
        context.emit(pb.Deposited(amount=command.amount))
        return Empty()

    @accounts.event_handler(pb.Deposited)  # type: ignore[untyped-decorator]  # a dynamic type
    def deposited(state: Any, event: Any) -> Any:
        state.balance += event.amount
        return state

    items_view = View(services["ItemsView"])
    balances = View(services["BalancesView"])

    @balances.update_handler("OnDeposited")
    async def on_deposited(row: Any, event: Any, context: ViewContext) -> Any:
        gate.entered.set()
        await gate.open.wait()
        total = pb.Balance(account_id=context.event_subject or "", total=event.amount,
                           deposits=1)
        if row is not None:
            total.total += row.total
            total.deposits += row.deposits
        return total

    return LarderService([items, accounts, items_view, balances], service_name="view-shop",
                         settings=ServerSettings("127.0.0.1", 0))


def bad_service(pb: ModuleType) -> LarderService:
    services = pb.DESCRIPTOR.services_by_name
    things: ValueEntity[Any] = ValueEntity(
        services["Things"], entity_type="things", state_type=pb.Thing
    )

    @things.command_handler("Put")
    def put(state: Any, command: Any, context: ValueEntityContext[Any]) -> Any:
        context.update_state(command)
        return Empty()

    return LarderService([things, View(services["ThingsView"])], service_name="view-bad",
                         settings=ServerSettings("127.0.0.1", 0))
