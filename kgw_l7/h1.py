"""HTTP/1.1 without I/O: an adapter around httptools (llhttp) and the encoders.

``RequestReader`` (server side) and ``ResponseReader`` (client side) take bytes and return
kgw events (``kgw_l7.events``); nothing here touches a socket, so the proxy's protocols only
move bytes and tests can drive the parsers directly.

llhttp already rejects the classic request-smuggling shapes (Content-Length together with
Transfer-Encoding, duplicate Content-Length, bad chunk sizes, bare LF, whitespace before
a colon, obs-fold). On top of it this module enforces what llhttp leaves to the
application: a bounded header block, a single Host, a known Transfer-Encoding, and a
supported HTTP version.

HTTP/2 is served by ``kgw_l7.downstream_h2``; a client connection reaches it by ALPN, by
the HTTP/2 preface (``kgw_l7.proxy`` looks for it before this reader sees the bytes), or
by ``Upgrade: h2c``. A reader made with ``h2c_upgrade=True`` reports a request that can
be upgraded (asking h2c alone, one HTTP2-Settings field, no body) as ``h2c_head`` and an
``Upgraded`` event with the bytes after it, instead of a ``RequestHead``; any other
request asking for h2c is served as the HTTP/1.1 request it also is, the upgrade
ignored, as RFC 9113 §3.2 lets a server do. A preface later in a connection is rejected
(``RequestReader.http2_preface``) and answered with an HTTP/2 GOAWAY saying
HTTP_1_1_REQUIRED (``http2_refusal``), which an HTTP/2 client understands, instead of
HTTP/1.1 bytes it cannot parse.
"""

from __future__ import annotations

import http
from collections.abc import Iterable

import httptools

from kgw_l7.events import (
    HOP_BY_HOP, BodyKind, EndOfMessage, Event, ProtocolError, Rejected, RequestHead, Upgraded,
    body_event, connection_tokens, request_head, response_head,
)

#: Header block limits. nginx defaults to 8 KiB per line (large_client_header_buffers
#: 4 x 8k = 32 KiB in total), Envoy to 60 KiB and 100 headers; we take Envoy's numbers so
#: that anything Envoy-based gateways accept is accepted here too.
MAX_HEADER_BYTES = 60 * 1024
MAX_HEADERS = 100

_NO_TRAILERS = EndOfMessage()


#: Response header names that on_headers_complete looks at (framing and hop-by-hop).
_RESPONSE_FRAMING = HOP_BY_HOP | {b"content-length"}
#: Hop-by-hop response fields that leave a whole response relayable once their lines are
#: cut out: they describe the backend connection only (nginx and Node.js backends send
#: "Connection: keep-alive" on every response). The others change framing or protocol.
_CUTTABLE = frozenset({b"connection", b"keep-alive", b"proxy-connection"})
#: Connection tokens that name no other field (any other token makes that field
#: hop-by-hop too, and the head is rebuilt).
_PLAIN_CONNECTION = frozenset({b"keep-alive", b"close"})
#: The usual whole values of such a Connection field (no split needed).
_PLAIN_CONNECTION_VALUES = frozenset({b"keep-alive", b"Keep-Alive", b"close", b"Close"})
#: How fields are usually spelled, as the line that starts each (see usual_spelling).
_USUAL_SPELLING = {b"connection": b"\r\nConnection:", b"keep-alive": b"\r\nKeep-Alive:",
                   b"proxy-connection": b"\r\nProxy-Connection:"}
#: Bound of the spellings remembered (names come from the configuration, but a config
#: changes: the table is emptied rather than let grow).
_SPELLINGS_KEPT = 256

#: Request header names that on_headers_complete looks at: one set lookup skips the rest.
_REQUEST_FRAMING = frozenset({b"host", b"content-length", b"transfer-encoding", b"expect",
                              b"connection", b"proxy-connection", b"upgrade"})


class _Stop(Exception):
    """Raised inside a parser callback to stop parsing (the rest of the data is unused)."""


