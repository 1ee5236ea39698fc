"""Metadata carried with commands, replies, forwards and side effects."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, overload

from larder_sdk import _protocol as proto

MetadataValue = str | bytes


@dataclass(frozen=True, slots=True)
class Metadata:
    """An ordered, immutable list of (key, value) entries; keys compare case-insensitively.

    Keys may repeat (as in HTTP and gRPC headers): `get` returns the first value,
    `get_all` every value.
    """

    entries: tuple[tuple[str, MetadataValue], ...] = ()

    @classmethod
    def of(
        cls, entries: Mapping[str, MetadataValue] | Iterable[tuple[str, MetadataValue]]
    ) -> Metadata:
        items = entries.items() if isinstance(entries, Mapping) else entries
        checked: list[tuple[str, MetadataValue]] = []
        for key, value in items:
            if not isinstance(key, str) or not isinstance(value, str | bytes):
                raise TypeError(
                    f"metadata entry {key!r}: {value!r} is not (str, str | bytes); "
                    "metadata values are strings or bytes"
                )
            checked.append((key, value))
        return cls(tuple(checked))

    @overload
    def get(self, key: str) -> MetadataValue | None: ...
    @overload
    def get(self, key: str, default: MetadataValue) -> MetadataValue: ...
    def get(self, key: str, default: MetadataValue | None = None) -> MetadataValue | None:
        wanted = key.lower()
        for k, v in self.entries:
            if k.lower() == wanted:
                return v
        return default

    def get_all(self, key: str) -> list[MetadataValue]:
        wanted = key.lower()
        return [v for k, v in self.entries if k.lower() == wanted]

    def with_entry(self, key: str, value: MetadataValue) -> Metadata:
        return Metadata.of((*self.entries, (key, value)))

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.get(key) is not None

    def __iter__(self) -> Iterator[tuple[str, MetadataValue]]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def __bool__(self) -> bool:
        return bool(self.entries)


EMPTY_METADATA = Metadata()


def from_protocol(message: Any) -> Metadata:
    """Read a protocol `Metadata` message (`akkaserverless.component.Metadata`)."""
    entries: list[tuple[str, MetadataValue]] = []
    for entry in message.entries:
        if entry.WhichOneof("value") == "bytes_value":
            entries.append((entry.key, bytes(entry.bytes_value)))
        else:
            entries.append((entry.key, str(entry.string_value)))
    return Metadata(tuple(entries))


def to_protocol(metadata: Metadata) -> Any:
    out = proto.component.Metadata()
    for key, value in metadata.entries:
        if isinstance(value, bytes):
            out.entries.add(key=key, bytes_value=value)
        else:
            out.entries.add(key=key, string_value=value)
    return out
