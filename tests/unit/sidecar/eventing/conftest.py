"""A user-function model with eventing options, built the way discovery builds it."""

from __future__ import annotations

from pathlib import Path

import pytest
from larder_protocol import ACTION, EVENT_SOURCED_ENTITY, compile_protos
from larder_sidecar.eventing.spec import EventingSpec, read_eventing
from larder_sidecar.model import UserFunctionModel, build_model
from larder_sidecar.protocol import (
    ACCEPTED_PROTOCOL_VERSIONS,
    PROXY_PROTOCOL_VERSION,
    discovery_pb2,
)

PROTOS = Path(__file__).parent / "protos"


def model_from(descriptors: bytes, *actions: str) -> UserFunctionModel:
    spec = discovery_pb2.Spec(
        proto=descriptors,
        service_info=discovery_pb2.ServiceInfo(
            protocol_major_version=PROXY_PROTOCOL_VERSION[0],
            protocol_minor_version=PROXY_PROTOCOL_VERSION[1],
        ),
        components=[
            discovery_pb2.Component(
                component_type=EVENT_SOURCED_ENTITY,
                service_name="evunit.Cart",
                entity=discovery_pb2.EntitySettings(entity_type="cart"),
            ),
            *(discovery_pb2.Component(component_type=ACTION, service_name=a) for a in actions),
        ],
    )
    return build_model(spec, ACCEPTED_PROTOCOL_VERSIONS)


@pytest.fixture(scope="session")
def descriptors(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    tmp = tmp_path_factory.mktemp("evunit")
    desc = tmp / "shop.desc"
    compile_protos(
        [PROTOS / "evunit" / "shop.proto"],
        tmp,
        include=[PROTOS],
        descriptor_set_out=desc,
        python=False,
    )
    return desc.read_bytes()


@pytest.fixture(scope="session")
def model(descriptors: bytes) -> UserFunctionModel:
    return model_from(descriptors, "evunit.Echo")


@pytest.fixture(scope="session")
def model_with_journal_source(descriptors: bytes) -> UserFunctionModel:
    return model_from(descriptors, "evunit.Echo", "evunit.Projection")


@pytest.fixture
def spec(model: UserFunctionModel) -> EventingSpec:
    return read_eventing(model)
