"""The sans-IO HTTP/1 layer, without sockets: whole input, byte by byte, and bad input."""

from __future__ import annotations

import pytest

from kgw_l7.events import (
    Body, EndOfMessage, Rejected, RequestHead, ResponseHead, Upgraded, parse_connection_tokens,
)
from kgw_l7.h1 import (
    RequestReader, ResponseReader, encode_chunk, encode_last_chunk, encode_request_head,
    simple_response,
)

CHUNKED = (b"POST /up?x=1 HTTP/1.1\r\nHost: Example.COM:8080\r\nTransfer-Encoding: chunked\r\n"
           b"Expect: 100-continue\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\nX-Sum: 1\r\n\r\n")


def collapse(events):
    """Merge Body events so whole-input and byte-by-byte runs compare equal."""
    out = []
    for ev in events:
        if isinstance(ev, Body) and out and isinstance(out[-1], Body):
            out[-1] = Body(out[-1].data + ev.data)
        else:
            out.append(ev)
    return out


@pytest.mark.parametrize("step", [None, 1, 7])
def test_chunked_request_whole_and_split(step):
    r = RequestReader()
    if step is None:
        events = r.feed(CHUNKED)
    else:
        events = []
        for i in range(0, len(CHUNKED), step):
            events += r.feed(CHUNKED[i:i + step])
    events = collapse(events)
    head = events[0]
    assert isinstance(head, RequestHead)
    assert head.method == b"POST" and head.target == b"/up?x=1" and head.version == b"1.1"
    assert head.host == b"example.com" and head.authority == b"Example.COM:8080"
    assert head.body == "chunked" and head.expect_continue and head.keep_alive
    assert events[1] == Body(b"hello world")
    assert events[2] == EndOfMessage(((b"x-sum", b"1"),))
    assert len(events) == 3


def test_pipelined_and_http10():
    r = RequestReader()
    events = r.feed(b"GET /a HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi"
                    b"GET /b HTTP/1.0\r\n\r\n")
    heads = [e for e in events if isinstance(e, RequestHead)]
    assert [h.target for h in heads] == [b"/a", b"/b"]
    assert heads[0].body == "length" and heads[0].content_length == 2
    assert heads[1].version == b"1.0" and not heads[1].keep_alive and heads[1].host == b""
    assert sum(isinstance(e, EndOfMessage) for e in events) == 2


def test_ipv6_host_keeps_brackets():
    head = RequestReader().feed(b"GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n")[0]
    assert head.host == b"[::1]"
    head = RequestReader().feed(b"GET / HTTP/1.1\r\nHost: [::1]\r\n\r\n")[0]
    assert head.host == b"[::1]"


def test_upgrade():
    events = RequestReader().feed(b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\n"
                                  b"Upgrade: websocket\r\n\r\nRAW")
    assert events[0].upgrade
    assert events[-1] == Upgraded(b"RAW")


