"""What a component answered to one command, independent of the component type, and
the protocol's `Metadata` in both directions."""

from __future__ import annotations

import base64
import binascii
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
    """The entries of a protocol `Metadata` as header pairs: strings as they are, bytes
    under a `-bin` key as its base64 text (gRPC's wire form of binary metadata); other
    bytes entries have no header form and are left out."""
    pairs = []
    for entry in metadata.entries:
        kind = entry.WhichOneof("value")
        if kind == "string_value":
            pairs.append((entry.key, entry.string_value))
        elif kind == "bytes_value" and entry.key.endswith("-bin"):
            pairs.append((entry.key, base64.b64encode(entry.bytes_value).decode("ascii")))
    return pairs


def protocol_metadata(pairs: MetadataPairs) -> Any:
    """A protocol `Metadata` from header pairs: a `-bin` header's base64 text becomes a
    bytes entry (as a gRPC server hands binary metadata to its handler); everything else,
    and a `-bin` value that is not base64, a string entry."""
    metadata = component_pb2.Metadata()
    # Each entry made in place: entries built apart and passed to `Metadata(entries=...)`
    # are each made and then copied, twice the cost (every command's metadata passes here).
    add = metadata.entries.add
    for key, value in pairs:
        if key.endswith("-bin"):
            try:
                raw = base64.b64decode(value + "=" * (-len(value) % 4), validate=True)
            except (binascii.Error, ValueError):
                pass
            else:
                add(key=key, bytes_value=raw)
                continue
        add(key=key, string_value=value)
    return metadata