#: What a request that asked for h2c is framed as once llhttp stopped at its upgrade (see
#: RequestReader._h2c): a head that is not reported, whose framing field is then added.
_H2C_BODY_HEAD = b"POST / HTTP/1.1\r\nHost: h2c\r\n"


class RequestReader:
    """Server side: bytes from a client in, request events out."""

    __slots__ = ("_parser", "_events", "_url", "_headers", "_in_head", "_head_bytes",
                 "_header_count", "_trailers", "_failed", "max_header_bytes", "max_headers",
                 "_hdr_size", "_fresh", "_feed", "_method", "_keep_alive", "_upgrade",
                 "_h2c", "_hidden", "http2_preface", "h2c_upgrade", "h2c_head",
                 "h2c_settings")

    def __init__(self, max_header_bytes: int = MAX_HEADER_BYTES,
                 max_headers: int = MAX_HEADERS, h2c_upgrade: bool = False) -> None:
        self._parser = parser = httptools.HttpRequestParser(self)
        # The parser's methods, bound once: a call per request each, without the lookup.
        self._feed = parser.feed_data
        self._method = parser.get_method
        self._keep_alive = parser.should_keep_alive
        self._upgrade = parser.should_upgrade
        self._events: list[Event] = []
        self._url: list[bytes] = []
        self._headers: list[tuple[bytes, bytes]] = []
        self._trailers: list[tuple[bytes, bytes]] | None = None
        self._in_head = True
        self._head_bytes = 0
        self._header_count = 0
        self._hdr_size = 0
        self._failed = False
        #: The data being fed when a request line starts at its first byte (see _version).
        self._fresh: bytes | None = None
        self.max_header_bytes = max_header_bytes
        self.max_headers = max_headers
        #: The request just parsed asked to upgrade to h2c only; llhttp stops at such a
        #: request as at any upgrade and skips its body. Served as HTTP/1.1 instead: the
        #: bytes after its head are parsed on, its body (if any) framed by the head held
        #: here, fed to the parser as if it had come instead of the upgrade request.
        self._h2c: bytes | None = None
        #: The head being parsed is that framing head: its callbacks report nothing.
        self._hidden = False
        #: The connection opened with the HTTP/2 preface (rejected with status 505).
        self.http2_preface = False
        #: Report requests that can be upgraded to h2c (see the module docstring): the
        #: head (not reported as an event) and its HTTP2-Settings value.
        self.h2c_upgrade = h2c_upgrade
        self.h2c_head: RequestHead | None = None
        self.h2c_settings: bytes | None = None

    @property
    def in_head(self) -> bool:
        """True while a header block is (possibly) being received: header-read timeout."""
        return self._in_head

    @property
    def mid_head(self) -> bool:
        """True when part of a header block has arrived but not all of it."""
        return self._in_head and self._head_bytes > 0

    def feed(self, data: bytes) -> list[Event]:
        """Parse ``data``; returns the events it completed (possibly none)."""
        if self._failed:
            return []
        events = self._events = []
        if self._in_head:
            self._fresh = data if not self._head_bytes else None
            self._head_bytes += len(data)
        try:
            self._feed(data)
        except httptools.HttpParserUpgrade as exc:
            self._upgraded(data, exc)
        except httptools.HttpParserError as exc:
            self._parse_error(exc)
        else:
            if self._in_head and self._head_bytes > self.max_header_bytes:
                self._fail(ProtocolError("request header block too large", 431))
        return events

    def _upgraded(self, data: bytes, exc: Exception) -> None:
        """llhttp stopped at an upgrade: what follows is another protocol's, unless the
        request asked for h2c alone, served as HTTP/1.1 (see ``_h2c``)."""
        offset = exc.args[0] if exc.args else len(data)
        framing = self._h2c
        if framing is None:
            self._events.append(Upgraded(bytes(data[offset:])))
            self._failed = True  # the rest of the connection is not HTTP/1
            return
        # The parser resumes after the upgrade (httptools does on the next feed), with
        # the request's body framed by a hidden head, then whatever the client pipelined.
        self._h2c = None
        if framing:
            self._hidden = True
            self._more(framing)
        if offset < len(data) and not self._failed:
            self._more(data[offset:])

    def _more(self, data: bytes) -> None:
        """Parse on after an ignored h2c upgrade (feed's steps, for the rare path)."""
        try:
            self._feed(data)
        except httptools.HttpParserUpgrade as exc:
            self._upgraded(data, exc)
        except httptools.HttpParserError as exc:
            self._parse_error(exc)
        else:
            if self._in_head and self._head_bytes > self.max_header_bytes:
                self._fail(ProtocolError("request header block too large", 431))

    def _parse_error(self, exc: Exception) -> None:
        if isinstance(exc, httptools.HttpParserCallbackError):
            self._fail(exc.__context__ if isinstance(exc.__context__, ProtocolError)
                       else ProtocolError("bad request"))
        elif isinstance(exc, httptools.HttpParserInvalidMethodError):
            self._fail(ProtocolError("invalid method"))
        elif isinstance(exc, httptools.HttpParserInvalidURLError):
            self._fail(ProtocolError("invalid request target"))
        elif self._method() == b"PRI" and self._parser.get_http_version() == "2.0":
            self.http2_preface = True
            self._fail(ProtocolError("HTTP/2 connection preface on an HTTP/1.1 listener "
                                     "(HTTP/2 is not served yet)", 505))
        else:
            self._fail(ProtocolError(str(exc) or "malformed request"))

    def _fail(self, error: ProtocolError) -> None:
        self._failed = True
        self._events.append(Rejected(error))

    # -- httptools callbacks ------------------------------------------------------------
    # No on_message_begin: the per-message state is reset in on_message_complete (and
    # __init__), which saves one parser -> Python callback per request.

    def on_url(self, url: bytes) -> None:
        if self._hidden:
            return
        self._url.append(url)
        self._hdr_size += len(url)
        if self._hdr_size > self.max_header_bytes:
            raise ProtocolError("request target too long", 414)

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._hidden:
            return
        self._header_count += 1
        if self._header_count > self.max_headers:
            raise ProtocolError("too many request headers", 431)
        self._hdr_size += len(name) + len(value) + 4
        if self._hdr_size > self.max_header_bytes:
            raise ProtocolError("request header block too large", 431)
        if self._trailers is not None:
            self._trailers.append((name.lower(), value))
        else:
            self._headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        if self._hidden:  # the framing head of an h2c request's body: nothing to report
            self._hidden = False
            self._in_head = False
            self._head_bytes = 0
            self._trailers = []
            return
        method = self._method()
        raw, self._fresh = self._fresh, None
        v = self._version(raw, method)
        if v is None:
            raise ProtocolError("unsupported HTTP version", 505)
        host = authority = None
        body: BodyKind = "none"
        length = None
        expect = False
        # A field that llhttp reads for keep-alive or upgrade (see below).
        asked = False
        # An h2c upgrade this reader takes (see the module docstring).
        h2c_settings = None
        framing = _REQUEST_FRAMING
        for name, value in self._headers:
            if name not in framing:
                continue
            if name == b"host":
                if authority is not None:
                    raise ProtocolError("more than one Host header")
                authority = value.strip()
            elif name == b"content-length":
                length = int(value)  # llhttp validated digits and duplicates
                body = "length" if length else "none"
            elif name == b"transfer-encoding":
                if value.strip().lower() != b"chunked":
                    raise ProtocolError("unsupported transfer-encoding", 501)
                if body == "chunked":  # "chunked" twice is "chunked, chunked": invalid
                    raise ProtocolError("repeated transfer-encoding")
                body = "chunked"
            elif name == b"expect":
                expect = value.strip().lower() == b"100-continue"
            else:  # Connection, Proxy-Connection, Upgrade
                asked = True
        if asked or method == b"CONNECT":
            keep_alive = self._keep_alive()
            upgrade = self._upgrade()
            if upgrade and method != b"CONNECT" and _h2c_only(self._headers):
                # Served as HTTP/1.1 (RFC 9113 §3.2): llhttp stops here all the same
                # and skips the body, so its framing is kept for _parse.
                upgrade = False
                if body == "length" and length is not None:
                    self._h2c = _H2C_BODY_HEAD + b"Content-Length: %d\r\n\r\n" % length
                elif body == "chunked":
                    self._h2c = _H2C_BODY_HEAD + b"Transfer-Encoding: chunked\r\n\r\n"
                else:
                    self._h2c = b""
                    if self.h2c_upgrade:
                        h2c_settings = _h2c_settings(self._headers)
        else:
            # What llhttp answers for a request without those fields (its keep-alive
            # and upgrade flags come from them only), without two calls per request.
            keep_alive = v == b"1.1"
            upgrade = False
        if authority is None:
            if v == b"1.1":
                raise ProtocolError("missing Host header")
            authority = b""
        host = authority
        if not host.endswith(b"]"):  # strip the port, keep IPv6 literals intact
            colon = host.rfind(b":")
            if colon >= 0:
                host = host[:colon]
        self._in_head = False
        self._head_bytes = 0
        self._trailers = []
        url = self._url
        # Positional arguments: keywords cost more here.
        head = request_head(
            method, url[0] if len(url) == 1 else b"".join(url), v,
            tuple(self._headers), host.lower(), authority, keep_alive,
            body, length, expect and body != "none", upgrade, raw)
        if h2c_settings is not None:
            # Upgraded: what follows the head is HTTP/2 (kgw_l7.proxy switches).
            self._h2c = None
            self.h2c_head = head
            self.h2c_settings = h2c_settings
            return
        self._events.append(head)

    def _version(self, data: bytes | None, method: bytes) -> bytes | None:
        """b"1.1", b"1.0" or None (unsupported). httptools only offers
        ``get_http_version()``, which formats a str per call. When ``data`` starts with
        this request's line and the target came in one piece, the version sits right after
        "METHOD SP target SP" (llhttp has validated that line); requiring the CRLF after it
        rules out a line that llhttp found after skipped empty lines."""
        url = self._url
        if data is not None and len(url) == 1:
            at = len(method) + len(url[0]) + 2
            if data.startswith(b"HTTP/1.1\r\n", at):
                return b"1.1"
            if data.startswith(b"HTTP/1.0\r\n", at):
                return b"1.0"
        version = self._parser.get_http_version()
        if version == "1.1":
            return b"1.1"
        if version == "1.0":
            return b"1.0"
        return None

    def on_body(self, body: bytes) -> None:
        self._events.append(body_event(body))

    def on_message_complete(self) -> None:
        if not self._h2c:  # (an h2c request with a body ends after its framed body)
            self._events.append(EndOfMessage(tuple(self._trailers))
                                if self._trailers else _NO_TRAILERS)
        self._trailers = None
        self._in_head = True
        self._head_bytes = 0
        self._url = []
        self._headers = []
        self._header_count = 0
        self._hdr_size = 0


