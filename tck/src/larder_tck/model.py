"""The TCK's model services: compiled from `tck/proto` and loaded into the descriptor pool.

The TCK keeps no generated Python for its own protos: protoc writes a descriptor
set once per process (the same form the frontends and the npm SDK read), and the
message classes are built from it. Everything lives in the default pool so the
protocol's `Any` payloads can be printed expanded in reports.
"""

from __future__ import annotations

import functools
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import larder_protocol

# The model protos import these; they must be in the pool before the model is added.
from akkaserverless import annotations_pb2 as _annotations  # noqa: F401
from google.api import annotations_pb2 as _http_annotations  # noqa: F401
from google.protobuf import any_pb2, descriptor_pb2, descriptor_pool
from google.protobuf.message import Message
from larder_protocol import DynamicMessageClass, message_class

PROTO_FILES = (
    "larder/tck/model/eventsourced.proto",
    "larder/tck/model/valueentity.proto",
    "larder/tck/model/action.proto",
    "larder/tck/model/view.proto",
)

ES_PKG = "larder.tck.model"
VE_PKG = "larder.tck.model.valueentity"
ACTION_PKG = "larder.tck.model.action"
VIEW_PKG = "larder.tck.model.view"

ES_MODEL = f"{ES_PKG}.EventSourcedTckModel"
ES_TWO = f"{ES_PKG}.EventSourcedTwo"
ES_CONFIGURED = f"{ES_PKG}.EventSourcedConfigured"
VE_MODEL = f"{VE_PKG}.ValueEntityTckModel"
VE_TWO = f"{VE_PKG}.ValueEntityTwo"
VE_CONFIGURED = f"{VE_PKG}.ValueEntityConfigured"
ACTION_MODEL = f"{ACTION_PKG}.ActionTckModel"
ACTION_TWO = f"{ACTION_PKG}.ActionTwo"
VIEW_MODEL = f"{VIEW_PKG}.ViewTckModel"

ES_ENTITY_TYPE = "event-sourced-tck-model"
ES_TWO_ENTITY_TYPE = "event-sourced-tck-two"
ES_CONFIGURED_ENTITY_TYPE = "event-sourced-configured"
VE_ENTITY_TYPE = "value-entity-tck-model"
VE_TWO_ENTITY_TYPE = "value-entity-tck-two"
VE_CONFIGURED_ENTITY_TYPE = "value-entity-configured"

SNAPSHOT_EVERY = 5
CONFIGURED_PASSIVATION_MS = 100

TYPE_URL_PREFIX = "type.googleapis.com/"


def proto_dir() -> Path:
    """`tck/proto`: the model protos a frontend compiles and serves."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "proto", here.parent.parent / "proto"):
        if (candidate / PROTO_FILES[0]).is_file():
            return candidate
    raise FileNotFoundError(
        f"the TCK's model protos are neither in {here / 'proto'} nor in the source checkout; "
        "the larder-tck installation is incomplete (reinstall it)"
    )


def compile_descriptor_set(out: Path) -> Path:
    """Write the model's FileDescriptorSet (with all imports) to `out`; return `out`."""
    larder_protocol.compile_protos(
        PROTO_FILES, out.parent, include=[proto_dir()], descriptor_set_out=out, python=False
    )
    return out


@dataclass(frozen=True)
class Model:
    """The model's descriptors and message classes."""

    files: descriptor_pb2.FileDescriptorSet

    def message(self, full_name: str) -> DynamicMessageClass:
        descriptor = descriptor_pool.Default().FindMessageTypeByName(full_name)
        return message_class(descriptor)

    def new(self, full_name: str, **fields: Any) -> Any:
        return self.message(full_name)(**fields)

    def service_names(self) -> set[str]:
        return {f"{f.package}.{s.name}" for f in self.files.file for s in f.service}


@functools.cache
def load() -> Model:
    """Compile (once per process) and register the model protos."""
    with tempfile.TemporaryDirectory(prefix="larder-tck-") as tmp:
        path = compile_descriptor_set(Path(tmp) / "tck-model.desc")
        files = descriptor_pb2.FileDescriptorSet.FromString(path.read_bytes())
    pool = descriptor_pool.Default()
    for file in files.file:
        try:
            pool.FindFileByName(file.name)
        except KeyError:
            pool.Add(file)
    return Model(files)


def pack(message: Message) -> Any:
    """An `Any` the way the SDKs pack payloads (type.googleapis.com prefix)."""
    return any_pb2.Any(
        type_url=TYPE_URL_PREFIX + message.DESCRIPTOR.full_name, value=message.SerializeToString()
    )
