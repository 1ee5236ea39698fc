"""A shopping-cart journal in a real SQLite file, and the cart's real descriptors."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.message import Message
from larder_protocol import compile_protos, message_class
from larder_sidecar.inspector import run
from larder_sidecar.journal.base import StoredPayload, persistence_id
from larder_sidecar.journal.sqlite import SqliteJournal

REPO = Path(__file__).resolve().parents[4]
CART_PROTOS = REPO / "samples" / "shopping-cart" / "proto"
DOMAIN = "com.example.shoppingcart.domain"
CART_TYPE = "com.example.shoppingcart.ShoppingCart"
PROFILE_TYPE = "com.example.Profile"
PREFIX = "type.googleapis.com/"


@dataclass(frozen=True)
class Inspected:
    code: int
    out: str
    err: str

    def records(self) -> list[Any]:
        return [json.loads(line) for line in self.out.splitlines()]


def inspect(*argv: str, env: dict[str, str] | None = None) -> Inspected:
    out, err = io.StringIO(), io.StringIO()
    code = run(list(argv), out, err, env or {})
    return Inspected(code, out.getvalue(), err.getvalue())


@pytest.fixture(scope="session")
def cart_descriptors(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cart-descriptors")
    target = out / "cart.pb"
    compile_protos(
        sorted(CART_PROTOS.rglob("*.proto")), out, include=[CART_PROTOS],
        descriptor_set_out=target, python=False,
    )
    return target


class Cart:
    """Messages of the cart sample, made from its descriptors (as a user function would)."""

    def __init__(self, descriptors: Path) -> None:
        file_set = descriptor_pb2.FileDescriptorSet.FromString(descriptors.read_bytes())
        self.pool = descriptor_pool.DescriptorPool()
        for f in file_set.file:  # protoc writes imports first
            self.pool.Add(f)

    def message(self, type_name: str, /, **fields: Any) -> Message:
        return message_class(self.pool.FindMessageTypeByName(f"{DOMAIN}.{type_name}"))(**fields)

    def payload(self, type_name: str, /, **fields: Any) -> StoredPayload:
        message = self.message(type_name, **fields)
        return StoredPayload(PREFIX + message.DESCRIPTOR.full_name, message.SerializeToString())

    def item_added(self, n: int) -> StoredPayload:
        item = self.message("LineItem", product_id=f"p{n}", name=f"item {n}", quantity=n)
        return self.payload("ItemAdded", item=item)


async def write(path: Path, appends: Sequence[tuple[str, str, Sequence[StoredPayload],
                                                      StoredPayload | None]],
                values: Sequence[tuple[str, str, StoredPayload | None]] = ()) -> None:
    journal = SqliteJournal(path)
    await journal.start()
    try:
        last: dict[str, int] = {}
        for entity_type, entity_id, events, snapshot in appends:
            pid = persistence_id(entity_type, entity_id)
            last[pid] = await journal.append(pid, last.get(pid, 0), events, snapshot)
        revision: dict[str, int] = {}
        for entity_type, entity_id, payload in values:
            pid = persistence_id(entity_type, entity_id)
            revision[pid] = await journal.put_value(pid, revision.get(pid, 0), payload)
    finally:
        await journal.close()


@pytest.fixture(scope="session")
def cart(cart_descriptors: Path) -> Cart:
    return Cart(cart_descriptors)


@pytest.fixture(scope="session")
def big_journal(tmp_path_factory: pytest.TempPathFactory, cart: Cart) -> Path:
    """`alice`: 10,000 events in appends of 100, a snapshot at 9,000; a few small carts;
    one value entity written twice and one deleted."""
    path = tmp_path_factory.mktemp("journal") / "journal.db"
    appends: list[tuple[str, str, Sequence[StoredPayload], StoredPayload | None]] = []
    for first in range(1, 10_001, 100):
        events = [cart.item_added(n) for n in range(first, first + 100)]
        snapshot = None
        if first + 99 == 9_000:
            items = [cart.message("LineItem", product_id="p", name="all", quantity=9_000)]
            snapshot = cart.payload("Cart", items=items)
        appends.append((CART_TYPE, "alice", events, snapshot))
    appends += [(CART_TYPE, entity_id, [cart.item_added(1)], None)
                for entity_id in ("bob", "carol|with a bar", "dave smith", "émile")]
    profile = StoredPayload(PREFIX + "google.protobuf.StringValue", b"\n\x03bob")
    values = [(PROFILE_TYPE, "bob", None), (PROFILE_TYPE, "bob", profile),
              (PROFILE_TYPE, "gone", profile), (PROFILE_TYPE, "gone", None)]
    asyncio.run(write(path, appends, values))
    return path
