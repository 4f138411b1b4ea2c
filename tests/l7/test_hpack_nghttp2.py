"""kgw_l7._nghttp2 (libnghttp2's HPACK) against the hpack package, both ways: what one
encodes the other decodes to the same header lists, across blocks sharing a dynamic table,
with table size updates, Huffman and plain literals, never-indexed fields, and the errors
h2 relies on. The compiled HTTP/2 path uses nghttp2 (kgw_l7.hpack_codec), the interpreted
one hpack; both must read the same wire."""

from __future__ import annotations

import os

import hpack
import pytest
from hpack import NeverIndexedHeaderTuple
from hpack.exceptions import HPACKDecodingError, OversizedHeaderListError

import kgw_l7
from kgw_l7 import hpack_codec

if kgw_l7.extension_path("_nghttp2") is None:
    pytest.skip("kgw_l7._nghttp2 not built (scripts/build_ext.py, libnghttp2-dev)",
                allow_module_level=True)

from kgw_l7 import _nghttp2  # noqa: E402  (only once it is known to be built)

REQUEST = [(b":method", b"GET"), (b":scheme", b"https"), (b":path", b"/hdr"),
           (b":authority", b"www.example.com"), (b"user-agent", b"h2load nghttp2/1.52.0"),
           (b"x-bench", b"yes")]
#: Header lists sent one after another on one connection (one dynamic table).
SEQUENCES = {
    "requests": [REQUEST, REQUEST, REQUEST[:3] + [(b":path", b"/other")] + REQUEST[3:]],
    "responses": [[(b":status", b"200"), (b"content-type", b"text/plain"),
                   (b"content-length", b"12"), (b"x-request-id", b"%032x" % i)]
                  for i in range(5)],
    "empty_and_binary": [[(b"x-empty", b""), (b"x-bin", bytes(range(1, 256)).replace(
        b"\r", b"").replace(b"\n", b"")), (b"x-utf8", "grüße".encode())]] * 2,
    "long_values": [[(b"cookie", b"a=" + b"x" * 5000), (b"x-long", b"y" * 20000)],
                    [(b"cookie", b"a=" + b"x" * 5000)], [(b"x-huge", b"q" * 100000)]],
    "many_fields": [[(b"x-f%d" % i, b"v%d" % i) for i in range(200)]] * 2,
    "evicting": [[(b"x-evict-%d" % i, b"z" * 900)] for i in range(12)] * 2,
}


def _plain(headers):
    return [(bytes(n), bytes(v)) for n, v in headers]


@pytest.mark.parametrize("name", sorted(SEQUENCES))
def test_nghttp2_encodes_what_hpack_decodes(name):
    enc, dec = _nghttp2.Deflater(), hpack.Decoder(max_header_list_size=1 << 20)
    for headers in SEQUENCES[name]:
        assert _plain(dec.decode(enc.encode(headers), raw=True)) == headers


@pytest.mark.parametrize("huffman", [True, False], ids=["huffman", "plain"])
@pytest.mark.parametrize("name", sorted(SEQUENCES))
def test_hpack_encodes_what_nghttp2_decodes(name, huffman):
    enc, dec = hpack.Encoder(), _nghttp2.Inflater(1 << 20)
    for headers in SEQUENCES[name]:
        assert dec.decode(enc.encode(headers, huffman=huffman)) == headers


def test_the_dynamic_table_is_used_across_blocks():
    enc, dec = _nghttp2.Deflater(), _nghttp2.Inflater()
    first = enc.encode(REQUEST)
    again = enc.encode(REQUEST)
    assert len(again) < len(first) // 3  # indexed from the table
    assert dec.decode(first) == REQUEST and dec.decode(again) == REQUEST
    assert dec.header_table_size > 0