@pytest.mark.parametrize("data,status", [
    (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
    (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\n", 501),
    (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n", 400),
    (b"GET / HTTP/1.1\nHost: a\n\n", 400),
    (b"GET /\x00 HTTP/1.1\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", 400),
    (b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
    (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: "
     b"chunked\r\n\r\n", 400),
])
def test_bad_requests_rejected(data, status):
    events = RequestReader().feed(data)
    assert isinstance(events[-1], Rejected), events
    assert events[-1].error.status == status
    assert not any(isinstance(e, RequestHead) for e in events)


def test_bad_chunk_after_head():
    events = RequestReader().feed(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked"
                                  b"\r\n\r\nzz\r\n")
    assert isinstance(events[0], RequestHead)
    assert isinstance(events[-1], Rejected) and events[-1].error.status == 400


def test_reader_stops_after_rejection():
    r = RequestReader()
    assert isinstance(r.feed(b"BAD\r\n\r\n")[-1], Rejected)
    assert r.feed(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n") == []


def test_header_limits():
    r = RequestReader(max_header_bytes=100)
    ev = r.feed(b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"a" * 200 + b"\r\n\r\n")
    assert ev[-1].error.status == 431
    # A header line that never ends is caught too (bytes buffered in the parser).
    r = RequestReader(max_header_bytes=100)
    assert r.feed(b"GET / HTTP/1.1\r\nX: " + b"a" * 60) == []
    assert r.mid_head
    assert r.feed(b"a" * 60)[-1].error.status == 431
    r = RequestReader(max_headers=3)
    ev = r.feed(b"GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n")
    assert ev[-1].error.status == 431
    # A large body in the same read as the head is not mistaken for a large head.
    r = RequestReader(max_header_bytes=100)
    ev = r.feed(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\n" + b"x" * 1000)
    assert isinstance(ev[0], RequestHead) and isinstance(ev[-1], EndOfMessage)


def test_response_reader_framings():
    rr = ResponseReader()
    ev = rr.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc")
    assert ev[0] == ResponseHead(200, b"1.1", ((b"content-length", b"3"),), True, "length", 3)
    assert ev[1:] == [Body(b"abc"), EndOfMessage()]
    assert rr.reusable and not rr.in_message
    # chunked with trailers, split anywhere
    data = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nT: 1\r\n\r\n"
    rr = ResponseReader()
    ev = []
    for i in range(len(data)):
        ev += rr.feed(data[i:i + 1])
    ev = collapse(ev)
    assert ev[0].body == "chunked" and ev[1] == Body(b"abc")
    assert ev[2] == EndOfMessage(((b"t", b"1"),))
    # close-delimited: completed by eof(), connection not reusable
    rr = ResponseReader()
    ev = rr.feed(b"HTTP/1.1 200 OK\r\n\r\nab")
    assert ev[0].body == "close" and not rr.reusable
    assert rr.eof() == [EndOfMessage()]


def test_response_reader_head_interim_and_truncation():
    rr = ResponseReader()
    rr.expect(head_request=True)
    ev = rr.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n")
    assert ev[0].body == "none" and ev[1] == EndOfMessage() and not rr.reusable
    rr = ResponseReader()
    ev = rr.feed(b"HTTP/1.1 103 Early Hints\r\nLink: x\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n")
    assert [type(e) for e in ev] == [ResponseHead, EndOfMessage] and ev[0].status == 204
    rr = ResponseReader()
    rr.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
    assert isinstance(rr.eof()[0], Rejected)


def test_a_second_response_to_one_request_makes_the_connection_unusable():
    """A response the backend sends unasked (bytes past the end of the one expected) is
    framed like any other, so the connection would look clean: it is not reused."""
    rr = ResponseReader()
    rr.expect(head_request=False)
    rr.feed(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    assert rr.reusable  # (an interim response is not a second one)
    ev = rr.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx")
    assert [type(e) for e in ev] == [ResponseHead, Body, EndOfMessage] and not rr.reusable
    rr = ResponseReader()
    for _ in range(2):  # one response per request: reusable
        rr.expect(head_request=False)
        rr.feed(b"HTTP/1.1 204 No Content\r\n\r\n")
        assert rr.reusable
    rr = ResponseReader()
    assert isinstance(rr.feed(b"HTTP/1.1 abc\r\n\r\n")[-1], Rejected)
    rr = ResponseReader()
    ev = rr.feed(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                 b"Connection: Upgrade\r\n\r\nframes")
    assert ev[0].status == 101 and ev[-1] == Upgraded(b"frames")


def test_encoders_roundtrip():
    head = encode_request_head(b"PUT", b"/x", [(b"host", b"a"), (b"transfer-encoding", b"chunked")])
    data = head + encode_chunk(b"abc") + encode_last_chunk([(b"t", b"v")])
    ev = collapse(RequestReader().feed(data))
    assert ev[0].method == b"PUT" and ev[1] == Body(b"abc")
    assert ev[2] == EndOfMessage(((b"t", b"v"),))
    resp = simple_response(404, b"nope", close=True, extra=[(b"x", b"y")])
    ev = ResponseReader().feed(resp)
    assert ev[0].status == 404 and (b"connection", b"close") in ev[0].headers
    assert ev[1] == Body(b"nope")
    assert parse_connection_tokens([(b"connection", b"close, X-Foo"), (b"a", b"b")]) == {
        b"close", b"x-foo"}


@pytest.mark.parametrize("step", [None, 1, 5])
def test_request_version_whole_split_and_pipelined(step):
    """The version comes from the request line however the bytes arrive (the reader reads
    it off the data when the line starts a feed, from llhttp otherwise)."""
    data = (b"GET /a HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n"
            b"GET /b HTTP/1.1\r\nHost: a\r\n\r\n" b"GET /c HTTP/1.0\r\n\r\n")
    r = RequestReader()
    events = []
    if step is None:
        events = r.feed(data)
    else:
        for i in range(0, len(data), step):
            events += r.feed(data[i:i + step])
    heads = [e for e in events if isinstance(e, RequestHead)]
    assert [(h.target, h.version, h.keep_alive) for h in heads] == [
        (b"/a", b"1.0", True), (b"/b", b"1.1", True), (b"/c", b"1.0", False)]


def test_request_version_after_skipped_empty_lines():
    """llhttp skips empty lines before a request line, so the line does not start the
    data: the version must not be read at the offset the line would have had (here that
    offset holds "HTTP/1.1" from the target)."""
    [head, _] = RequestReader().feed(b"\r\n" * 5 + b"GET /HTTP/1.1x HTTP/1.0\r\n\r\n")
    assert isinstance(head, RequestHead)
    assert (head.target, head.version, head.keep_alive) == (b"/HTTP/1.1x", b"1.0", False)


def test_unsupported_version_rejected():
    [ev] = RequestReader().feed(b"GET / HTTP/2.0\r\nHost: a\r\n\r\n")
    assert isinstance(ev, Rejected) and ev.error.status == 505


RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"


@pytest.mark.parametrize("data, whole", [
    (RESPONSE, True),
    (b"HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n", True),
    # re-encoded: framing or hop-by-hop fields change on the way to the client
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", False),
    (b"HTTP/1.1 200 OK\r\nConnection: x-a\r\nX-A: 1\r\nContent-Length: 5\r\n\r\nhello", False),
    (b"HTTP/1.1 200 OK\r\nTE: trailers\r\nContent-Length: 5\r\n\r\nhello", False),
    (b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nhello", False),
    # not exactly one message
    (b"HTTP/1.1 100 Continue\r\n\r\n" + RESPONSE, False),
    (RESPONSE + b"HTTP/1.1 200 OK\r\n", False),
    (RESPONSE[:-1], False),
])
def test_response_whole_only_for_one_clean_message(data, whole):
    rr = ResponseReader()
    rr.expect(False)
    events = rr.feed(data)
    assert (rr.whole == data) is whole
    assert isinstance(events[0], ResponseHead)
    assert events[0].version == (b"1.0" if data.startswith(b"HTTP/1.0") else b"1.1")


@pytest.mark.parametrize("data, relayed", [
    # nginx's spelling, last field
    (b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Length: 5\r\n"
     b"Connection: keep-alive\r\n\r\nhello",
     b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Length: 5\r\n\r\nhello"),
    # Node.js: Connection and Keep-Alive, first fields
    (b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nX-A: 1\r\n"
     b"Content-Length: 0\r\n\r\n",
     b"HTTP/1.1 200 OK\r\nX-A: 1\r\nContent-Length: 0\r\n\r\n"),
    # close: the backend connection ends, the client's does not
    (b"HTTP/1.1 200 OK\r\nconnection: Close\r\nContent-Length: 5\r\n\r\nhello",
     b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"),
    # two fields of one name, in other spellings; the body quotes one of them
    (b"HTTP/1.1 200 OK\r\nCONNECTION: keep-alive\r\nX-A: 1\r\nconnection: keep-alive\r\n"
     b"Content-Length: 21\r\n\r\n\r\nConnection: close\r\n",
     b"HTTP/1.1 200 OK\r\nX-A: 1\r\nContent-Length: 21\r\n\r\n\r\nConnection: close\r\n"),
    # the usual spelling only in the body: found in the head in another spelling
    (b"HTTP/1.1 200 OK\r\nconnection:keep-alive\r\nContent-Length: 21\r\n\r\n"
     b"\r\nConnection: close\r\n",
     b"HTTP/1.1 200 OK\r\nContent-Length: 21\r\n\r\n\r\nConnection: close\r\n"),
    (b"HTTP/1.1 304 Not Modified\r\nETag: 1\r\nConnection: keep-alive\r\n\r\n",
     b"HTTP/1.1 304 Not Modified\r\nETag: 1\r\n\r\n"),
    # a list of tokens, none of them a field name
    (b"HTTP/1.1 200 OK\r\nConnection: Keep-Alive , close\r\nContent-Length: 0\r\n\r\n",
     b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
])
def test_response_whole_without_connection_fields(data, relayed):
    """Connection (listing only keep-alive/close) and Keep-Alive describe the backend
    connection: the response is relayed as received with their lines cut out."""
    rr = ResponseReader()
    rr.expect(False)
    [head, *_] = rr.feed(data)
    assert rr.whole == relayed
    assert len(head.headers) == data.split(b"\r\n\r\n")[0].count(b"\r\n")  # all kept


def test_response_whole_never_for_head_or_split_input():
    rr = ResponseReader()
    rr.expect(True)
    rr.feed(RESPONSE[:-5])
    assert rr.whole is None
    rr = ResponseReader()
    rr.expect(False)
    rr.feed(RESPONSE[:20])
    assert rr.whole is None
    rr.feed(RESPONSE[20:])
    assert rr.whole is None  # the message did not begin in this piece
    rr.expect(False)
    rr.feed(RESPONSE)
    assert rr.whole == RESPONSE  # the next one, whole, on the same reader


@pytest.mark.parametrize("request_head", [
    b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET / HTTP/1.0\r\n\r\n",
    b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nProxy-Connection: close\r\n\r\n",
    b"GET / HTTP/1.0\r\nProxy-Connection: keep-alive\r\n\r\n",
    b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n",
    # (h2c alone is the exception: served as HTTP/1.1, see test_h2c_upgrade_is_served_as_http11)
    b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\nUpgrade: foo/2\r\n\r\n",
    b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
])
def test_keep_alive_and_upgrade_as_llhttp_says(request_head):
    """RequestHead.keep_alive/upgrade agree with llhttp's own answers, also where the
    reader answers without asking it (no Connection or Upgrade field, not CONNECT)."""
    import httptools

    class Probe:
        def on_headers_complete(self):
            self.answer = (parser.should_keep_alive(), parser.should_upgrade())

    probe = Probe()
    parser = httptools.HttpRequestParser(probe)
    try:
        parser.feed_data(request_head)
    except httptools.HttpParserUpgrade:
        pass
    [head, *_] = RequestReader().feed(request_head)
    assert (head.keep_alive, head.upgrade) == probe.answer


H2C = (b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
       b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n")


@pytest.mark.parametrize("step", [None, 1, 5])
@pytest.mark.parametrize("framing,body", [
    (b"", b""),
    (b"Content-Length: 5\r\n", b"hello"),
    (b"Transfer-Encoding: chunked\r\n", b"5\r\nhello\r\n0\r\n\r\n"),
])
def test_h2c_upgrade_is_served_as_http11(step, framing, body):
    """curl --http2 asks for h2c; until HTTP/2 exists the request is served as the HTTP/1.1
    request it also is (RFC 9113 §3.2): no Upgraded event, its body, and the requests
    pipelined after it."""
    data = (b"POST /up HTTP/1.1\r\nHost: a\r\n" + framing + H2C + b"\r\n" + body
            + b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n")
    r = RequestReader()
    if step is None:
        events = r.feed(data)
    else:
        events = []
        for i in range(0, len(data), step):
            events += r.feed(data[i:i + step])
    events = collapse(events)
    assert not any(isinstance(e, (Upgraded, Rejected)) for e in events), events
    heads = [e for e in events if isinstance(e, RequestHead)]
    assert [h.target for h in heads] == [b"/up", b"/next"]
    assert not heads[0].upgrade and heads[0].keep_alive
    bodies = [e.data for e in events if isinstance(e, Body)]
    assert bodies == ([b"hello"] if body else [])
    assert [type(e).__name__ for e in events if not isinstance(e, Body)] == [
        "RequestHead", "EndOfMessage", "RequestHead", "EndOfMessage"]


def test_other_upgrades_still_upgrade():
    events = RequestReader().feed(b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\n"
                                  b"Upgrade: websocket\r\n\r\nrest")
    assert events[0].upgrade and events[-1] == Upgraded(b"rest")
    events = RequestReader().feed(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\n"
                                  b"Upgrade: h2c, websocket\r\n\r\n")
    assert events[0].upgrade


def test_http2_preface_is_rejected_with_505():
    r = RequestReader()
    events = r.feed(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04\x00\x00\x00\x00\x00")
    assert len(events) == 1 and isinstance(events[0], Rejected)
    assert events[0].error.status == 505 and "HTTP/2" in events[0].error.reason
    assert "Pause" not in events[0].error.reason
    assert r.http2_preface
    r = RequestReader()
    assert r.feed(b"PRI * HTTP/1.1\r\nHost: a\r\n\r\n")[0].error.status == 400
    assert not r.http2_preface


def test_http2_refusal_is_a_goaway_http_1_1_required():
    import h2.config
    import h2.connection
    import h2.events

    from kgw_l7.h1 import http2_refusal

    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    client.initiate_connection()
    events = client.receive_data(http2_refusal())
    goaway = [e for e in events if isinstance(e, h2.events.ConnectionTerminated)]
    assert goaway and goaway[0].error_code == 0xd  # HTTP_1_1_REQUIRED
    assert b"HTTP/1.1" in goaway[0].additional_data
