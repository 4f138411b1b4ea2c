"""The PROXY protocol parser and encoder (kgw_l7.proxyproto): table-tested, whole and
byte by byte, with malformed headers."""

from __future__ import annotations

import struct

import pytest

from kgw_l7.proxyproto import (
    MAX_V2_PAYLOAD, V2_SIGNATURE, ProxyHeader, ProxyProtocolError, encode_v1, encode_v2, parse,
)

SIG = V2_SIGNATURE


def v2(cmd: int, fam: int, body: bytes, length: int | None = None) -> bytes:
    return SIG + bytes([cmd, fam]) + struct.pack("!H", len(body) if length is None
                                                 else length) + body


V4_BODY = bytes([192, 0, 2, 1, 10, 0, 0, 1]) + struct.pack("!HH", 56324, 443)
V6_BODY = (bytes.fromhex("20010db8000000000000000000000001") +
           bytes.fromhex("20010db8000000000000000000000002") + struct.pack("!HH", 1, 80))

GOOD = [
    ("v1 tcp4", b"PROXY TCP4 192.0.2.1 10.0.0.1 56324 443\r\n",
     ProxyHeader(1, 41, ("192.0.2.1", 56324), ("10.0.0.1", 443))),
    ("v1 tcp6", b"PROXY TCP6 2001:db8::1 2001:db8::2 1 80\r\n",
     ProxyHeader(1, 41, ("2001:db8::1", 1), ("2001:db8::2", 80))),
    ("v1 unknown", b"PROXY UNKNOWN\r\n", ProxyHeader(1, 15)),
    ("v1 unknown with fields", b"PROXY UNKNOWN ffff:f...f:ffff 1 2 3\r\n", ProxyHeader(1, 37)),
    ("v1 longest line", b"PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
     b"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n",
     ProxyHeader(1, 104, ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535),
                 ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535))),
    ("v2 tcp4", v2(0x21, 0x11, V4_BODY),
     ProxyHeader(2, 28, ("192.0.2.1", 56324), ("10.0.0.1", 443))),
    ("v2 tcp6", v2(0x21, 0x21, V6_BODY),
     ProxyHeader(2, 52, ("2001:db8::1", 1), ("2001:db8::2", 80))),
    ("v2 tcp4 with TLVs", v2(0x21, 0x11, V4_BODY + b"\x04\x00\x03abc"),
     ProxyHeader(2, 34, ("192.0.2.1", 56324), ("10.0.0.1", 443))),
    ("v2 local", v2(0x20, 0x00, b""), ProxyHeader(2, 16)),
    ("v2 local with addresses", v2(0x20, 0x11, V4_BODY), ProxyHeader(2, 28)),
    ("v2 unspec", v2(0x21, 0x00, b""), ProxyHeader(2, 16)),
    ("v2 unix", v2(0x21, 0x31, bytes(216)), ProxyHeader(2, 232)),
]


@pytest.mark.parametrize("data,expect", [g[1:] for g in GOOD], ids=[g[0] for g in GOOD])
def test_good_headers_whole_byte_by_byte_and_with_what_follows(data, expect):
    assert parse(data) == expect
    for i in range(len(data)):
        assert parse(data[:i]) is None, i  # never an error nor a header before the end
    assert parse(data + b"GET / HTTP/1.1\r\n") == expect  # the request is not taken


