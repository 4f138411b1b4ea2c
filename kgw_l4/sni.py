"""Read the SNI from a TLS ClientHello (RFC 8446 §4.1.2, RFC 6066 §3) without consuming
it, and pick an SNIRoute.

Only the bytes needed are parsed, every length is checked against what is present,
and the record size is capped: a hostile or truncated hello yields NEED_MORE (more
bytes may complete it) or an error, never an exception from the parser itself.
No library parses a ClientHello without also speaking TLS, and passthrough must not
terminate it, hence this small reader.
"""

from __future__ import annotations

from collections.abc import Sequence

from .config import SNIRoute

MAX_HELLO = 16 * 1024 + 5  # one TLS record (2^14) plus its header

NEED_MORE = object()  # sentinel: the hello is not complete yet


class HelloError(ValueError):
    """Not a TLS ClientHello (or a malformed one)."""


def parse_sni(data: bytes) -> str | None | object:
    """The server_name from a ClientHello record at the start of ``data``; None when
    the hello has no SNI; NEED_MORE when ``data`` ends before the hello does."""
    if len(data) < 5:
        return NEED_MORE
    if data[0] != 0x16:
        raise HelloError("not a TLS handshake record")
    if data[1] != 0x03:
        raise HelloError("unsupported TLS record version")
    rec_len = int.from_bytes(data[3:5], "big")
    if rec_len < 4 or rec_len > MAX_HELLO - 5:
        raise HelloError("bad record length")
    if len(data) < 5 + rec_len:
        return NEED_MORE
    body = data[5:5 + rec_len]
    if body[0] != 0x01:
        raise HelloError("first handshake message is not a ClientHello")
    hs_len = int.from_bytes(body[1:4], "big")
    if hs_len + 4 > len(body):
        raise HelloError("ClientHello spans several records")  # rare; refused
    p = 4 + 2 + 32  # legacy_version, random
    p = _skip(body, p, 1)  # session id
    p = _skip(body, p, 2)  # cipher suites
    p = _skip(body, p, 1)  # compression methods
    end = 4 + hs_len
    if p == end:
        return None  # no extensions
    ext_end = p + 2 + _u(body, p, 2)
    if ext_end > end:
        raise HelloError("extensions overrun the ClientHello")
    p += 2
    while p + 4 <= ext_end:
        etype, elen = _u(body, p, 2), _u(body, p + 2, 2)
        p += 4
        if p + elen > ext_end:
            raise HelloError("extension overruns the list")
        if etype == 0:  # server_name
            q = p + 2
            lend = q + _u(body, p, 2)
            while q + 3 <= min(lend, p + elen):
                ntype, nlen = body[q], _u(body, q + 1, 2)
                q += 3
                if q + nlen > lend:
                    raise HelloError("server name overruns the list")
                if ntype == 0:
                    try:
                        name = body[q:q + nlen].decode("ascii")
                    except UnicodeDecodeError:
                        raise HelloError("server name is not ASCII") from None
                    return name.rstrip(".").lower()
                q += nlen
            return None
        p += elen
    return None


def _u(b: bytes, p: int, n: int) -> int:
    if p + n > len(b):
        raise HelloError("truncated ClientHello")
    return int.from_bytes(b[p:p + n], "big")


def _skip(b: bytes, p: int, n: int) -> int:
    ln = _u(b, p, n)
    if p + n + ln > len(b):
        raise HelloError("truncated ClientHello")
    return p + n + ln


def match_route(routes: Sequence[SNIRoute], sni: str | None) -> SNIRoute | None:
    """Exact name first, then the longest matching "*.suffix" wildcard, then "*"."""
    name = (sni or "").lower()
    best: tuple[int, SNIRoute] | None = None
    for r in routes:
        for h in r.hostnames:
            h = h.lower()
            if name and h == name:
                return r
            if h.startswith("*.") and name.endswith(h[1:]) and len(name) > len(h) - 1:
                if best is None or len(h) > best[0]:
                    best = (len(h), r)
            elif h == "*" and best is None:
                best = (0, r)
    return best[1] if best else None
