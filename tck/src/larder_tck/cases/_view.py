"""What the view cases share: the view model's messages and the update protocol's messages.

The TCK's view (`larder/tck/model/view.proto`) has three tables: `ve_rows` (the value entity
model's state, transformed by `UpdateFromState`), `ve_states` (that state stored as it is,
`StoreState`) and `es_rows` (the event-sourced model's events, transformed by
`UpdateFromEvent`).
"""

from __future__ import annotations

from typing import Any

from larder_tck import protocol as p
from larder_tck.model import ES_PKG, VE_PKG, VIEW_MODEL, VIEW_PKG, Model, pack

FROM_STATE = "UpdateFromState"
STORE_STATE = "StoreState"
FROM_EVENT = "UpdateFromEvent"
VE_ROWS = "ve_rows"
VE_STATES = "ve_states"
ES_ROWS = "es_rows"

IGNORE = "ignore:"
"""A value with this prefix makes the update handler leave the table as it is."""
FAIL = "fail:"
"""A value with this prefix makes the update handler fail."""

UPSERT_HINT = (
    "an update handler's row goes back as Upsert{row{index: the ReceiveEvent's "
    "initial_table, key: its key, value: the row}}; the model's row is "
    "ViewRow{value, previous: the previous row's value, updates: the previous row's updates "
    "+ 1} (view.proto)"
)
IGNORE_HINT = (
    "an update handler that leaves the table as it is answers an Upsert without a row "
    "(ViewStreamOut{upsert{}}), the protocol's 'ignore'"
)


class ViewModel:
    """The view model's message classes and the protocol messages the cases build."""

    def __init__(self, model: Model) -> None:
        self.Row = model.message(f"{VIEW_PKG}.ViewRow")
        self.ByValue = model.message(f"{VIEW_PKG}.ByValue")
        self.State = model.message(f"{VE_PKG}.Persisted")
        self.Event = model.message(f"{ES_PKG}.Persisted")

    def row(self, value: str, previous: str = "", updates: int = 1) -> Any:
        return self.Row(value=value, previous=previous, updates=updates)

    @staticmethod
    def key(entity_id: str) -> Any:
        return p.view.Key(parts=[p.view.KeyPart(string_part=entity_id)])

    def receive(
        self,
        method: str,
        table: str,
        payload: Any,
        entity_id: str,
        previous: Any | None = None,
        *,
        metadata: bool = True,
    ) -> Any:
        """The ReceiveEvent the sidecar sends for one change of `entity_id` (docs/views.md)."""
        event = p.view.ReceiveEvent(
            service_name=VIEW_MODEL,
            command_name=method,
            payload=pack(payload),
            initial_table=table,
            key=self.key(entity_id),
        )
        if metadata:
            event.metadata.entries.add(key="ce-subject", string_value=entity_id)
            event.metadata.entries.add(key="ce-type", string_value=payload.DESCRIPTOR.full_name)
        if previous is not None:
            lookup = event.by_subject_lookup_result
            lookup.index = table
            lookup.key.CopyFrom(self.key(entity_id))
            lookup.value.CopyFrom(pack(previous))
        return event

    def upserted(self, table: str, entity_id: str, row: Any) -> Any:
        out = p.view.ViewStreamOut()
        out.upsert.row.index = table
        out.upsert.row.key.CopyFrom(self.key(entity_id))
        out.upsert.row.value.CopyFrom(pack(row))
        return out

    @staticmethod
    def ignored() -> Any:
        out = p.view.ViewStreamOut()
        out.upsert.SetInParent()
        return out
