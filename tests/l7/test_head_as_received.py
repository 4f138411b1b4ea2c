"""The received request head forwarded less an auth check's removed fields
(``kgw_l7.exchange._field_cut`` for one field in its usual spelling, else
``_without_fields``): table-tested on raw heads."""

from __future__ import annotations

import pytest

from kgw_l7.exchange import _field_cut, _head_without, _without_fields
from kgw_l7.h1 import RequestReader

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
    # one field in its usual spelling (found by "CRLF Name:"), whitespace around its value
    (LINE + b"Host: a\r\nX-User-Id: \t" + TOKEN + b" \r\nX-Keep: 1\r\n",
     {b"x-user-id", b"authorization"}, LINE + b"Host: a\r\nX-Keep: 1\r\n"),
    # ... the usual spelling as another field's name prefix or inside a value: not cut there
    (LINE + b"Authorization-Hint: " + TOKEN + b"\r\nX-Note: Authorization: " + TOKEN
     + b"\r\nauthorization: " + TOKEN + b"\r\n", {b"authorization"},
     LINE + b"Authorization-Hint: " + TOKEN + b"\r\nX-Note: Authorization: " + TOKEN
     + b"\r\n"),
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


HEAD = LINE + b"Host: a\r\nAuthorization: " + TOKEN + b"\r\nX-Keep: 1\r\n"


@pytest.mark.parametrize("raw, field, expected", [
    # the line goes; only the head (raw[:size]) is returned, whatever follows it
    (HEAD + b"\r\nbody", (b"authorization", TOKEN), LINE + b"Host: a\r\nX-Keep: 1\r\n"),
    # whitespace around the value, the head's last line, a hyphenated name
    (LINE + b"Host: a\r\nX-User-Id: \t" + TOKEN + b" \t\r\n", (b"x-user-id", TOKEN),
     LINE + b"Host: a\r\n"),
    # the spelling as another name's start or inside a value is not a line start
    (LINE + b"Authorization-Hint: x\r\nX-Note: a\r\nAuthorization: " + TOKEN + b"\r\n",
     (b"authorization", TOKEN), LINE + b"Authorization-Hint: x\r\nX-Note: a\r\n"),
    # not in the usual spelling, or the line is not exactly the parsed field: None (the
    # value-led search decides)
    (LINE + b"AUTHORIZATION: " + TOKEN + b"\r\n", (b"authorization", TOKEN), None),
    (HEAD, (b"authorization", TOKEN[:-1]), None),
    (HEAD, (b"authorization", TOKEN + b"x"), None),
    (HEAD, (b"authorization", b""), None),
    (LINE + b"Authorization: " + TOKEN + b"\r\n more\r\n", (b"authorization", TOKEN), None),
    (LINE + b"Host: a\r\n", (b"authorization", TOKEN), None),
])
def test_one_field_cut_by_its_usual_spelling(raw, field, expected) -> None:
    size = raw.find(b"\r\n\r\n") + 2 if b"\r\n\r\n" in raw else len(raw)
    assert _field_cut(raw, size, field) == expected


def test_a_field_after_the_head_is_not_cut() -> None:
    """Only the first ``size`` bytes are searched (a body may hold anything)."""
    raw = LINE + b"Host: a\r\n\r\nX: 1\r\nAuthorization: " + TOKEN + b"\r\n"
    assert _field_cut(raw, raw.find(b"\r\n\r\n") + 2, (b"authorization", TOKEN)) is None


@pytest.mark.parametrize("guess", [
    len(LINE) - 2 + len(b"\r\nHost: a"),  # where "Name: value" lines put it: one comparison
    0, 3, len(LINE) - 2, 10_000,  # anywhere else (or past the head): searched for
])
def test_the_guessed_line_start_is_checked(guess) -> None:
    assert _field_cut(HEAD + b"\r\n", len(HEAD), (b"authorization", TOKEN), guess) \
        == LINE + b"Host: a\r\nX-Keep: 1\r\n"


@pytest.mark.parametrize("fields, names, kept", [
    # one field, "Name: value" lines: cut where the guess says
    (b"Host: a\r\nAuthorization: " + TOKEN + b"\r\nX-Keep: 1\r\n", {b"authorization"},
     b"Host: a\r\nX-Keep: 1\r\n"),
    # lines without a space, or with more: the guess misses, the search finds it
    (b"Host:a\r\nX:1\r\nAuthorization:  " + TOKEN + b"\r\nX-Keep: 1\r\n",
     {b"authorization", b"x-user"}, b"Host:a\r\nX:1\r\nX-Keep: 1\r\n"),
    # another spelling, or two fields to cut: _without_fields
    (b"Host: a\r\nauthorization: " + TOKEN + b"\r\n", {b"authorization"}, b"Host: a\r\n"),
    (b"X-User: eve\r\nHost: a\r\nAuthorization: " + TOKEN + b"\r\n",
     {b"authorization", b"x-user"}, b"Host: a\r\n"),
    # nothing to cut
    (b"Host: a\r\n", {b"authorization"}, b"Host: a\r\n"),
])
def test_the_received_head_less_the_fields(fields, names, kept) -> None:
    """As parsed by llhttp (h1.RequestReader), a body after the head."""
    data = LINE + fields + b"Content-Length: 4\r\n\r\nbody"
    head = RequestReader().feed(data)[0]
    assert head.raw == data
    assert _head_without(head.raw, head, names) == LINE + kept + b"Content-Length: 4\r\n"


def test_a_field_that_needs_a_rebuild_refuses_the_received_head() -> None:
    data = LINE + b"Host: a\r\nConnection: close\r\nAuthorization: " + TOKEN + b"\r\n\r\n"
    head = RequestReader().feed(data)[0]
    assert _head_without(head.raw, head, {b"authorization"}) is None
