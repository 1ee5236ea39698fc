"""What a component answered to one command, independent of the component type."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from .invoke import MetadataPairs

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
