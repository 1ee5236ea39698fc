"""Payloads as JSON, through the user function's descriptors; base64 where none fits."""

from __future__ import annotations

import base64
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Imported for their side effect: the well-known types join the default pool, so a
# payload of one of them decodes even without the function's descriptors.
from google.protobuf import (  # noqa: F401
    any_pb2,
    descriptor_pb2,
    descriptor_pool,
    duration_pb2,
    empty_pb2,
    json_format,
    struct_pb2,
    timestamp_pb2,
    wrappers_pb2,
)
from google.protobuf.message import DecodeError
from larder_protocol import message_class

from ..journal.base import StoredPayload


class DescriptorsError(ValueError):
    """The descriptors given cannot be read or compiled: fix the option."""


@dataclass(frozen=True, slots=True)
class Decoded:
    type_url: str
    decoded: bool
    json: Any
    """The payload in protobuf's JSON mapping, when decoded (an object, or a plain
    value for wrappers and other well-known types)."""
    base64: str | None
    """The raw payload when it was not decoded."""
    note: str | None
    """Why it was not decoded, when descriptors were given and did not fit."""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type_url": self.type_url}
        if self.decoded:
            out["payload"] = self.json
        else:
            out["payload_base64"] = self.base64
            if self.note is not None:
                out["undecoded"] = self.note
        return out


_File = descriptor_pb2.FileDescriptorProto


def _in_dependency_order(files: Sequence[_File]) -> Iterable[_File]:
    """Each file after the files it imports, as a descriptor pool needs them."""
    by_name = {f.name: f for f in files}
    done: set[str] = set()

    def visit(f: _File) -> Iterable[_File]:
        if f.name in done:
            return
        done.add(f.name)
        for dependency in f.dependency:
            if dependency in by_name:
                yield from visit(by_name[dependency])
        yield f

    for f in files:
        yield from visit(f)


_WELL_KNOWN = "google.protobuf."


class PayloadDecoder:
    """Decodes stored payloads with the message types of a FileDescriptorSet."""

    def __init__(self, file_set: descriptor_pb2.FileDescriptorSet | None = None) -> None:
        self._pool: descriptor_pool.DescriptorPool | None = None
        if file_set is None:
            return
        pool = descriptor_pool.DescriptorPool()
        for file_proto in _in_dependency_order(file_set.file):
            try:
                pool.Add(file_proto)
            except (TypeError, ValueError) as e:
                raise DescriptorsError(
                    f"descriptor file {file_proto.name} cannot be loaded: {e}; the set must "
                    "include its imports (protoc --include_imports)"
                ) from e
        self._pool = pool

    @classmethod
    def from_descriptor_set(cls, path: Path) -> PayloadDecoder:
        try:
            data = path.read_bytes()
        except OSError as e:
            raise DescriptorsError(f"cannot read the descriptors {path}: {e}") from e
        file_set = descriptor_pb2.FileDescriptorSet()
        try:
            file_set.ParseFromString(data)
        except DecodeError as e:
            raise DescriptorsError(
                f"{path} is not a serialized FileDescriptorSet ({e}); write one with "
                "`protoc --include_imports --descriptor_set_out=FILE ...`"
            ) from e
        if not file_set.file:
            raise DescriptorsError(
                f"{path} holds no file descriptors; write it with "
                "`protoc --include_imports --descriptor_set_out=FILE ...`"
            )
        return cls(file_set)

    @classmethod
    def from_proto_dir(cls, directory: Path) -> PayloadDecoder:
        # Imported here: compiling needs grpcio-tools, which only this option does.
        from larder_protocol import ProtocCompileError, compile_protos  # noqa: PLC0415

        if not directory.is_dir():
            raise DescriptorsError(f"--proto-dir {directory} is not a directory")
        sources = sorted(directory.rglob("*.proto"))
        if not sources:
            raise DescriptorsError(f"--proto-dir {directory} holds no .proto files")
        with tempfile.TemporaryDirectory(prefix="larder-inspect-") as out:
            target = Path(out) / "descriptors.pb"
            try:
                compile_protos(
                    sources, out, include=[directory], descriptor_set_out=target, python=False
                )
            except ImportError as e:
                raise DescriptorsError(
                    "--proto-dir needs grpcio-tools to compile (pip install grpcio-tools); "
                    "or give --descriptors with a descriptor set protoc wrote"
                ) from e
            except ProtocCompileError as e:
                raise DescriptorsError(f"the protos in {directory} do not compile: {e}") from e
            return cls.from_descriptor_set(target)

    @property
    def has_descriptors(self) -> bool:
        return self._pool is not None

    def decode(self, payload: StoredPayload) -> Decoded:
        raw = base64.b64encode(payload.value).decode("ascii")
        name = payload.type_url.rpartition("/")[2]
        pools = [self._pool] if self._pool is not None else []
        if name.startswith(_WELL_KNOWN):
            # protobuf's own types are always in the default pool. Nothing else is looked
            # up there: what else it holds depends on what this process happened to import.
            pools.append(descriptor_pool.Default())
        for pool in pools:
            try:
                descriptor = pool.FindMessageTypeByName(name)
            except KeyError:
                continue
            try:
                message = message_class(descriptor).FromString(payload.value)
                document = json_format.MessageToDict(
                    message, always_print_fields_with_no_presence=True, descriptor_pool=pool
                )
            except (DecodeError, TypeError, ValueError) as e:
                return Decoded(payload.type_url, False, None, raw, f"not a valid {name}: {e}")
            return Decoded(payload.type_url, True, document, None, None)
        note = f"no message type {name} in the descriptors" if self.has_descriptors else None
        return Decoded(payload.type_url, False, None, raw, note)