def _h2c_settings(headers: list[tuple[bytes, bytes]]) -> bytes | None:
    """The HTTP2-Settings value of a request that may be upgraded to h2c (RFC 7540 §3.2:
    exactly one such field, named in Connection), or None."""
    values = [v for n, v in headers if n == b"http2-settings"]
    if len(values) != 1:
        return None
    if b"http2-settings" not in {t for n, v in headers if n == b"connection"
                                 for t in connection_tokens(v)}:
        return None
    return values[0].strip()


def _h2c_only(headers: list[tuple[bytes, bytes]]) -> bool:
    """Do the request's Upgrade fields name h2c and nothing else?"""
    tokens: set[bytes] = set()
    for name, value in headers:
        if name == b"upgrade":
            tokens |= connection_tokens(value)
    return tokens == {b"h2c"}


class ResponseReader:
    """Client side: bytes from an upstream in, response events out.

    Call ``expect(head_request)`` before each request so a response to HEAD is known to
    have no body (llhttp cannot be told; the reader stops after the header block and the
    connection is then not reused).
    """

    __slots__ = ("_parser", "_events", "_headers", "_trailers", "_head_request", "_body",
                 "in_message", "_failed", "reusable", "_head_bytes", "got_head", "whole",
                 "_begins", "_plain", "_fresh", "_cut", "_length", "_feed", "_status",
                 "_keep_alive", "_finals")

    def __init__(self) -> None:
        self._parser = parser = httptools.HttpResponseParser(self)
        self._feed = parser.feed_data  # bound once, as in RequestReader
        self._status = parser.get_status_code
        self._keep_alive = parser.should_keep_alive
        self._events: list[Event] = []
        self._headers: list[tuple[bytes, bytes]] = []
        self._trailers: list[tuple[bytes, bytes]] | None = None
        self._head_request = False
        self._body: BodyKind = "none"
        #: A response has begun and not ended (the connection is not reusable now).
        self.in_message = False
        #: The current response's head has been parsed.
        self.got_head = False
        self._failed = False
        self._head_bytes = 0
        #: False once the connection cannot carry another exchange.
        self.reusable = True
        #: The bytes of the last ``feed`` when they were exactly one whole final HTTP/1.1
        #: response, framed by Content-Length (or without a body), with no hop-by-hop
        #: field but those in _CUTTABLE, whose lines are cut out: such a response can be
        #: relayed as received, without re-encoding.
        self.whole: bytes | None = None
        self._begins = 0
        self._plain = False
        #: The data being fed starts with an HTTP/1.1 status line.
        self._fresh = False
        #: Names of the _CUTTABLE fields of the current response (None: there are none).
        self._cut: list[bytes] | None = None
        #: The current response's body length when it is framed by Content-Length, else 0.
        self._length = 0
        #: Final responses begun since the request was sent (``expect``): a second one
        #: is bytes past the end of the response, and the connection is not reused.
        self._finals = 0

    def expect(self, head_request: bool) -> None:
        self._head_request = head_request
        self._finals = 0

    def feed(self, data: bytes) -> list[Event]:
        if self._failed:
            return []
        events = self._events = []
        if not self.got_head:
            self._head_bytes += len(data)
        self.whole = None
        self._begins = 0
        self._fresh = data.startswith(b"HTTP/1.1 ")
        try:
            self._feed(data)
        except httptools.HttpParserUpgrade as exc:
            offset = exc.args[0] if exc.args else len(data)
            events.append(Upgraded(bytes(data[offset:])))
            self._failed = True
            self.reusable = False
        except httptools.HttpParserCallbackError as exc:
            if isinstance(exc.__context__, _Stop):
                self._failed = True
            else:
                self._fail(exc.__context__ if isinstance(exc.__context__, ProtocolError)
                           else ProtocolError("bad response", 502))
        except httptools.HttpParserError as exc:
            self._fail(ProtocolError(f"malformed response: {exc}", 502))
        else:
            if self._begins == 1 and self._plain and not self.in_message and self._fresh:
                # One message began in these bytes, at their start (the status line),
                # and ended at their end (nothing followed it: that would have begun
                # another message).
                cut = self._cut
                if cut is None:
                    self.whole = data
                else:
                    self.whole = without_fields(data, cut, len(data) - self._length)
            elif not self.got_head and self._head_bytes > MAX_HEADER_BYTES * 2:
                self._fail(ProtocolError("response header block too large", 502))
        return events

    def eof(self) -> list[Event]:
        """The upstream closed: completes a close-delimited body, or reports truncation."""
        self.reusable = False
        if self._failed or not self.in_message:
            return []
        self._failed = True
        if self.got_head and self._body == "close":
            self.in_message = False
            return [EndOfMessage()]
        return [Rejected(ProtocolError("upstream closed mid-response", 502))]

    def _fail(self, error: ProtocolError) -> None:
        self._failed = True
        self.reusable = False
        self._events.append(Rejected(error))

    # -- httptools callbacks ------------------------------------------------------------
    # on_message_begin stays (unlike the request side): it is what tells a connection
    # whose backend sent bytes past the end of a response from a clean one (never pooled).
    def on_message_begin(self) -> None:
        self.in_message = True
        self._headers = []
        self._trailers = None
        self._begins += 1
        self._plain = False
        self._cut = None

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._trailers is not None:
            self._trailers.append((name.lower(), value))
        else:
            self._headers.append((name.lower(), value))
            if len(self._headers) > MAX_HEADERS * 2:
                raise ProtocolError("too many response headers", 502)

    def on_headers_complete(self) -> None:
        status = self._status()
        self._trailers = []
        if 100 <= status < 200 and status != 101:
            return  # interim response (100, 103): dropped, the final one follows
        self._finals += 1
        if self._finals > 1:
            self.reusable = False
        body: BodyKind = "close"
        length = None
        hop = False
        cut = None
        for name, value in self._headers:
            if name in _RESPONSE_FRAMING:
                if name == b"content-length":
                    length = int(value)
                    body = "length"
                elif name in _CUTTABLE and (name != b"connection" or _plain_connection(value)):
                    if cut is None:
                        cut = [name]
                    else:
                        cut.append(name)
                else:
                    hop = True
                    if name == b"transfer-encoding":
                        body = "chunked"
        self._cut = cut
        if status in (204, 304, 101) or self._head_request or (body == "length" and length == 0):
            body = "none"
        self._length = length if body == "length" and length is not None else 0
        self._plain = not hop and body != "close" and body != "chunked" and status != 101 \
            and not self._head_request
        self._body = body
        self.got_head = True
        if self._begins == 1 and self._fresh:
            # The status line is the first line of the data being fed (see feed):
            # cheaper than httptools' get_http_version(), which formats a str.
            version = b"1.1"
        else:
            version = b"1.1" if self._parser.get_http_version() == "1.1" else b"1.0"
        keep_alive = self._keep_alive() and body != "close"
        if not keep_alive:
            self.reusable = False
        self._events.append(response_head(status, version, tuple(self._headers), keep_alive,
                                          body, length))
        if self._head_request:
            self.reusable = False
            self.in_message = False
            self._events.append(EndOfMessage())
            raise _Stop()

    def on_body(self, body: bytes) -> None:
        self._events.append(body_event(body))

    def on_message_complete(self) -> None:
        if not self.got_head:
            return  # end of an interim response
        self.in_message = False
        self.got_head = False
        self._head_bytes = 0
        self._events.append(EndOfMessage(tuple(self._trailers))
                            if self._trailers else _NO_TRAILERS)
        self._trailers = None