BAD = [
    ("no header", b"GET / HTTP/1.1\r\n", "no PROXY protocol header"),
    ("lower case", b"proxy TCP4 1.2.3.4 1.2.3.4 1 2\r\n", "no PROXY protocol header"),
    ("truncated prefix then other", b"PROXX", "no PROXY protocol header"),
    ("v1 over 107 bytes", b"PROXY UNKNOWN " + b"x" * 100 + b"\r\n", "no CRLF within 107"),
    ("v1 bare LF", b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", "not ended by CRLF"),
    ("v1 unknown family", b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", "unknown protocol family"),
    ("v1 missing port", b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", "3 fields after TCP4"),
    ("v1 double space", b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n", "5 fields"),
    ("v1 bad address", b"PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n", "bad TCP4 address"),
    ("v1 family mismatch", b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n", "not a TCP4 address"),
    ("v1 v4 in tcp6", b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n", "not a TCP6 address"),
    ("v1 port range", b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", "out of range"),
    ("v1 port leading zero", b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n", "bad port"),
    ("v1 port sign", b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n", "bad port"),
    ("v2 bad signature", b"\r\n\r\n\x00\r\nQUIX\n\x21\x11\x00\x0c" + V4_BODY, "bad signature"),
    ("v2 signature cut then wrong", b"\r\n\r\nX", "bad signature"),
    ("v2 version 1", v2(0x11, 0x11, V4_BODY), "version 1, not 2"),
    ("v2 unknown command", v2(0x22, 0x11, V4_BODY), "unknown command 2"),
    ("v2 unknown family", v2(0x21, 0x41, V4_BODY), "unknown address family 4"),
    ("v2 unknown transport", v2(0x21, 0x13, V4_BODY), "unknown transport protocol 3"),
    ("v2 length short for tcp4", v2(0x21, 0x11, V4_BODY[:11]), "too short for TCP4"),
    ("v2 length short for tcp6", v2(0x21, 0x21, V4_BODY), "too short for TCP6"),
    ("v2 length over the bound", v2(0x21, 0x11, V4_BODY, length=MAX_V2_PAYLOAD + 1),
     "over the 2048 accepted"),
]


@pytest.mark.parametrize("data,message", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_malformed_headers_are_refused_with_what_is_wrong(data, message):
    with pytest.raises(ProxyProtocolError, match=message.replace("+", r"\+")):
        parse(data)


def test_truncated_headers_wait_for_more():
    assert parse(b"") is None
    assert parse(b"PROXY TCP4 192.0.2.1 10.0.0.1 56") is None
    assert parse(v2(0x21, 0x11, V4_BODY)[:20]) is None
    assert parse(SIG[:5]) is None


@pytest.mark.parametrize("src,dst", [
    (("192.0.2.1", 1234), ("10.0.0.1", 80)),
    (("2001:db8::1", 1), ("2001:db8::2", 65535)),
    (("::ffff:192.0.2.1", 9), ("10.0.0.1", 80)),  # a v4 client on a dual-stack socket
])
def test_encode_v2_round_trips(src, dst):
    got = parse(encode_v2(src, dst))
    assert got is not None and got.version == 2
    assert got.source == (src[0].removeprefix("::ffff:"), src[1]) and got.destination == dst


def test_encode_v2_without_addresses_is_local():
    assert parse(encode_v2(None, ("10.0.0.1", 80))) == ProxyHeader(2, 16)
    assert parse(encode_v2(("192.0.2.1", 1), ("2001:db8::1", 80))) == ProxyHeader(2, 16)


def test_encode_v1_round_trips():
    assert parse(encode_v1(("192.0.2.1", 1), ("10.0.0.1", 2))) == ProxyHeader(
        1, 35, ("192.0.2.1", 1), ("10.0.0.1", 2))


# -- sending: a backend connection that starts with the client's header --------------------

@pytest.mark.parametrize("protocol", ["http", "h2c"])
async def test_pool_sends_the_header_first_and_pools_per_client(protocol):
    """Pool.acquire_proxied: the header is the connection's first bytes (before
    HTTP/2's preface); the same client's next request reuses the connection, another
    client's gets its own (a real socket; the peer records what it reads)."""
    import asyncio

    from kgw_l7.config import Backend, Endpoint
    from kgw_l7.router import CompiledBackend
    from kgw_l7.tls import TLSContexts
    from kgw_l7.upstream import Pool

    firsts: list[bytes] = []
    writers = []

    async def accept(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        writers.append(w)
        firsts.append(await r.read(28))

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    backend = CompiledBackend(Backend("b", endpoints=(Endpoint("127.0.0.1", port),),
                                      protocol=protocol))
    pool = Pool(TLSContexts(), 8)
    one = encode_v2(("192.0.2.1", 1000), ("10.0.0.1", 80))
    other = encode_v2(("192.0.2.2", 1000), ("10.0.0.1", 80))
    try:
        a = await pool.acquire_proxied("127.0.0.1", port, backend, 0.0, one)
        if protocol == "http":
            a.idle_since = 0.0  # idle after a response, as Pool.release leaves it
            pool._idle.setdefault(a.key, []).append(a)
        again = await pool.acquire_proxied("127.0.0.1", port, backend, 0.0, one)
        b = await pool.acquire_proxied("127.0.0.1", port, backend, 0.0, other)
        conn = (lambda s: s) if protocol == "http" else (lambda s: s.conn)
        assert conn(again) is conn(a) and conn(b) is not conn(a)
        assert pool.take_idle("127.0.0.1", port, backend, 0.0) is None  # never to others
        for _ in range(100):
            if len(firsts) == 2:
                break
            await asyncio.sleep(0.02)
        assert sorted(firsts) == sorted([one, other])
        assert parse(firsts[0]).source in {("192.0.2.1", 1000), ("192.0.2.2", 1000)}
    finally:
        pool.close()
        for w in writers:
            w.close()
        server.close()
        await server.wait_closed()
