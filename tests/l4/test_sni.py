from __future__ import annotations

import pytest

from kgw_l4.config import SNIRoute
from kgw_l4.sni import NEED_MORE, HelloError, match_route, parse_sni
from tests.l4.tlshelp import client_hello


def test_real_client_hello():
    hello = client_hello("App.Example.COM")
    assert parse_sni(hello) == "app.example.com"
    assert parse_sni(client_hello(None)) is None


def test_every_prefix_needs_more_or_parses():
    hello = client_hello("a.example.com")
    for n in range(len(hello)):
        assert parse_sni(hello[:n]) is NEED_MORE, n
    assert parse_sni(hello + b"trailing") == "a.example.com"


@pytest.mark.parametrize("data", [
    b"GET / HTTP/1.1\r\n\r\n",
    b"\x16\x03\x01\x00\x04\x02\x00\x00\x00",  # ServerHello, not ClientHello
    b"\x16\x03\x01\xff\xff",  # record too large
    # hello claims more than the record
    b"\x16\x03\x01\x00\x08\x01\x00\x00\x40" + b"\x03\x03" + b"\x00" * 2,
])
def test_bad_input_is_an_error_not_a_crash(data):
    with pytest.raises(HelloError):
        parse_sni(data)


def test_corrupted_lengths_never_raise_anything_else():
    hello = bytearray(client_hello("x.example.com"))
    for i in range(5, len(hello)):
        for v in (0x00, 0xFF):
            mutated = bytes(hello[:i]) + bytes([v]) + bytes(hello[i + 1:])
            try:
                parse_sni(mutated)
            except HelloError:
                pass


def test_route_matching_precedence():
    exact = SNIRoute("exact", ("a.example.com",))
    wild = SNIRoute("wild", ("*.example.com",))
    deeper = SNIRoute("deeper", ("*.b.example.com",))
    anyr = SNIRoute("any", ("*",))
    routes = [anyr, wild, deeper, exact]
    assert match_route(routes, "a.example.com") is exact
    assert match_route(routes, "x.b.example.com") is deeper
    assert match_route(routes, "c.example.com") is wild
    assert match_route(routes, "example.com") is anyr
    assert match_route(routes, None) is anyr
    assert match_route([wild], "example.com") is None