def _plain_connection(value: bytes) -> bool:
    """A Connection field that lists no other field name (only keep-alive or close)."""
    return value in _PLAIN_CONNECTION_VALUES or connection_tokens(value) <= _PLAIN_CONNECTION


def usual_spelling(name: bytes) -> bytes:
    """``CRLF Name:`` for a lower-case field name, as clients usually spell it (each
    hyphen-separated word capitalized): the needle that finds the field's line in a head
    llhttp accepted, without a lower-case copy of the head."""
    spelled = _USUAL_SPELLING.get(name)
    if spelled is None:
        if len(_USUAL_SPELLING) >= _SPELLINGS_KEPT:
            _USUAL_SPELLING.clear()
        spelled = _USUAL_SPELLING[name] = b"\r\n" + name.title() + b":"
    return spelled


def without_fields(data: bytes, names: list[bytes], head_size: int) -> bytes:
    """``data``, a message whose head (its first ``head_size`` bytes) llhttp accepted,
    without the header fields ``names`` (lower-case, one entry per field). Accepted means
    each field is one line ("CRLF name:" with no space before the colon, no CR or LF
    inside, no obs-fold), so a field's line runs from that CRLF to the next one."""
    if len(names) == 1:
        # One field, looked for with its usual spelling first: no lower-case copy. It is
        # the only field of that name, so a match inside the head is that field.
        at = data.find(usual_spelling(names[0]), 0, head_size)
        if at >= 0:
            return data[:at] + data[data.find(b"\r\n", at + 2):]
    low = data[:head_size].lower()
    spans = []
    for name in set(names):
        pattern = b"\r\n" + name + b":"
        at = low.find(pattern)
        while at >= 0:
            stop = low.find(b"\r\n", at + 2)
            spans.append((at, stop))
            at = low.find(pattern, stop)
    spans.sort()
    parts = []
    pos = 0
    for at, stop in spans:
        parts.append(data[pos:at])
        pos = stop
    parts.append(data[pos:])
    return b"".join(parts)


