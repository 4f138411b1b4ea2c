"""What an ``Exchange`` (``kgw_l7.exchange``) uses of the client side.

``DownstreamStream`` is the interface; ``kgw_l7.proxy.DownstreamConn`` implements it for
HTTP/1.1 (the stream is a connection's current request). The exchange module imports
this one, never the proxy: the proxy creates exchanges, and the imports go one way.

Compiled (``streams.pxd``), the methods are ``cpdef`` on an extension type that the
implementations subclass, so the exchange's calls through the interface are C calls.
"""

from __future__ import annotations

from typing import Any

try:
    import cython
except ImportError:
    from kgw_l7 import _cython as cython

if not cython.compiled:  # (compiled, these are C constants: streams.pxd)
    #: Reasons the exchange pauses reading from the client (bits: reading resumes when
    #: none is left): the request body buffered so far is large enough, or the backend's
    #: connection does not take more.
    PAUSE_BODY, PAUSE_UPSTREAM = 1, 2


class DownstreamStream:
    """The client side of an exchange: where its response goes, where its request came
    from. ``closing``: the stream ends after this response; ``write_paused``: the
    client does not take more bytes now."""

    __slots__ = ("listener", "peer", "ssl_context", "forwarded", "closing", "write_paused")

    def write(self, data: bytes) -> None:
        """Response bytes, already framed."""
        raise NotImplementedError

    def pause(self, reason: int) -> None:
        """Stop reading the request (body) for ``reason`` (``PAUSE_*``)."""
        raise NotImplementedError

    def resume(self, reason: int) -> None:
        raise NotImplementedError

    def abort(self) -> None:
        """The response cannot be completed: cut the client off."""
        raise NotImplementedError

    def exchange_done(self, ex: Any) -> None:
        """``ex`` is over (response sent, request read): serve the next one, or close."""
        raise NotImplementedError

    def start_tunnel(self, up: Any, data: bytes) -> bool:
        """After a 101 response: the client and ``up`` become a byte pipe, ``data`` (what
        followed the backend's response head) first. False when it cannot be."""
        raise NotImplementedError
