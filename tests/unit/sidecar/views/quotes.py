"""The topic-fed views of `view_protos/larder/viewtopic/quotes.proto`, compiled with the
real protoc, and the discovery spec a user function serving them announces."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from akkaserverless.protocol import discovery_pb2
from larder_protocol import VIEW, compile_protos

PROTOS = Path(__file__).parent / "view_protos"
PROTO = PROTOS / "larder" / "viewtopic" / "quotes.proto"
PACKAGE = "larder.viewtopic"
QUOTES = f"{PACKAGE}.QuotesView"
VOLUMES = f"{PACKAGE}.VolumesView"


def compile_quotes(out: Path, proto: Path = PROTO) -> tuple[ModuleType, bytes]:
    """The `quotes_pb2` module and the descriptor set (with imports) of `proto` (a file
    `larder/viewtopic/quotes.proto` under some include directory)."""
    desc = out / "quotes.desc"
    compile_protos([proto], out, include=[proto.parents[2]], descriptor_set_out=desc)
    if str(out) not in sys.path:
        sys.path.insert(0, str(out))
    return importlib.import_module(f"{PACKAGE}.quotes_pb2"), desc.read_bytes()


def quotes_spec(descriptor_set: bytes, services: tuple[str, ...] = (QUOTES, VOLUMES)) -> Any:
    spec = discovery_pb2.Spec(
        proto=descriptor_set,
        service_info=discovery_pb2.ServiceInfo(
            protocol_major_version=0, protocol_minor_version=7, support_library_name="test"
        ),
    )
    for service in services:
        spec.components.add(component_type=VIEW, service_name=service).component.SetInParent()
    return spec
