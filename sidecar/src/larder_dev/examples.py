"""The example commands `larder dev` prints once the function is ready.

A function directory with a README gets its own `curl`/`grpcurl` examples (so the
README stays the one source of truth); any function gets the generic
`POST /<package.Service>/<Method>` route of every service the sidecar serves, listed
through the sidecar's gRPC reflection.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import grpc
from google.protobuf import descriptor_pb2

_FENCE = re.compile(r"^\s*```")
_EXAMPLE_START = re.compile(r"^\s*(curl|grpcurl)\s")
_DEFAULT_PUBLIC_PORT = 9000

ReflectedService = tuple[str, descriptor_pb2.ServiceDescriptorProto]
"""A service's full name (`package.Service`) and its descriptor."""
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


def generic_examples(services: Iterable[ReflectedService], port: int) -> list[str]:
    """One `curl` per unary method: the generic JSON route the sidecar always serves."""
    return [
        f"curl -X POST -H 'Content-Type: application/json' "
        f"localhost:{port}/{full_name}/{method.name} -d '{{}}'"
        for full_name, service in services
        for method in service.method
        if not (method.client_streaming or method.server_streaming)
    ]


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
    services: list[ReflectedService] = []
    wanted = set(names)
    for answer in answers:
        for raw in answer.file_descriptor_response.file_descriptor_proto:
            file = descriptor_pb2.FileDescriptorProto.FromString(raw)
            for service in file.service:
                full = f"{file.package}.{service.name}" if file.package else service.name
                if full in wanted:
                    wanted.discard(full)
                    services.append((full, service))
    return sorted(services, key=lambda s: s[0])
