"""kgw_l7.proxyaccept.read_header on real sockets: it takes the header and exactly the
header out of the socket, whether it arrives whole or a byte at a time, and leaves what
follows (a ClientHello) unread."""

from __future__ import annotations

import asyncio
import socket

import pytest

from kgw_l7.proxyaccept import read_header
from kgw_l7.proxyproto import ProxyProtocolError, encode_v1, encode_v2

HELLO = b"\x16\x03\x01\x00\x05hello"
V1 = encode_v1(("192.0.2.7", 40000), ("192.0.2.1", 443))
V2 = encode_v2(("2001:db8::7", 40001), ("2001:db8::1", 443))
SHORTEST = b"PROXY UNKNOWN\r\n"  # 15 bytes: shorter than a v2 header


async def _read(chunks: list[bytes], optional: bool = False) -> tuple[object, bytes]:
    a, b = socket.socketpair()
    a.setblocking(False)
    try:
        task = asyncio.ensure_future(read_header(a, optional))
        for chunk in chunks:
            b.sendall(chunk)
            await asyncio.sleep(0.002)
        header = await asyncio.wait_for(task, 2)
        await asyncio.sleep(0.002)
        return header, a.recv(4096)
    finally:
        a.close()
        b.close()


def read(chunks: list[bytes], optional: bool = False) -> tuple[object, bytes]:
    return asyncio.run(_read(chunks, optional))


@pytest.mark.parametrize("header", [V1, V2, SHORTEST], ids=["v1", "v2", "unknown"])
@pytest.mark.parametrize("split", ["whole", "bytewise"])
def test_the_header_is_taken_and_the_hello_left(header: bytes, split: str) -> None:
    data = header + HELLO
    chunks = [data] if split == "whole" else [data[i:i + 1] for i in range(len(header))] + [
        HELLO]
    got, rest = read(chunks)
    assert got.size == len(header)  # type: ignore[attr-defined]
    assert rest == HELLO


def test_the_source_is_the_header_s() -> None:
    got, _ = read([V2 + HELLO])
    assert got.source == ("2001:db8::7", 40001)  # type: ignore[attr-defined]


def test_optional_without_a_header_takes_nothing() -> None:
    assert read([HELLO], optional=True) == (None, HELLO)


@pytest.mark.parametrize("data,optional,message", [
    (HELLO, False, "no PROXY protocol header"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 99999\r\n" + HELLO, False, "port 99999"),
    (b"PROXY TCP5 x\r\n" + HELLO, True, "unknown protocol family"),
])
def test_refusals_name_what_is_wrong(data: bytes, optional: bool, message: str) -> None:
    with pytest.raises(ProxyProtocolError, match=message):
        read([data], optional)


def test_a_connection_closed_mid_header() -> None:
    async def run() -> None:
        a, b = socket.socketpair()
        a.setblocking(False)
        b.sendall(V1[:10])
        b.close()
        try:
            with pytest.raises(ProxyProtocolError, match="closed before"):
                await asyncio.wait_for(read_header(a), 2)
        finally:
            a.close()
    asyncio.run(run())


class _Answer(asyncio.Protocol):
    """Answers the first bytes with the PROXY source it was built with, and closes."""

    def __init__(self, source: object) -> None:
        self.source = source
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(repr(self.source).encode())
        self.transport.close()


def test_pre_tls_server_reads_the_header_then_does_tls(tmp_path) -> None:
    import ssl

    from kgw_l7.proxyaccept import PreTLSServer
    from tests.l4.tlshelp import make_cert

    cert, key = make_cert(tmp_path, "app.example.com")
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context(cafile=str(cert))

    async def run() -> tuple[list[bytes], list[tuple[str, str]]]:
        loop = asyncio.get_running_loop()
        lsock = socket.socket()
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(8)
        lsock.setblocking(False)
        port = lsock.getsockname()[1]
        refused: list[tuple[str, str]] = []
        server = PreTLSServer(
            loop, lsock, lambda h: _Answer(h.source if h else None), server_ctx,
            timeout=lambda: 2.0, optional=lambda: False,
            refused=lambda why, detail, peer: refused.append((why, detail)))

        async def client(prefix: bytes) -> bytes:
            raw = socket.create_connection(("127.0.0.1", port))
            raw.sendall(prefix)
            raw.setblocking(False)
            try:
                r, w = await asyncio.open_connection(sock=raw, ssl=client_ctx,
                                                     server_hostname="app.example.com")
            except (OSError, ssl.SSLError):
                return b""
            w.write(b"hi")
            out = await asyncio.wait_for(r.read(), 5)
            w.close()
            return out

        try:
            answers = [await client(V1), await client(V2), await client(b"")]
            assert server.is_serving()
        finally:
            server.close()
        assert not server.is_serving()
        return answers, refused

    answers, refused = asyncio.run(run())
    assert answers == [b"('192.0.2.7', 40000)", b"('2001:db8::7', 40001)", b""]
    assert [why for why, _ in refused] == ["missing"]
