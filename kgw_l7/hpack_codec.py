"""The HPACK codec kgw's HTTP/2 connections use: libnghttp2's (``kgw_l7._nghttp2``, C)
in the compiled build, the ``hpack`` package's (pure Python, what h2 brings) otherwise;
and with it the whole HTTP/2 sessions (``server_session`` for clients,
``client_session`` for backends: nghttp2's, or None for h2's).

Both have hpack's interface, so ``use_fast_codec`` only swaps the encoder and decoder of an
``h2.connection.H2Connection`` before its first frame; h2 keeps the framing, the stream
states and flow control. The C codec is used when the rest of kgw_l7 runs compiled (the
build is used whole or not at all: ``KGW_NO_EXTENSIONS=1`` or a stale build means pure
Python everywhere, which the tests run too) and ``_nghttp2`` was built newer than its
source. The backend side's session (``client_session``: nghttp2's, or None for h2's) is
picked the same way.
"""

from __future__ import annotations

import os
from typing import Any

import kgw_l7

_HERE = os.path.dirname(os.path.abspath(__file__))


def _load() -> Any:
    if not kgw_l7.extension_in_use("downstream_h2"):
        return None
    ext = kgw_l7.extension_path("_nghttp2")
    if ext is None:
        return None
    if ext.stat().st_mtime < os.stat(os.path.join(_HERE, "_nghttp2.pyx")).st_mtime:
        return None
    try:
        from kgw_l7 import _nghttp2  # type: ignore[attr-defined]
    except ImportError:  # (libnghttp2 removed since the build)
        return None
    return _nghttp2


#: The loaded ``_nghttp2`` module, None for hpack's codec, False before the first use
#: (loaded then: like h2, it costs a worker without HTTP/2 nothing at start).
_codec: Any = False


def codec() -> str:
    """The codec in use: "nghttp2" or "hpack"."""
    global _codec
    if _codec is False:
        _codec = _load()
    return "hpack" if _codec is None else "nghttp2"


def use_fast_codec(conn: Any) -> None:
    """Give a new h2 connection nghttp2's HPACK encoder and decoder (when built), with
    the decoder's header list bound h2 had set."""
    if codec() == "hpack":
        return
    bound = conn.decoder.max_header_list_size
    conn.encoder = _codec.Deflater()
    conn.decoder = _codec.Inflater(bound)


def server_session() -> Any:
    """A new ``kgw_l7._nghttp2.ServerSession`` (libnghttp2's HTTP/2 server connection) when
    the C codec is in use, else None (``kgw_l7.downstream_h2.new_session`` then takes h2's):
    the one selection point for both, so HPACK and framing come from the same library."""
    if codec() == "hpack":
        return None
    return _codec.ServerSession()


def client_session() -> Any:
    """A new ``kgw_l7._nghttp2.ClientSession`` (libnghttp2's HTTP/2 client connection, to a
    backend) when the C codec is in use, else None (``kgw_l7.upstream_h2.new_session``
    then takes h2's)."""
    if codec() == "hpack":
        return None
    return _codec.ClientSession()


def server_implementation() -> str:
    """What serves HTTP/2 clients: "nghttp2" or "h2" (the test of the build asks)."""
    return "h2" if codec() == "hpack" else "nghttp2"
