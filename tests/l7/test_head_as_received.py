"""The received request head forwarded less an auth check's removed fields
(``kgw_l7.exchange._without_fields``): table-tested on raw heads."""

from __future__ import annotations

import pytest

from kgw_l7.exchange import _without_fields

TOKEN = b"Bearer eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2ln"
LINE = b"GET /a?Bearer HTTP/1.1\r\n"


def parsed(block: bytes) -> tuple[tuple[bytes, bytes], ...]:
    """The fields as the parser gives them (names lower case, values trimmed)."""
    out = []
    for line in block.split(b"\r\n")[1:-1]:
        name, _, value = line.partition(b":")
        out.append((name.lower(), value.strip(b" \t")))
    return tuple(out)


@pytest.mark.parametrize("block, names, expected", [
    # the token's line goes, the rest stays byte for byte (order and case)
    (LINE + b"Host: a\r\nAuthorization: " + TOKEN + b"\r\nX-Keep: 1\r\n", {b"authorization"},
     LINE + b"Host: a\r\nX-Keep: 1\r\n"),
    # any case, extra whitespace, last line
    (LINE + b"Host: a\r\nAUTHORIZATION:   " + TOKEN + b"  \r\n", {b"authorization"},
     LINE + b"Host: a\r\n"),
    # every line of the name, and several names
    (LINE + b"x-user: mallory\r\nHost: a\r\nX-User: eve\r\nauthorization: " + TOKEN
     + b"\r\n", {b"authorization", b"x-user"}, LINE + b"Host: a\r\n"),
    # the value elsewhere first (the request line, another field's value): not cut there
    (LINE + b"X-Copy: Bearer\r\nX-Token: Bearer\r\n", {b"x-token"},
     LINE + b"X-Copy: Bearer\r\n"),
    (LINE + b"X-Prefix: " + TOKEN + b"x\r\nAuthorization: " + TOKEN + b"\r\n",
     {b"authorization"}, LINE + b"X-Prefix: " + TOKEN + b"x\r\n"),
    # a name not sent: unchanged
    (LINE + b"Host: a\r\n", {b"authorization"}, LINE + b"Host: a\r\n"),
])
def test_lines_removed(block: bytes, names: set[bytes], expected: bytes) -> None:
    assert _without_fields(block, parsed(block), names) == expected


def test_what_cannot_be_cut_cleanly_asks_for_a_rebuild() -> None:
    folded = LINE + b"Authorization: " + TOKEN + b"\r\n  more\r\nHost: a\r\n"
    headers = ((b"authorization", TOKEN + b" more"), (b"host", b"a"))
    assert _without_fields(folded, headers, {b"authorization"}) is None
    empty = LINE + b"Authorization:\r\nHost: a\r\n"
    assert _without_fields(empty, parsed(empty), {b"authorization"}) is None
