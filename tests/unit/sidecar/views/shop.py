"""The shop of `view_protos/larder/viewshop/shop.proto`, compiled with the real protoc, and
the discovery spec a user function serving it announces."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from akkaserverless.protocol import discovery_pb2
from larder_protocol import EVENT_SOURCED_ENTITY, VALUE_ENTITY, VIEW, compile_protos

PROTOS = Path(__file__).parent / "view_protos"
PROTO = PROTOS / "larder" / "viewshop" / "shop.proto"
PACKAGE = "larder.viewshop"

COMPONENTS = (
    (VALUE_ENTITY, "Items", "items"),
    (VIEW, "ItemsView", ""),
    (EVENT_SOURCED_ENTITY, "Accounts", "accounts"),
    (VIEW, "BalancesView", ""),
)


def compile_shop(out: Path, proto: Path = PROTO) -> tuple[ModuleType, bytes]:
    """The `shop_pb2` module and the descriptor set (with imports) of `proto`."""
    desc = out / "shop.desc"
    compile_protos([proto], out, include=[proto.parents[2]], descriptor_set_out=desc)
    if str(out) not in sys.path:
        sys.path.insert(0, str(out))
    module = importlib.import_module(f"{PACKAGE}.shop_pb2")
    return module, desc.read_bytes()


def shop_spec(
    descriptor_set: bytes, components: tuple[tuple[str, str, str], ...] = COMPONENTS
) -> Any:
    spec = discovery_pb2.Spec(
        proto=descriptor_set,
        service_info=discovery_pb2.ServiceInfo(
            protocol_major_version=0, protocol_minor_version=7, support_library_name="test"
        ),
    )
    for ctype, service, entity_type in components:
        c = spec.components.add(component_type=ctype, service_name=f"{PACKAGE}.{service}")
        if entity_type:
            c.entity.entity_type = entity_type
        else:
            c.component.SetInParent()
    return spec
