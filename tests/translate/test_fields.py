"""Field readers: durations, gRPC method matches, defaults of absent fields."""

import pytest

from controller.translate.httproute import _timeout, grpc_match, http_match
from controller.translate.util import parse_duration
from kgw_l7.config import PathMatch, RouteMatch


@pytest.mark.parametrize("text,seconds", [
    ("10s", 10.0), ("500ms", 0.5), ("1h2m", 3720.0), ("1h2m3s4ms", 3723.004), ("0s", 0.0),
    ("", None), ("10", None), ("10x", None), ("s", None), ("1m 2s", None), (None, None), (5, None),
])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == (pytest.approx(seconds) if seconds is not None else None)


@pytest.mark.parametrize("method,path", [
    ({"service": "pkg.Svc", "method": "Do"}, PathMatch("Exact", "/pkg.Svc/Do")),
    ({"service": "pkg.Svc"}, PathMatch("PathPrefix", "/pkg.Svc")),
    ({"method": "Do"}, PathMatch("RegularExpression", "/[^/]+/Do")),
    ({}, PathMatch()),
    ({"type": "RegularExpression", "service": "pkg\\..*", "method": "Get.*"},
     PathMatch("RegularExpression", "/pkg\\..*/Get.*")),
])
def test_grpc_method_to_path(method, path):
    problems = []
    assert grpc_match({"method": method}, problems).path == path
    assert problems == []


def test_http_match_defaults_and_rejections():
    problems = []
    assert http_match({}, problems) == RouteMatch()
    assert http_match({"method": "get"}, problems).method == "GET"
    assert problems == []
    assert http_match({"path": {"type": "RegularExpression", "value": "("}}, problems) is None
    assert http_match({"path": {"type": "Exact", "value": "no-slash"}}, problems) is None
    assert [p.reason for p in problems] == ["UnsupportedValue", "UnsupportedValue"]


@pytest.mark.parametrize("value,seconds", [(None, None), ("0s", 0.0), ("1500ms", 1.5)])
def test_route_timeouts_keep_zero_apart_from_unset(value, seconds):
    """Gateway API's "0s" means no timeout; unset leaves the proxy's default in force."""
    assert _timeout(value) == seconds
