"""RFC 9113 §8.2 field checks of HTTP/2 requests (``downstream_h2.request_problem``),
table-tested: the reason each malformed list gets (a metric label), None when valid."""

from __future__ import annotations

import pytest

from kgw_l7.downstream_h2 import request_problem

BASE = [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/"), (b":authority", b"x")]

CASES = [
    ([], None),
    ([(b"x-ok", b"v"), (b"x-high", b"\xc3\xa9")], None),
    ([(b"x-8bit-\xc3\xa9", b"v")], None),  # (bytes >= 0x80 are not refused in names)
    ([(b"X-Up", b"v")], "uppercase_name"),
    ([(b"x y", b"v")], "bad_name"),
    ([(b"x\x7fy", b"v")], "bad_name"),
    ([(b"x\x01", b"v")], "bad_name"),
    ([(b"x:y", b"v")], "bad_name"),
    ([(b"", b"v")], "empty_name"),
    ([(b"x", b"a\r\nb")], "bad_value"),
    ([(b"x", b" lead")], "bad_value"),
    ([(b"x", b"trail\t")], "bad_value"),
    ([(b"connection", b"close")], "connection_specific"),
    ([(b"te", b"gzip")], "te_not_trailers"),
    ([(b"te", b"trailers")], None),
    ([(b":path", b"/again")], "pseudo_after_regular"),
]


@pytest.mark.parametrize("extra,reason", CASES)
def test_request_field_checks(extra, reason) -> None:
    headers = BASE + extra
    if extra and extra[0][0] == b":path":
        headers = BASE + [(b"x", b"v")] + extra
    assert request_problem(headers) == reason


def test_pseudo_field_checks() -> None:
    assert request_problem([(b":bogus", b"x")] + BASE) == "unknown_pseudo"
    assert request_problem(BASE + BASE[:1]) == "repeated_pseudo"
    assert request_problem(BASE[1:]) == "missing_pseudo"
    assert request_problem([(b":path", b"/")], trailers=True) == "pseudo_in_trailers"
    assert request_problem([(b"grpc-status", b"0")], trailers=True) is None
