"""What a component answered to one command, independent of the component type, and
the protocol's `Metadata` in both directions."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from .invoke import MetadataPairs
from .protocol import component_pb2

ActionKind = Literal["reply", "forward", "failure"]


@dataclass(frozen=True, slots=True)
class Outcome:
    kind: ActionKind | None
    """None: the component answered without a client action (no reply)."""
    message: Any
    """A protocol `Reply`, `Forward` or `Failure`, by `kind`."""
    side_effects: Sequence[Any] = ()
    """Protocol `SideEffect`s."""


def metadata_pairs(metadata: Any) -> MetadataPairs:
    """String entries of a protocol `Metadata` (bytes entries become gRPC `-bin` headers)."""
    return [
        (entry.key, entry.string_value)
        for entry in metadata.entries
        if entry.WhichOneof("value") == "string_value"
    ]


def protocol_metadata(pairs: MetadataPairs) -> Any:
    """A protocol `Metadata` with `pairs` as string entries."""
    return component_pb2.Metadata(
        entries=[component_pb2.MetadataEntry(key=k, string_value=v) for k, v in pairs]
    )
