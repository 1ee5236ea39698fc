"""The user function's `Views/Handle`: one `ReceiveEvent` per change of a transformed update,
answered by one `ViewStreamOut` (docs/views.md, "The update protocol")."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import grpc.aio

from ..protocol import component_pb2, view_pb2, view_pb2_grpc
from .spec import TYPE_URL_PREFIX, ViewUpdate

HANDLE_TIMEOUT_S = 30.0


class HandleFailed(Exception):
    """The user function did not answer an update; the change is retried."""


@dataclass(frozen=True, slots=True)
class Answer:
    """What the update handler decided: `row` set stores it under `key`; `delete` removes
    the row of `key`; neither leaves the table as it is."""

    key: str
    row: Any | None = None
    """A `google.protobuf.Any`."""
    delete: bool = False


def key_text(key: Any) -> str:
    """A protocol `Key` as the row key the store uses (parts joined by ',')."""
    parts: list[str] = []
    for part in key.parts:
        which = part.WhichOneof("part")
        value = getattr(part, which) if which else ""
        parts.append(value.hex() if isinstance(value, bytes) else str(value))
    return ",".join(parts)


def receive_event(
    update: ViewUpdate,
    entity_id: str,
    type_url: str,
    payload: bytes,
    previous: bytes | None,
    *,
    metadata: Sequence[tuple[str, str]] = (),
) -> Any:
    """`metadata`: a topic record's headers (its `ce-subject` is `entity_id`); entity
    sources get `ce-subject` and `ce-type` only."""
    key = view_pb2.Key(parts=[view_pb2.KeyPart(string_part=entity_id)])
    entries = [component_pb2.MetadataEntry(key=k, string_value=v) for k, v in metadata]
    if not metadata:
        entries = [
            component_pb2.MetadataEntry(key="ce-subject", string_value=entity_id),
            component_pb2.MetadataEntry(key="ce-type", string_value=type_url.rpartition("/")[2]),
        ]
    event = view_pb2.ReceiveEvent(
        service_name=update.service,
        command_name=update.name,
        metadata=component_pb2.Metadata(entries=entries),
        initial_table=update.table,
        key=key,
    )
    # Only when a row is stored: the npm SDK 0.32.0 decodes the lookup's value whenever
    # the lookup is present, and fails the update on a lookup without one.
    if previous is not None:
        lookup = event.by_subject_lookup_result
        lookup.index = update.table
        lookup.key.CopyFrom(key)
        lookup.value.type_url = TYPE_URL_PREFIX + update.output.full_name
        lookup.value.value = previous
    event.payload.type_url = type_url
    event.payload.value = payload
    return event


class HandleClient:
    """Calls `Views/Handle` once per change: a call carries one `ReceiveEvent`."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = view_pb2_grpc.ViewsStub(channel)

    async def receive(self, event: Any, entity_id: str) -> Answer:
        def requests() -> Iterator[Any]:
            yield view_pb2.ViewStreamIn(receive=event)

        where = f"{event.service_name}.{event.command_name} for {entity_id!r}"
        call = self._stub.Handle(requests(), timeout=HANDLE_TIMEOUT_S)
        try:
            async for out in call:
                return _answer(out, entity_id)
        except grpc.aio.AioRpcError as e:
            raise HandleFailed(
                f"the user function failed the view update {where}: {e.code().name} "
                f"{e.details()}"
            ) from e
        finally:
            call.cancel()
        raise HandleFailed(
            f"the user function ended the view update call {where} without an answer"
        )


def _answer(out: Any, entity_id: str) -> Answer:
    if out.WhichOneof("message") != "upsert" or not out.upsert.HasField("row"):
        return Answer(entity_id)  # "ignore": leave the table as it is
    row = out.upsert.row
    key = (key_text(row.key) if row.HasField("key") else "") or entity_id
    if not row.HasField("value"):
        return Answer(key, delete=True)  # Larder's convention: a row without value deletes
    return Answer(key, row=row.value)
