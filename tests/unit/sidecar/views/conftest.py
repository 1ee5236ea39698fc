"""The view query tests' messages, compiled once with the real protoc into a private pool."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import Descriptor
from google.protobuf.message import Message
from larder_protocol import compile_protos
from larder_sidecar.views.query import ValidatedQuery, parse_query, validate_query

PROTO_DIR = Path(__file__).parent / "protos"
PACKAGE = "larder.viewtest"


@dataclass(frozen=True)
class ViewTypes:
    pool: descriptor_pool.DescriptorPool

    def descriptor(self, name: str) -> Descriptor:
        return self.pool.FindMessageTypeByName(f"{PACKAGE}.{name}")

    def message(self, type_name: str, /, **fields: object) -> Message:
        cls = message_factory.GetMessageClass(self.descriptor(type_name))
        return cls(**fields)

    def validate(
        self,
        text: str,
        *,
        request: str = "Filter",
        response: str = "Customer",
        streamed: bool = True,
        tables: dict[str, str] | None = None,
    ) -> ValidatedQuery:
        table_types = tables or {"customers": "Customer", "products": "Product"}
        return validate_query(
            parse_query(text),
            tables={table: self.descriptor(row) for table, row in table_types.items()},
            request=self.descriptor(request),
            response=self.descriptor(response),
            streamed=streamed,
        )


@pytest.fixture(scope="session")
def types(tmp_path_factory: pytest.TempPathFactory) -> ViewTypes:
    out = tmp_path_factory.mktemp("view-protos")
    descriptor_set = out / "views.desc"
    compile_protos(
        sorted(PROTO_DIR.glob("*.proto")),
        out,
        [PROTO_DIR],
        descriptor_set_out=descriptor_set,
        python=False,
    )
    files = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set.read_bytes())
    pool = descriptor_pool.DescriptorPool()
    for file in files.file:
        pool.Add(file)
    return ViewTypes(pool)
