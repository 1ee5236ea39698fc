"""The example commands `larder dev` prints once the function is ready.

A function directory with a README gets its own `curl`/`grpcurl` examples (so the
README stays the one source of truth); any function gets the generic
`POST /<package.Service>/<Method>` route of every service the sidecar serves, listed
through the sidecar's gRPC reflection.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

# Imported for their side effect as well: parsing a descriptor resolves the entity-key
# options only for extensions registered in the default pool.
from akkaserverless import annotations_pb2, legacy_entity_key_pb2
from google.protobuf import descriptor_pb2

from larder_dev.view_routes import view_method_kind

_FENCE = re.compile(r"^\s*```")
_EXAMPLE_START = re.compile(r"^\s*(curl|grpcurl)\s")
_DEFAULT_PUBLIC_PORT = 9000

@dataclass(frozen=True)
class ReflectedService:
    """A service the sidecar serves, with what an example request needs."""

    full_name: str
    """`package.Service`."""
    descriptor: descriptor_pb2.ServiceDescriptorProto
    key_fields: Mapping[str, tuple[tuple[str, int], ...]] = field(default_factory=dict)
    """Per method name, the input's entity-key fields as (field name, field type)."""
    inputs: Mapping[str, descriptor_pb2.DescriptorProto] = field(default_factory=dict)
    """Per method name, the input message."""

# Services every sidecar serves for infrastructure's sake; not the user's API.
_INFRASTRUCTURE_PREFIXES = ("grpc.", "akkaserverless.", "larder.")


def readme_examples(readme: Path, port: int) -> list[str]:
    """The curl/grpcurl commands in the README's code blocks, pointed at `port`."""
    if not readme.is_file():
        return []
    examples: list[str] = []
    in_block = False
    current: list[str] = []
    for line in readme.read_text(encoding="utf-8").splitlines():
        if _FENCE.match(line):
            in_block = not in_block
            current = []
            continue
        if not in_block:
            continue
        if current:
            current.append(line.strip())
        elif _EXAMPLE_START.match(line):
            current = [line.strip()]
        # A trailing backslash continues the command on the next line.
        if current and not current[-1].endswith("\\"):
            examples.append(_retarget(" ".join(part.rstrip("\\").strip() for part in current),
                                      port))
            current = []
    return examples


def _retarget(command: str, port: int) -> str:
    if port == _DEFAULT_PUBLIC_PORT:
        return command
    return command.replace(f"localhost:{_DEFAULT_PUBLIC_PORT}", f"localhost:{port}")


# A value of each field type that a request can carry in JSON; an entity key is never
# a message, float or bytes field (discovery refuses those).
_EXAMPLE_VALUES: dict[int, object] = {
    descriptor_pb2.FieldDescriptorProto.TYPE_STRING: "example-1",
    descriptor_pb2.FieldDescriptorProto.TYPE_BOOL: True,
}


def _example_body(keys: tuple[tuple[str, int], ...]) -> str:
    # Integers are strings in proto3 JSON only for 64-bit types; 1 parses as any of them.
    return json.dumps({name: _EXAMPLE_VALUES.get(kind, 1) for name, kind in keys})


def generic_examples(services: Iterable[ReflectedService], port: int) -> list[str]:
    """One `curl` per unary method: the generic JSON route the sidecar always serves, with
    the entity-key fields filled in (a request without its key is refused). A view's
    methods are left to `view_routes`: its queries are printed with their own examples,
    its update methods are not served to clients."""
    return [
        f"curl -X POST -H 'Content-Type: application/json' "
        f"localhost:{port}/{service.full_name}/{method.name} "
        f"-d '{_example_body(service.key_fields.get(method.name, ()))}'"
        for service in services
        for method in service.descriptor.method
        if not (method.client_streaming or method.server_streaming)
        and view_method_kind(method) is None
    ]


def _is_entity_key(options: descriptor_pb2.FieldOptions) -> bool:
    # The stubs type Extensions for typed extension handles, which the generated
    # protocol modules do not give mypy.
    ext: Any = options.Extensions
    return bool(
        ext[annotations_pb2.field].entity_key or ext[legacy_entity_key_pb2.legacy_entity_key]
    )


async def reflected_services(target: str, timeout_s: float = 5.0) -> list[ReflectedService]:
    """The user services the sidecar at `target` serves, by full name.

    Raises grpc.RpcError when the sidecar does not answer reflection.
    """
    # Imported here: reflection is only needed when a function has no README.
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc  # noqa: PLC0415

    async with grpc.aio.insecure_channel(target) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)

        async def ask(
            *requests: reflection_pb2.ServerReflectionRequest,
        ) -> list[reflection_pb2.ServerReflectionResponse]:
            async def feed() -> AsyncIterator[reflection_pb2.ServerReflectionRequest]:
                for request in requests:
                    yield request

            call = stub.ServerReflectionInfo(feed(), timeout=timeout_s)
            return [response async for response in call]

        listing = await ask(reflection_pb2.ServerReflectionRequest(list_services=""))
        names = [
            s.name
            for response in listing
            for s in response.list_services_response.service
            if not s.name.startswith(_INFRASTRUCTURE_PREFIXES)
        ]
        if not names:
            return []
        answers = await ask(*(reflection_pb2.ServerReflectionRequest(file_containing_symbol=n)
                              for n in names))
    found: dict[str, descriptor_pb2.ServiceDescriptorProto] = {}
    messages: dict[str, descriptor_pb2.DescriptorProto] = {}
    for answer in answers:
        # Each answer carries the file and the files it imports, so input types from
        # another file are here too.
        for raw in answer.file_descriptor_response.file_descriptor_proto:
            file = descriptor_pb2.FileDescriptorProto.FromString(raw)
            prefix = f".{file.package}." if file.package else "."
            for message in file.message_type:
                messages[prefix + message.name] = message
            for service in file.service:
                full = prefix[1:] + service.name
                if full in names:
                    found[full] = service
    services = []
    for full, service in sorted(found.items()):
        keys = {}
        inputs = {}
        for method in service.method:
            input_type = messages.get(method.input_type)
            if input_type is not None:
                inputs[method.name] = input_type
                keys[method.name] = tuple(
                    (f.name, f.type) for f in input_type.field
                    if _is_entity_key(f.options)
                )
        services.append(ReflectedService(full, service, keys, inputs))
    return services