def test_rfc7541_example_c4_decodes():
    """RFC 7541 C.4.1-C.4.3: three requests with Huffman-coded literals."""
    dec = _nghttp2.Inflater()
    blocks = ["828684418cf1e3c2e5f23a6ba0ab90f4ff",
              "828684be5886a8eb10649cbf",
              "828785bf408825a849e95ba97d7f8925a849e95bb8e8b4bf"]
    lists = [[(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/"),
              (b":authority", b"www.example.com")]]
    lists.append(lists[0] + [(b"cache-control", b"no-cache")])
    lists.append([(b":method", b"GET"), (b":scheme", b"https"), (b":path", b"/index.html"),
                  (b":authority", b"www.example.com"), (b"custom-key", b"custom-value")])
    for block, headers in zip(blocks, lists, strict=True):
        assert dec.decode(bytes.fromhex(block)) == headers
    assert dec.header_table_size == 164  # as the RFC's table after C.4.3


def test_large_blocks_go_on_with_hpack_and_the_same_table():
    """nghttp2 refuses fields over 64 KiB; a block that may hold one is decoded by hpack,
    with nghttp2's dynamic table carried over, and so is every later block."""
    enc, dec = hpack.Encoder(), _nghttp2.Inflater(1 << 20)
    for headers in SEQUENCES["requests"] + SEQUENCES["evicting"][:6]:
        assert dec.decode(enc.encode(headers)) == headers
    before = dec.header_table_size
    assert before > 0
    # a 70 kB literal, never indexed: the tables keep what nghttp2's had
    big = [NeverIndexedHeaderTuple(b"x-big", b"a" * 70000)]
    assert dec.decode(enc.encode(big, huffman=False)) == big
    assert dec.header_table_size == before
    for headers in SEQUENCES["evicting"][:6] + SEQUENCES["requests"]:  # indexed ones
        assert dec.decode(enc.encode(headers)) == headers
    dec.max_allowed_table_size = 100
    enc.header_table_size = 200
    with pytest.raises(HPACKDecodingError):
        dec.decode(enc.encode(REQUEST))


def test_huffman_shortens_literals():
    enc = _nghttp2.Deflater()
    block = enc.encode([(b"x-name", b"www.example.com/some/path")])
    assert len(block) < len(b"x-name") + len(b"www.example.com/some/path")


def test_encoder_table_size_update_reaches_hpack():
    enc, dec = _nghttp2.Deflater(), hpack.Decoder()
    dec.decode(enc.encode(REQUEST), raw=True)
    assert dec.header_table_size == 4096
    enc.header_table_size = 0  # the peer's SETTINGS_HEADER_TABLE_SIZE
    assert enc.header_table_size == 0
    block = enc.encode(REQUEST)
    assert block[0] & 0xE0 == 0x20  # starts with a dynamic table size update
    assert _plain(dec.decode(block, raw=True)) == REQUEST
    assert dec.header_table_size == 0
    assert len(dec.header_table.dynamic_entries) == 0


def test_decoder_follows_hpack_table_size_updates():
    enc, dec = hpack.Encoder(), _nghttp2.Inflater()
    assert dec.decode(enc.encode(REQUEST)) == REQUEST
    enc.header_table_size = 256
    block = enc.encode(REQUEST)
    assert block[0] & 0xE0 == 0x20
    assert dec.decode(block) == REQUEST
    assert dec.header_table_size <= 256


def test_decoder_refuses_a_table_larger_than_allowed():
    enc, dec = hpack.Encoder(), _nghttp2.Inflater()
    dec.max_allowed_table_size = 100
    assert dec.max_allowed_table_size == 100
    enc.header_table_size = 200
    with pytest.raises(HPACKDecodingError):
        dec.decode(enc.encode(REQUEST))


def test_never_indexed_fields_both_ways():
    secret = NeverIndexedHeaderTuple(b"authorization", b"Bearer abc")
    enc, dec = _nghttp2.Deflater(), hpack.Decoder()
    for fields in ([secret], [(b"authorization", b"Bearer abc", True)]):
        block = enc.encode(fields)
        assert block[0] & 0xF0 == 0x10  # literal never indexed (RFC 7541 §6.2.3)
        out = dec.decode(block, raw=True)
        assert out == [(b"authorization", b"Bearer abc")] and not out[0].indexable
    assert len(dec.header_table.dynamic_entries) == 0
    henc, ndec = hpack.Encoder(), _nghttp2.Inflater()
    out = ndec.decode(henc.encode([secret, (b"x-plain", b"1")]))
    assert out == [(b"authorization", b"Bearer abc"), (b"x-plain", b"1")]
    assert isinstance(out[0], NeverIndexedHeaderTuple) and not out[0].indexable
    assert ndec.header_table_size == len(b"x-plain1") + 32  # only the indexable one kept


def test_header_list_bound():
    dec = _nghttp2.Inflater(max_header_list_size=1000)
    block = hpack.Encoder().encode([(b"x-a", b"a" * 500), (b"x-b", b"b" * 500)])
    with pytest.raises(OversizedHeaderListError):
        dec.decode(block)


@pytest.mark.parametrize("block", [b"\x80", b"\xff\xff\xff\xff\xff\x0f", b"\x40\x85abc",
                                   b"\x82\x3f\xe1\x1f"], ids=["index_0", "index_too_large",
                                                              "truncated", "late_size_update"])
def test_bad_blocks_are_decoding_errors(block):
    with pytest.raises(HPACKDecodingError):
        _nghttp2.Inflater().decode(block)


def test_str_input_and_unicode_output():
    enc, dec = _nghttp2.Deflater(), _nghttp2.Inflater()
    assert dec.decode(enc.encode([("x-s", "ü")]), raw=False) == [("x-s", "ü")]
    assert enc.encode({b"a": b"b"}) == _nghttp2.Deflater().encode([(b"a", b"b")])


def test_the_compiled_build_uses_nghttp2():
    compiled = kgw_l7.extension_in_use("downstream_h2")
    assert hpack_codec.codec() == ("nghttp2" if compiled else "hpack"), \
        (compiled, os.environ.get("KGW_NO_EXTENSIONS"))