# -- encoders ---------------------------------------------------------------------------

_STATUS_LINES = {
    s.value: b"HTTP/1.1 %d %s\r\n" % (s.value, s.phrase.encode()) for s in http.HTTPStatus
}


def status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    if line is None:
        line = b"HTTP/1.1 %d Unknown\r\n" % status
    return line


def encode_headers(headers: Iterable[tuple[bytes, bytes]]) -> bytes:
    # bytes.join on the (name, value) pair is ~2x faster than %-formatting each line.
    lines = [b": ".join(hv) for hv in headers]
    return b"\r\n".join(lines) + b"\r\n" if lines else b""


def encode_request_head(method: bytes, target: bytes,
                        headers: Iterable[tuple[bytes, bytes]]) -> bytes:
    # One join for the whole head (no intermediate header-block bytes object).
    lines = [b": ".join(hv) for hv in headers]
    lines.append(b"\r\n")
    return b"%s %s HTTP/1.1\r\n" % (method, target) + b"\r\n".join(lines)


def encode_response_head(status: int, headers: Iterable[tuple[bytes, bytes]]) -> bytes:
    line = _STATUS_LINES.get(status)
    if line is None:
        line = b"HTTP/1.1 %d Unknown\r\n" % status
    lines = [b": ".join(hv) for hv in headers]
    lines.append(b"\r\n")
    return line + b"\r\n".join(lines)


