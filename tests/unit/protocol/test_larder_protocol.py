"""The hand-written surface of larder_protocol: include dir, compiling user protos, constants."""

from __future__ import annotations

import importlib.util
import os
import types
from pathlib import Path

import larder_protocol
import pytest
from akkaserverless import annotations_pb2
from akkaserverless.component.action import action_pb2
from akkaserverless.component.eventsourcedentity import event_sourced_entity_pb2
from akkaserverless.component.replicatedentity import replicated_entity_pb2
from akkaserverless.component.valueentity import value_entity_pb2
from akkaserverless.component.view import view_pb2
from google.api import annotations_pb2 as http_annotations_pb2
from google.protobuf import descriptor_pb2

USER_PROTO = """
syntax = "proto3";
package larder.test.compile;
import "akkaserverless/annotations.proto";
import "google/api/annotations.proto";
import "google/protobuf/empty.proto";

message AddItem {
  string cart_id = 1 [(akkaserverless.field).entity_key = true];
  string product_id = 2;
}

service CartService {
  option (akkaserverless.service) = { type: SERVICE_TYPE_ENTITY component: "Cart" };
  rpc Add(AddItem) returns (google.protobuf.Empty) {
    option (google.api.http) = { post: "/cart/{cart_id}/items/add" body: "*" };
  }
}
"""


def test_all_names_every_public_attribute() -> None:
    public = {name for name in vars(larder_protocol) if not name.startswith("_")}
    assert set(larder_protocol.__all__) == public


def test_include_dir_holds_the_protocol_and_google_api_protos() -> None:
    root = larder_protocol.include_dir()
    for relative in (
        "akkaserverless/annotations.proto",
        "akkaserverless/protocol/discovery.proto",
        "google/api/annotations.proto",
        "google/api/http.proto",
    ):
        assert (root / relative).is_file(), relative


def _load(path: Path, name: str) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_compiles_a_user_proto_using_the_annotations(tmp_path: Path) -> None:
    source_dir = tmp_path / "src"
    (source_dir / "larder_compile_test").mkdir(parents=True)
    (source_dir / "larder_compile_test" / "cart.proto").write_text(USER_PROTO)
    out = tmp_path / "out"
    descriptors = tmp_path / "user-function.desc"

    larder_protocol.compile_protos(
        ["larder_compile_test/cart.proto"],
        out,
        include=[source_dir],
        descriptor_set_out=descriptors,
    )

    generated = out / "larder_compile_test"
    assert {p.name for p in generated.iterdir()} >= {
        "cart_pb2.py",
        "cart_pb2.pyi",
        "cart_pb2_grpc.py",
    }
    files = {
        f.name for f in descriptor_pb2.FileDescriptorSet.FromString(descriptors.read_bytes()).file
    }
    assert {"larder_compile_test/cart.proto", "akkaserverless/annotations.proto"} <= files

    cart = _load(generated / "cart_pb2.py", "larder_compile_test_cart_pb2")
    field_options = cart.AddItem.DESCRIPTOR.fields_by_name["cart_id"].GetOptions()
    assert field_options.Extensions[annotations_pb2.field].entity_key
    method_options = (
        cart.DESCRIPTOR.services_by_name["CartService"].methods_by_name["Add"].GetOptions()
    )
    assert method_options.Extensions[http_annotations_pb2.http].post == "/cart/{cart_id}/items/add"


def test_compile_errors_carry_protocs_diagnostics(tmp_path: Path) -> None:
    (tmp_path / "broken.proto").write_text(
        'syntax = "proto3";\nmessage Broken { NoSuchType x = 1; }\n'
    )
    with pytest.raises(larder_protocol.ProtocCompileError, match="NoSuchType"):
        larder_protocol.compile_protos(["broken.proto"], tmp_path / "out", include=[tmp_path])


def test_component_types_are_the_protocol_service_names() -> None:
    services = {
        larder_protocol.ACTION: action_pb2.DESCRIPTOR.services_by_name["Actions"],
        larder_protocol.EVENT_SOURCED_ENTITY: (
            event_sourced_entity_pb2.DESCRIPTOR.services_by_name["EventSourcedEntities"]
        ),
        larder_protocol.REPLICATED_ENTITY: (
            replicated_entity_pb2.DESCRIPTOR.services_by_name["ReplicatedEntities"]
        ),
        larder_protocol.VALUE_ENTITY: value_entity_pb2.DESCRIPTOR.services_by_name["ValueEntities"],
        larder_protocol.VIEW: view_pb2.DESCRIPTOR.services_by_name["Views"],
    }
    assert {name: service.full_name for name, service in services.items()} == {
        name: name for name in services
    }
    assert set(services) == larder_protocol.COMPONENT_TYPES


def test_supported_protocol_versions() -> None:
    assert {larder_protocol.ProtocolVersion(0, 7)} == larder_protocol.SUPPORTED_PROTOCOL_VERSIONS
    assert str(larder_protocol.ProtocolVersion(0, 7)) == "0.7"


def test_ensure_generated_writes_missing_modules_and_refreshes_stale_ones(tmp_path: Path) -> None:
    proto_root = tmp_path / "proto"
    (proto_root / "demo").mkdir(parents=True)
    source = proto_root / "demo" / "thing.proto"
    source.write_text('syntax = "proto3";\npackage demo;\nmessage Thing { string id = 1; }\n')
    package = tmp_path / "src" / "demo"
    package.mkdir(parents=True)

    assert larder_protocol.generated_is_stale(package, proto_root)
    larder_protocol.ensure_generated(package, proto_root)
    generated = package / "thing_pb2.py"
    assert generated.exists() and (package / "thing_pb2.pyi").exists()
    assert (package / "thing_pb2_grpc.py").exists()
    assert not larder_protocol.generated_is_stale(package, proto_root)

    # A newer .proto makes the modules stale; regeneration picks up the change.
    source.write_text(
        'syntax = "proto3";\npackage demo;\nmessage Thing { string id = 1; int32 size = 2; }\n'
    )
    later = generated.stat().st_mtime + 10
    os.utime(source, (later, later))
    assert larder_protocol.generated_is_stale(package, proto_root)
    larder_protocol.ensure_generated(package, proto_root)
    assert "size" in generated.read_text()
    assert not list(package.parent.glob("codegen-*")), "scratch directory left behind"


def test_ensure_generated_names_the_missing_proto_directory(tmp_path: Path) -> None:
    package = tmp_path / "src" / "nothing"
    package.mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"no \.proto files in .*proto/nothing"):
        larder_protocol.ensure_generated(package, tmp_path / "proto")
