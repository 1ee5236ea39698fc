"""Our .proto files describe exactly the protocol the published SDKs speak.

Compiles ``protocol/proto`` and compares it, file by file and field by field,
with the descriptors of npm @lightbend/akkaserverless-javascript-sdk 0.32.0
(compiled from its .proto files) and PyPI akkaserverless 0.1.13 (read from its
generated modules). Both SDKs are provisioned once into the cache by
``tests.infra.published_sdks``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2

from tests.infra import published_sdks
from tests.unit.protocol.descriptor_diff import diff_files, files_in_scope, parse_set

PROTO_DIR = Path(__file__).resolve().parents[3] / "protocol" / "proto"
IN_SCOPE = ("akkaserverless/", "google/api/")

# Where the PyPI SDK (older) differs from the npm SDK, our files follow npm.
# These are the differences that leaves against the PyPI descriptors; each
# must still occur, so a change on either side shows up here.
_DELTA = "akkaserverless/component/replicatedentity/replicated_entity.proto message"
KNOWN_PYPI_DIFFERENCES: frozenset[str] = frozenset(
    {
        # PyPI has replicated-entity file options and the map-shaped replicated
        # data types (counter map, register map, multi map) that npm lacks ...
        "akkaserverless/annotations.proto message FileOptions field replicated_entity: missing",
        "akkaserverless/annotations.proto message FileOptions: field order expected"
        " ['event_sourced_entity', 'value_entity', 'replicated_entity'],"
        " got ['event_sourced_entity', 'value_entity']",
        *(
            f"akkaserverless/component.proto message {name}: missing"
            for name in (
                "ReplicatedCounter",
                "ReplicatedCounterMap",
                "ReplicatedEntity",
                "ReplicatedMap",
                "ReplicatedMultiMap",
                "ReplicatedRegister",
                "ReplicatedRegisterMap",
                "ReplicatedSet",
                "ReplicatedVote",
            )
        ),
        *(
            f"{_DELTA} {name}: missing"
            for name in (
                "ReplicatedCounterMapDelta",
                "ReplicatedCounterMapEntryDelta",
                "ReplicatedMultiMapDelta",
                "ReplicatedMultiMapEntryDelta",
                "ReplicatedRegisterMapDelta",
                "ReplicatedRegisterMapEntryDelta",
            )
        ),
        *(
            f"{_DELTA} ReplicatedEntityDelta field {name}: missing"
            for name in (
                "replicated_counter_map",
                "replicated_multi_map",
                "replicated_register_map",
            )
        ),
        # ... and numbers ReplicatedEntityDelta's oneof densely, so the two
        # SDKs disagree on the wire about replicated entity deltas.
        f"{_DELTA} ReplicatedEntityDelta field counter: number expected 1, got 2",
        f"{_DELTA} ReplicatedEntityDelta field replicated_set: number expected 2, got 4",
        f"{_DELTA} ReplicatedEntityDelta field register: number expected 3, got 5",
        f"{_DELTA} ReplicatedEntityDelta field replicated_map: number expected 4, got 7",
        f"{_DELTA} ReplicatedEntityDelta: field order expected ['counter', 'replicated_set',"
        " 'register', 'replicated_map', 'replicated_counter_map', 'replicated_register_map',"
        " 'replicated_multi_map', 'vote'], got ['counter', 'replicated_set', 'register',"
        " 'replicated_map', 'vote']",
        # PyPI's Failure carries a gRPC status code; npm's does not.
        "akkaserverless/component/component.proto message Failure field grpc_status_code: missing",
        "akkaserverless/component/component.proto message Failure: field order expected"
        " ['command_id', 'description', 'restart', 'grpc_status_code'],"
        " got ['command_id', 'description', 'restart']",
        # npm's copies of the google/api files set a C# namespace; PyPI's do not.
        *(
            f'google/api/{name}.proto: options expected {{java_package: "com.google.api";'
            f' java_outer_classname: "{outer}"; java_multiple_files: true;'
            ' go_package: "google.golang.org/genproto/googleapis/api/annotations;annotations";'
            f'{cc} objc_class_prefix: "GAPI"}}, got {{java_package: "com.google.api";'
            f' java_outer_classname: "{outer}"; java_multiple_files: true;'
            ' go_package: "google.golang.org/genproto/googleapis/api/annotations;annotations";'
            f'{cc} objc_class_prefix: "GAPI"; csharp_namespace: "Google.Protobuf"}}'
            for name, outer, cc in (
                ("annotations", "AnnotationsProto", ""),
                ("http", "HttpProto", " cc_enable_arenas: true;"),
            )
        ),
    }
)


@pytest.fixture(scope="module")
def sdks() -> published_sdks.PublishedSdks:
    return published_sdks.provision()


@pytest.fixture(scope="module")
def ours() -> dict[str, descriptor_pb2.FileDescriptorProto]:
    sources = sorted(p.relative_to(PROTO_DIR).as_posix() for p in PROTO_DIR.rglob("*.proto"))
    return parse_set(published_sdks.compile_descriptor_set([PROTO_DIR], sources))


def _compare(
    published: dict[str, descriptor_pb2.FileDescriptorProto],
    ours: dict[str, descriptor_pb2.FileDescriptorProto],
) -> list[str]:
    names = files_in_scope(list(published), IN_SCOPE)
    assert names, "the published descriptor set has no akkaserverless/ or google/api/ files"
    missing = [name for name in names if name not in ours]
    assert not missing, f"published files with no counterpart in protocol/proto: {missing}"
    return [line for name in names for line in diff_files(published[name], ours[name])]


def test_matches_the_npm_sdk(
    sdks: published_sdks.PublishedSdks, ours: dict[str, descriptor_pb2.FileDescriptorProto]
) -> None:
    published = parse_set(published_sdks.npm_descriptor_set(sdks))
    diffs = _compare(published, ours)
    assert not diffs, "protocol/proto differs from the npm SDK 0.32.0:\n" + "\n".join(diffs)


def test_matches_the_pypi_sdk_apart_from_known_differences(
    sdks: published_sdks.PublishedSdks, ours: dict[str, descriptor_pb2.FileDescriptorProto]
) -> None:
    published = parse_set(published_sdks.pypi_descriptor_set(sdks))
    diffs = set(_compare(published, ours))
    unexpected = sorted(diffs - KNOWN_PYPI_DIFFERENCES)
    vanished = sorted(KNOWN_PYPI_DIFFERENCES - diffs)
    assert not unexpected, "protocol/proto differs from the PyPI SDK 0.1.13:\n" + "\n".join(
        unexpected
    )
    assert not vanished, "known PyPI differences no longer occur:\n" + "\n".join(vanished)


def test_ours_has_no_files_beyond_the_published_ones(
    sdks: published_sdks.PublishedSdks, ours: dict[str, descriptor_pb2.FileDescriptorProto]
) -> None:
    published = set(parse_set(published_sdks.npm_descriptor_set(sdks)))
    published |= set(parse_set(published_sdks.pypi_descriptor_set(sdks)))
    extra = sorted(set(files_in_scope(list(ours), IN_SCOPE)) - published)
    assert not extra, f"protocol/proto has files neither published SDK has: {extra}"