def encode_chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def encode_last_chunk(trailers: Iterable[tuple[bytes, bytes]] = ()) -> bytes:
    return b"0\r\n%s\r\n" % encode_headers(trailers)


def simple_response(status: int, body: bytes = b"", close: bool = False,
                    extra: Iterable[tuple[bytes, bytes]] = (),
                    content_type: bytes = b"text/plain") -> bytes:
    """A complete response the proxy answers by itself (errors, redirects, CORS)."""
    headers = list(extra)
    if body:
        headers.append((b"content-type", content_type))
    headers.append((b"content-length", b"%d" % len(body)))
    if close:
        headers.append((b"connection", b"close"))
    return encode_response_head(status, headers) + body


_HTTP2_REFUSAL: bytes | None = None


def http2_refusal() -> bytes:
    """What a connection that opened with the HTTP/2 preface is answered: the server's
    SETTINGS and a GOAWAY with HTTP_1_1_REQUIRED (RFC 9113 §7) that says why, made by the
    h2 library, which an HTTP/2 client reports as such ("received GOAWAY, error=13")."""
    global _HTTP2_REFUSAL
    if _HTTP2_REFUSAL is None:
        import h2.config
        import h2.connection
        import h2.errors

        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        conn.initiate_connection()
        conn.close_connection(error_code=h2.errors.ErrorCodes.HTTP_1_1_REQUIRED,
                              additional_data=b"HTTP/2 is not served here yet; use HTTP/1.1")
        _HTTP2_REFUSAL = conn.data_to_send()
    return _HTTP2_REFUSAL
