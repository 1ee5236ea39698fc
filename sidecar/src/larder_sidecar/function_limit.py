"""The largest message the user function accepts, checked before a request is sent to it.

A message over the user function's gRPC receive limit fails the whole call, and for an
entity that call is its protocol stream: the entity would restart and every command
queued on it would fail. So the fronts refuse such a request first, as the client's
error (RESOURCE_EXHAUSTED, HTTP 413) it is.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from .invoke import InvokeError, MetadataPairs, MethodModel
from .model import DEFAULT_MAX_ENTITY_ID_BYTES

DEFAULT_USER_FUNCTION_MAX_MESSAGE_BYTES = 4 * 1024 * 1024
"""gRPC's default receive limit, which the published SDKs keep."""

_FIELD_OVERHEAD = 16
"""More than a protobuf field's tag and length prefix take."""


@dataclass(frozen=True, slots=True)
class FunctionLimit:
    max_message_bytes: int = DEFAULT_USER_FUNCTION_MAX_MESSAGE_BYTES
    max_entity_id_bytes: int = DEFAULT_MAX_ENTITY_ID_BYTES

    def command_bytes(
        self, method: MethodModel, payload_bytes: int, metadata: MetadataPairs
    ) -> int:
        """At least the size of the protocol message that carries this request to the user
        function (entity or action command, with its envelope); never less."""
        size = payload_bytes + 8 * _FIELD_OVERHEAD
        size += len(method.service) + len(method.name) + len(method.input.full_name) + 64
        size += self.max_entity_id_bytes  # the entity id, at most this long
        for name, value in metadata:
            size += len(name) + len(value) + 3 * _FIELD_OVERHEAD
        return size

    def check(self, method: MethodModel, payload_bytes: int, metadata: MetadataPairs) -> None:
        """Raise InvokeError(RESOURCE_EXHAUSTED) if the request cannot reach the function."""
        size = self.command_bytes(method, payload_bytes, metadata)
        if size > self.max_message_bytes:
            raise InvokeError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"the request ({payload_bytes} bytes) is too large for the user function, "
                f"which accepts messages of at most {self.max_message_bytes} bytes with the "
                "command's envelope; send less (the limit is the function's gRPC receive "
                "limit, told to the sidecar by LARDER_USER_FUNCTION_MAX_MESSAGE_BYTES)",
            )
