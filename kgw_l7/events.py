"""kgw's own HTTP event vocabulary, shared by the HTTP/1 adapter (and later HTTP/2).

The protocol adapters turn bytes into these small immutable records; the proxy never sees
parser callbacks. Header names are lower-case bytes (as in HTTP/2 and as Envoy emits
them on HTTP/1), values are bytes exactly as received.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

Headers = list[tuple[bytes, bytes]]


def _same_kind_eq(self: tuple[Any, ...], other: object) -> bool:
    """Equality for the NamedTuple events below: equal only to the same kind of event
    (plain tuple equality would make ``Body(b"x") == EndOfMessage(b"x")``)."""
    return type(other) is type(self) and tuple.__eq__(self, other)  # type: ignore[arg-type]


def _same_kind_ne(self: tuple[Any, ...], other: object) -> bool:
    return not _same_kind_eq(self, other)


# The four events made for every proxied request (RequestHead, ResponseHead, Body,
# EndOfMessage) are immutable NamedTuples rather than frozen dataclasses: a frozen
# dataclass's __init__ goes through object.__setattr__ once per field (1.3 us for an
# 11-field RequestHead, measured), a NamedTuple is built by tuple.__new__ (0.3 us) and its
# fields are read by C descriptors. Same attribute names, keywords, immutability.

#: How a message body is delimited on the wire.
BodyKind = Literal["none", "length", "chunked", "close"]


class RequestHead(NamedTuple):
    """A parsed request line and header block."""

    method: bytes
    #: The request-target exactly as sent (path and query).
    target: bytes
    #: b"1.1" or b"1.0".
    version: bytes
    #: (lower-case name, value) pairs in arrival order, hop-by-hop headers included.
    headers: tuple[tuple[bytes, bytes], ...]
    #: The Host header without port, lower-case (b"" when absent).
    host: bytes
    #: The Host header as sent (with port), b"" when absent.
    authority: bytes
    keep_alive: bool
    body: BodyKind
    content_length: int | None
    expect_continue: bool
    #: An ``Upgrade`` was requested (e.g. WebSocket).
    upgrade: bool
    #: The bytes being parsed when this request's line began them, so its header block
    #: starts there (the proxy may forward it as received); None otherwise.
    raw: bytes | None = None

    __eq__ = _same_kind_eq
    __ne__ = _same_kind_ne
    __hash__ = tuple.__hash__


class ResponseHead(NamedTuple):
    status: int
    version: bytes
    headers: tuple[tuple[bytes, bytes], ...]
    keep_alive: bool
    body: BodyKind
    content_length: int | None

    __eq__ = _same_kind_eq
    __ne__ = _same_kind_ne
    __hash__ = tuple.__hash__


class Body(NamedTuple):
    data: bytes

    __eq__ = _same_kind_eq
    __ne__ = _same_kind_ne
    __hash__ = tuple.__hash__


class EndOfMessage(NamedTuple):
    #: Trailer fields of a chunked message (lower-case names), usually empty.
    trailers: tuple[tuple[bytes, bytes], ...] = ()

    __eq__ = _same_kind_eq
    __ne__ = _same_kind_ne
    __hash__ = tuple.__hash__


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
