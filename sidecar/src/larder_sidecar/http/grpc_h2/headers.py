"""Header blocks: HPACK decoding of requests, validation, and the blocks the front sends.

Decoding is `hpack`'s (RFC 7541, with its Huffman and dynamic tables). Two things keep it
cheap per call:
- after its first call a gRPC client sends the same block again (one-byte references to
  its dynamic table), so a block that did not change the table is remembered, and seen
  again while the table is unchanged it is not decoded a second time;
- what we send is encoded here as literals *without indexing*: our blocks never touch the
  peer's table, so a constant block (the response head, `grpc-status: 0`) is encoded once
  and is valid on any connection whatever its table holds.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import hpack

_CACHED_BLOCKS = 64
_STATUS_200 = b"\x88"
"""`:status: 200`, index 8 of the static table."""

# Connection-specific fields, which an HTTP/2 request must not carry (RFC 9113 §8.2.2).
_CONNECTION_FIELDS = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"}
)
_REQUEST_PSEUDO = frozenset({b":method", b":scheme", b":path", b":authority"})


class CompressionError(Exception):
    """The block cannot be decoded: the connection's HPACK state is lost (COMPRESSION_ERROR)."""


class MalformedRequest(Exception):
    """The header block decodes but is not a valid request (a stream PROTOCOL_ERROR)."""


class HeaderDecoder:
    """One connection's HPACK decoder, with a memo of blocks that left its table unchanged."""

    def __init__(self, max_header_list_size: int) -> None:
        self._decoder = hpack.Decoder()
        self._decoder.max_header_list_size = max_header_list_size
        self._entries = self._decoder.header_table.dynamic_entries
        self._memo: dict[bytes, list[tuple[bytes, bytes]]] = {}

    def decode(self, block: bytes) -> list[tuple[bytes, bytes]]:
        memo = self._memo
        found = memo.get(block)
        if found is not None:
            return found
        entries = self._entries
        # Any insertion puts a new tuple at the front; any eviction or resize changes
        # the length: so equal snapshots mean the table did not change.
        before = (len(entries), id(entries[0]) if entries else 0)
        try:
            headers: list[tuple[bytes, bytes]] = [
                (name, value) for name, value in self._decoder.decode(block, raw=True)
            ]
        except hpack.HPACKError as e:
            raise CompressionError(f"the header block cannot be decoded: {e}") from e
        except (IndexError, ValueError, UnicodeDecodeError) as e:
            raise CompressionError(f"the header block is malformed: {e}") from e
        if (len(entries), id(entries[0]) if entries else 0) == before:
            if len(memo) >= _CACHED_BLOCKS:
                memo.clear()
            memo[block] = headers
        else:
            # What other blocks meant depends on the table, which just changed.
            memo.clear()
        return headers


@dataclass(slots=True)
class RequestHead:
    """The fields of a gRPC request's header block that the front reads."""

    method: bytes
    path: str
    content_type: str | None
    timeout: bytes | None
    """`grpc-timeout`, raw (parsed by `messages.parse_timeout`)."""
    encoding: str | None
    """`grpc-encoding`."""
    content_length: int | None
    metadata: list[tuple[str, str]]
    """Every other field, in order (names are lower case, as HTTP/2 requires)."""


def request_head(headers: Sequence[tuple[bytes, bytes]]) -> RequestHead:
    """Validate a request's header block (RFC 9113 §8.2, §8.3.1) and pick out its fields.

    Raises MalformedRequest, which the connection answers with RST_STREAM PROTOCOL_ERROR.
    """
    method = scheme = path = None
    content_type = timeout = encoding = None
    content_length: int | None = None
    metadata: list[tuple[str, str]] = []
    regular = False
    for name, value in headers:
        if name[:1] == b":":
            if regular:
                raise MalformedRequest(f"pseudo-header {name!r} after a regular field")
            if name not in _REQUEST_PSEUDO:
                raise MalformedRequest(f"{name!r} is not a request pseudo-header")
            if name == b":method":
                if method is not None:
                    raise MalformedRequest("two :method fields")
                method = value
            elif name == b":path":
                if path is not None:
                    raise MalformedRequest("two :path fields")
                path = value
            elif name == b":scheme":
                if scheme is not None:
                    raise MalformedRequest("two :scheme fields")
                scheme = value
            continue
        regular = True
        if name.lower() != name:
            raise MalformedRequest(f"field name {name!r} has upper-case letters")
        if name in _CONNECTION_FIELDS:
            raise MalformedRequest(f"connection-specific field {name!r}")
        if b"\r" in value or b"\n" in value or b"\0" in value:
            raise MalformedRequest(f"the value of {name!r} has CR, LF or NUL")
        if name == b"content-type":
            content_type = value.decode("latin-1")
        elif name == b"te":
            if value != b"trailers":
                raise MalformedRequest(f"te: {value!r} (only 'trailers' is allowed)")
        elif name == b"grpc-timeout":
            timeout = value
        elif name == b"grpc-encoding":
            encoding = value.decode("latin-1")
        elif name == b"content-length":
            if not value.isdigit():
                raise MalformedRequest(f"content-length: {value!r}")
            content_length = int(value)
        else:
            metadata.append((name.decode("latin-1"), value.decode("latin-1")))
    if method is None or scheme is None or not path:
        raise MalformedRequest("the request lacks :method, :scheme or :path")
    return RequestHead(method, path.decode("latin-1"), content_type, timeout, encoding,
                       content_length, metadata)


def check_trailers(headers: Iterable[tuple[bytes, bytes]]) -> None:
    """A request's trailers carry no pseudo-headers (RFC 9113 §8.1)."""
    for name, _ in headers:
        if name[:1] == b":":
            raise MalformedRequest(f"pseudo-header {name!r} in trailers")
        if name.lower() != name:
            raise MalformedRequest(f"field name {name!r} has upper-case letters")


def _integer(value: int, prefix_bits: int, first: int) -> bytes:
    """An HPACK integer (RFC 7541 §5.1) whose first byte starts with the bits `first`."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first | value])
    out = bytearray([first | limit])
    value -= limit
    while value >= 128:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def literal(name: str, value: str | bytes) -> bytes:
    """One field as a literal without indexing, new name, no Huffman (RFC 7541 §6.2.2)."""
    raw_name = name.encode("latin-1")
    raw_value = value if isinstance(value, bytes) else value.encode("latin-1")
    return (
        b"\x00" + _integer(len(raw_name), 7, 0) + raw_name
        + _integer(len(raw_value), 7, 0) + raw_value
    )


GRPC_CONTENT_TYPE = "application/grpc"
RESPONSE_HEAD = _STATUS_200 + literal("content-type", GRPC_CONTENT_TYPE)
"""`:status: 200`, `content-type: application/grpc`: every response starts with these."""
OK_TRAILERS = literal("grpc-status", "0")


def status_head(status: int) -> bytes:
    """`:status` for a response that is not gRPC's 200."""
    return literal(":status", str(status))
