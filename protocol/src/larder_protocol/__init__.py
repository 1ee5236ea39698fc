"""The Akka Serverless user-function protocol, as Larder ships it.

The generated protocol modules are the top-level package ``akkaserverless``
(e.g. ``akkaserverless.protocol.discovery_pb2``); this package holds the small
hand-written surface around them.
"""

from larder_protocol._compile import ProtocCompileError, compile_protos
from larder_protocol._dynamic import DynamicMessageClass, message_class
from larder_protocol._generate import ensure_generated, generated_is_stale
from larder_protocol._include import include_dir
from larder_protocol._versions import (
    ACTION,
    COMPONENT_TYPES,
    EVENT_SOURCED_ENTITY,
    REPLICATED_ENTITY,
    SUPPORTED_PROTOCOL_VERSIONS,
    VALUE_ENTITY,
    VIEW,
    ProtocolVersion,
)

__all__ = [
    "ACTION",
    "COMPONENT_TYPES",
    "EVENT_SOURCED_ENTITY",
    "REPLICATED_ENTITY",
    "SUPPORTED_PROTOCOL_VERSIONS",
    "VALUE_ENTITY",
    "VIEW",
    "DynamicMessageClass",
    "ProtocCompileError",
    "ProtocolVersion",
    "compile_protos",
    "ensure_generated",
    "generated_is_stale",
    "include_dir",
    "message_class",
]
