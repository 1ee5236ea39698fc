"""Header fields that describe one HTTP hop (the connection, the framing of this message),
not the call itself: a front does not hand them on, whether as the command's metadata or
to another sidecar."""

from __future__ import annotations

HOP_HEADERS = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "upgrade",
        "te",
        "trailer",
        "expect",
        "host",
        "content-length",
    }
)
