"""kgw's own HTTP event vocabulary, shared by the HTTP/1 adapter (and later HTTP/2).

The protocol adapters turn bytes into these small immutable records; the proxy never sees
parser callbacks. Header names are lower-case bytes (as in HTTP/2 and as Envoy emits
them on HTTP/1), values are bytes exactly as received.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal
from collections.abc import Iterable

Headers = list[tuple[bytes, bytes]]

#: Headers that describe one connection, never forwarded (RFC 9110 7.6.1), plus the
#: Proxy-Connection header some old clients still send. (HTTP semantics, not HTTP/1.1
#: syntax: an HTTP/2 message must not carry them either, RFC 9113 8.2.2.)
HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"proxy-connection", b"te", b"transfer-encoding",
    b"upgrade", b"trailer", b"proxy-authenticate", b"proxy-authorization",
})


#: HTTP/2 error codes (RFC 9113 §7) by value: the names RST_STREAM and GOAWAY codes get in
#: the access log's details and in the metrics' labels (lower-case there).
H2_ERROR_NAMES = ("NO_ERROR", "PROTOCOL_ERROR", "INTERNAL_ERROR", "FLOW_CONTROL_ERROR",
                  "SETTINGS_TIMEOUT", "STREAM_CLOSED", "FRAME_SIZE_ERROR", "REFUSED_STREAM",
                  "CANCEL", "COMPRESSION_ERROR", "CONNECT_ERROR", "ENHANCE_YOUR_CALM",
                  "INADEQUATE_SECURITY", "HTTP_1_1_REQUIRED")


def h2_error_name(code: int) -> str:
    """An HTTP/2 error code's name; a code RFC 9113 does not define is named by its value
    (a peer may send any 32-bit code: one label per unknown value would let it grow the
    metrics without bound, so all unknown codes share one name)."""
    code = int(code)
    if 0 <= code < len(H2_ERROR_NAMES):
        return H2_ERROR_NAMES[code]
    return "UNKNOWN_CODE"


def connection_tokens(value: bytes) -> set[bytes]:
    """The lower-case names one Connection field lists."""
    tokens = {t.strip().lower() for t in value.split(b",")}
    tokens.discard(b"")
    return tokens


def parse_connection_tokens(headers: Iterable[tuple[bytes, bytes]]) -> frozenset[bytes]:
    """Names listed in Connection headers (they are hop-by-hop too)."""
    tokens: set[bytes] = set()
    for name, value in headers:
        if name == b"connection":
            tokens |= connection_tokens(value)
    return frozenset(tokens)


class _Record:
    """Base of the per-request events: equal only to the same kind of event with equal
    fields (so ``Body(b"x") != EndOfMessage(b"x")``), shown with their field names."""

    __slots__ = ()

    def _fields(self) -> tuple[Any, ...]:
        slots: tuple[str, ...] = type(self).__slots__
        return tuple([getattr(self, name) for name in slots])

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self._fields() == other._fields()

    def __repr__(self) -> str:
        slots: tuple[str, ...] = type(self).__slots__
        args = ", ".join(f"{n}={getattr(self, n)!r}" for n in slots)
        return f"{type(self).__name__}({args})"


# The four events made for every proxied request (RequestHead, ResponseHead, Body,
# EndOfMessage) are plain ``__slots__`` classes so that scripts/build_ext.py can compile
# them (events.pxd) into extension types with read-only C fields: the proxy reads a dozen
# head fields per request, each a pointer offset instead of a descriptor lookup (a
# NamedTuple's fields are found through the type's dict). Interpreted, they are ordinary
# slotted records; treat them as immutable either way.

#: How a message body is delimited on the wire.
BodyKind = Literal["none", "length", "chunked", "close"]


class RequestHead(_Record):
    """A parsed request line and header block."""

    __slots__ = ("method", "target", "version", "headers", "host", "authority", "keep_alive",
                 "body", "content_length", "expect_continue", "upgrade", "raw")

    def __init__(self, method: bytes, target: bytes, version: bytes,
                 headers: tuple[tuple[bytes, bytes], ...], host: bytes, authority: bytes,
                 keep_alive: bool, body: BodyKind, content_length: int | None,
                 expect_continue: bool, upgrade: bool, raw: bytes | None = None) -> None:
        self.method = method
        #: The request-target exactly as sent (path and query).
        self.target = target
        #: b"1.1" or b"1.0".
        self.version = version
        #: (lower-case name, value) pairs in arrival order, hop-by-hop headers included.
        self.headers = headers
        #: The Host header without port, lower-case (b"" when absent).
        self.host = host
        #: The Host header as sent (with port), b"" when absent.
        self.authority = authority
        self.keep_alive = keep_alive
        self.body = body
        self.content_length = content_length
        self.expect_continue = expect_continue
        #: An ``Upgrade`` was requested (e.g. WebSocket).
        self.upgrade = upgrade
        #: The bytes being parsed when this request's line began them, so its header
        #: block starts there (the proxy may forward it as received); None otherwise.
        self.raw = raw


class ResponseHead(_Record):
    """A parsed status line and header block (interim 1xx responses are not reported)."""

    __slots__ = ("status", "version", "headers", "keep_alive", "body", "content_length")

    def __init__(self, status: int, version: bytes, headers: tuple[tuple[bytes, bytes], ...],
                 keep_alive: bool, body: BodyKind, content_length: int | None) -> None:
        self.status = status
        self.version = version
        self.headers = headers
        self.keep_alive = keep_alive
        self.body = body
        self.content_length = content_length


class Body(_Record):
    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


class EndOfMessage(_Record):
    __slots__ = ("trailers",)

    def __init__(self, trailers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
        #: Trailer fields of a chunked message (lower-case names), usually empty.
        self.trailers = trailers


# The parsers make these per message through the functions below: compiled, each is a
# C call that fills the fields in place (calling the class goes through the generic
# type call, with an argument tuple and keyword parsing, which cost more than the
# rest of making the event). Same fields, same order as the classes.

def request_head(method: bytes, target: bytes, version: bytes,
                 headers: tuple[tuple[bytes, bytes], ...], host: bytes, authority: bytes,
                 keep_alive: bool, body: BodyKind, content_length: int | None,
                 expect_continue: bool, upgrade: bool, raw: bytes | None) -> RequestHead:
    head = RequestHead.__new__(RequestHead)
    head.method = method
    head.target = target
    head.version = version
    head.headers = headers
    head.host = host
    head.authority = authority
    head.keep_alive = keep_alive
    head.body = body
    head.content_length = content_length
    head.expect_continue = expect_continue
    head.upgrade = upgrade
    head.raw = raw
    return head


def response_head(status: int, version: bytes, headers: tuple[tuple[bytes, bytes], ...],
                  keep_alive: bool, body: BodyKind, content_length: int | None) -> ResponseHead:
    head = ResponseHead.__new__(ResponseHead)
    head.status = status
    head.version = version
    head.headers = headers
    head.keep_alive = keep_alive
    head.body = body
    head.content_length = content_length
    return head


def body_event(data: bytes) -> Body:
    ev = Body.__new__(Body)
    ev.data = data
    return ev


@dataclass(frozen=True, slots=True)
class Upgraded:
    """The message switched protocols; ``data`` is what followed the header block."""

    data: bytes


class ProtocolError(Exception):
    """The peer broke HTTP/1.1 framing rules.

    ``status`` is the response a server should send before closing (400, 413, 431, 501);
    for a client-side parser it is the status the proxy reports downstream (502).
    """

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


@dataclass(frozen=True, slots=True)
class Rejected:
    """Parsing stopped: the connection must answer ``error.status`` (if it can) and close."""

    error: ProtocolError


Event = RequestHead | ResponseHead | Body | EndOfMessage | Upgraded | Rejected
