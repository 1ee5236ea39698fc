"""The sidecar's public port: gRPC and HTTP/1.1 JSON transcoding on one socket.

Errors raised at start:

    HttpRuleError   the user's `google.api.http` options are invalid (fix the proto)
    OSError         the port cannot be bound
"""

from .routes import HttpRuleError
from .server import PublicServer, start_public_server

__all__ = ["HttpRuleError", "PublicServer", "start_public_server"]
