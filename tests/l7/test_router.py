"""The compiled router and filters, without sockets."""

from __future__ import annotations

import collections

import pytest

from kgw_l7.config import (
    CORS, Backend, Endpoint, Filters, HeaderMatch, HeaderModifier, L7Config, Listener,
    Mirror, PathMatch, PathModifier, QueryParamMatch, Redirect, Route, RouteMatch, Rule, URLRewrite,
    VirtualHost,
)
from kgw_l7.router import (
    CorsPolicy, HeaderOps, RedirectAction, RouterCache, replace_prefix, split_target,
)


def rule(name: str, *backends: Backend, **kw) -> Rule:
    return Rule(name=name, route=name, gateway="gw", backends=backends, **kw)


def be(name: str, weight: int = 1) -> Backend:
    return Backend(name=name, weight=weight, endpoints=(Endpoint("10.0.0.1", 80),))


def route(match: RouteMatch, name: str) -> Route:
    return Route(match, rule(name, be(name)))


def build(vhosts, name="l") -> tuple[RouterCache, dict]:
    cache = RouterCache()
    cfg = L7Config((Listener(name, "0.0.0.0", 80, virtual_hosts=tuple(vhosts)),))
    return cache, cache.build(cfg)


def find(router, host: bytes, target: bytes, method=b"GET", headers=()):
    vh = router.vhost(host)
    if vh is None:
        return None
    path, query = split_target(target)
    r = vh.find(path, method, tuple(headers), query)
    return r.rule.name if r else None


def test_host_selection_order():
    vhs = [VirtualHost(h, (route(RouteMatch(), h),)) for h in
           ("*", "*.example.com", "*.a.example.com", "www.example.com")]
    _, routers = build(vhs)
    r = routers["l"]
    assert find(r, b"www.example.com", b"/") == "www.example.com"
    assert find(r, b"www.example.com.", b"/") == "www.example.com"  # trailing dot
    assert find(r, b"x.a.example.com", b"/") == "*.a.example.com"
    assert find(r, b"x.y.example.com", b"/") == "*.example.com"
    assert find(r, b"example.com", b"/") == "*"  # a wildcard needs a label in front
    assert find(r, b"other.org", b"/") == "*"
    _, routers = build([VirtualHost("only.test", (route(RouteMatch(), "o"),))])
    assert routers["l"].vhost(b"else.test") is None


@pytest.mark.parametrize("prefix,path,ok", [
    ("/", "/anything", True), ("/foo", "/foo", True), ("/foo", "/foo/", True),
    ("/foo", "/foo/bar", True), ("/foo", "/foobar", False), ("/foo/", "/foo", True),
    ("/foo/", "/foo/bar", True), ("/foo/", "/foox", False), ("/v1/api", "/v1/api/x", True),
])
def test_prefix_is_per_segment(prefix, path, ok):
    _, routers = build([VirtualHost("*", (
        route(RouteMatch(path=PathMatch("PathPrefix", prefix)), "p"),))])
    assert (find(routers["l"], b"h", path.encode()) == "p") is ok


def test_exact_regex_method_headers_query_and_order():
    routes = (
        route(RouteMatch(path=PathMatch("Exact", "/x")), "exact"),
        route(RouteMatch(path=PathMatch("RegularExpression", "/r/[a-z]+")), "regex"),
        route(RouteMatch(path=PathMatch("PathPrefix", "/m"), method="DELETE"), "method"),
        route(RouteMatch(path=PathMatch("PathPrefix", "/h"), headers=(
            HeaderMatch("X-A", "1"), HeaderMatch("x-b", "^b+$", "RegularExpression"))), "hdr"),
        route(RouteMatch(path=PathMatch("PathPrefix", "/q"), query_params=(
            QueryParamMatch("k", "v w"), QueryParamMatch("n", "[0-9]+", "RegularExpression"))),
            "query"),
        route(RouteMatch(), "fallback"),
    )
    _, routers = build([VirtualHost("*", routes)])
    r = routers["l"]
    assert find(r, b"h", b"/x") == "exact"
    assert find(r, b"h", b"/x?y") == "exact"
    assert find(r, b"h", b"/x/") == "fallback"
    assert find(r, b"h", b"/r/abc") == "regex"
    assert find(r, b"h", b"/r/abc1") == "fallback"  # full match only
    assert find(r, b"h", b"/m", b"DELETE") == "method"
    assert find(r, b"h", b"/m", b"GET") == "fallback"
    assert find(r, b"h", b"/h", headers=[(b"x-a", b"1"), (b"x-b", b"bbb")]) == "hdr"
    assert find(r, b"h", b"/h", headers=[(b"x-a", b"2"), (b"x-b", b"bbb")]) == "fallback"
    assert find(r, b"h", b"/h", headers=[(b"x-a", b"1")]) == "fallback"
    assert find(r, b"h", b"/q?k=v+w&n=12") == "query"
    assert find(r, b"h", b"/q?k=v%20w&n=12&k=other") == "query"  # first value counts
    assert find(r, b"h", b"/q?K=v+w&n=12") == "fallback"  # names are case-sensitive
    assert find(r, b"h", b"http://h/x") == "exact"  # absolute-form target


@pytest.mark.parametrize("path,prefix,repl,out", [
    (b"/foo/bar", b"/foo", b"/xyz", b"/xyz/bar"), (b"/foo", b"/foo", b"/xyz", b"/xyz"),
    (b"/foo/", b"/foo", b"/xyz", b"/xyz/"), (b"/foo/bar", b"/foo", b"/", b"/bar"),
    (b"/foo", b"/foo", b"/", b"/"), (b"/foo/bar", b"/foo/", b"/xyz/", b"/xyz/bar"),
    (b"/foo/bar", b"/", b"/xyz", b"/xyz/foo/bar"), (b"/strip-prefix", b"/strip-prefix", b"/", b"/"),
    (b"/prefix/one/two", b"/prefix/one", b"/one", b"/one/two"),
])
def test_replace_prefix(path, prefix, repl, out):
    assert replace_prefix(path, prefix, repl) == out


@pytest.mark.parametrize("redirect,scheme,port,location", [
    (Redirect(hostname="example.org"), b"http", 80, b"http://example.org/p?q=1"),
    (Redirect(hostname="example.org"), b"http", 8080, b"http://example.org:8080/p?q=1"),
    (Redirect(hostname="example.org", port=80), b"http", 8080, b"http://example.org/p?q=1"),
    (Redirect(scheme="https"), b"http", 8080, b"https://h.test/p?q=1"),
    (Redirect(scheme="https", port=8443), b"http", 80, b"https://h.test:8443/p?q=1"),
    (Redirect(scheme="http"), b"https", 443, b"http://h.test/p?q=1"),
    (Redirect(), b"https", 443, b"https://h.test/p?q=1"),
    (Redirect(port=443), b"https", 8443, b"https://h.test/p?q=1"),
    (Redirect(path=PathModifier("ReplaceFullPath", "/full")), b"http", 80,
     b"http://h.test/full?q=1"),
])
def test_redirect_location(redirect, scheme, port, location):
    action = RedirectAction(redirect)
    assert action.location(scheme, b"h.test", port, b"/p", b"q=1", b"/p") == location


def test_header_ops_order_set_add_remove():
    ops = HeaderOps(HeaderModifier(set=(("X-Set", "s"),), add=(("X-Add", "a"), ("X-Gone", "g")),
                                   remove=("x-gone", "X-Del")))
    out = ops.apply([(b"x-set", b"old"), (b"x-add", b"1"), (b"x-del", b"d"), (b"keep", b"k")])
    assert out == [(b"x-add", b"1"), (b"keep", b"k"), (b"x-set", b"s"), (b"x-add", b"a")]


def test_cors_policy():
    c = CorsPolicy(CORS(allow_origins=("https://www.foo.com", "https://*.bar.com"),
                        allow_methods=("*",), allow_headers=("*",), allow_credentials=True))
    assert c.allows(b"https://www.foo.com") and c.allows(b"https://a.b.bar.com")
    assert not c.allows(b"https://foobar.com") and not c.allows(b"http://www.foo.com")
    h = dict(c.preflight_headers(b"https://www.foo.com", b"PUT", b"x-a, x-b"))
    assert h[b"access-control-allow-methods"] == b"PUT"
    assert h[b"access-control-allow-headers"] == b"x-a, x-b"
    assert h[b"access-control-allow-credentials"] == b"true"
    assert h[b"access-control-max-age"] == b"5"
    assert CorsPolicy(CORS(allow_origins=("*",))).allows(b"https://foobar.com:12345")


def test_weights_and_zero_weight():
    r = rule("w", be("a", 3), be("b", 1), be("zero", 0))
    _, routers = build([VirtualHost("*", (Route(RouteMatch(), r),))])
    compiled = routers["l"].vhost(b"x").routes[0].rule
    counts = collections.Counter(compiled.pick_backend().name for _ in range(20000))
    assert counts["zero"] == 0
    assert abs(counts["a"] / 20000 - 0.75) < 0.02
    r0 = rule("w0", be("a", 0))
    _, routers = build([VirtualHost("*", (Route(RouteMatch(), r0),))])
    assert routers["l"].vhost(b"x").routes[0].rule.pick_backend() is None
    none = rule("none")
    _, routers = build([VirtualHost("*", (Route(RouteMatch(), none),))])
    assert routers["l"].vhost(b"x").routes[0].rule.direct_status == 500


def test_round_robin_endpoints():
    b = Backend("b", endpoints=(Endpoint("10.0.0.1", 1), Endpoint("10.0.0.2", 2)))
    _, routers = build([VirtualHost("*", (Route(RouteMatch(), rule("r", b)),))])
    cb = routers["l"].vhost(b"x").routes[0].rule.backends[0]
    assert [cb.pick() for _ in range(4)] == [("10.0.0.1", 1), ("10.0.0.2", 2)] * 2


def test_retry_picks_an_endpoint_not_tried_yet():
    eps = tuple(Endpoint(f"10.0.0.{i}", i) for i in (1, 2, 3))
    _, routers = build(
        [VirtualHost("*", (Route(RouteMatch(), rule("r", Backend("b", endpoints=eps))),))])
    cb = routers["l"].vhost(b"x").routes[0].rule.backends[0]
    a, b, c = (("10.0.0.1", 1), ("10.0.0.2", 2), ("10.0.0.3", 3))
    assert cb.pick() == a
    assert cb.pick() == b  # another request's, meanwhile
    assert cb.pick_untried([a]) == c
    # After a and c: a is next in turn, b is taken instead.
    assert cb.pick_untried([a, c]) == b
    # Everything tried: the next in turn.
    assert cb.pick_untried([a, b, c]) == c


def test_cache_reuses_unchanged_parts():
    keep = VirtualHost("keep.test", (route(RouteMatch(), "keep"),))
    change = VirtualHost("change.test", (route(RouteMatch(), "v1"),))
    cache = RouterCache()
    first = cache.build(L7Config((Listener("l", "0.0.0.0", 80, virtual_hosts=(keep, change)),)))
    assert cache.compiled_vhosts == 2
    change2 = VirtualHost("change.test", (route(RouteMatch(), "v2"),))
    second = cache.build(L7Config((Listener("l", "0.0.0.0", 80, virtual_hosts=(keep, change2)),)))
    assert cache.compiled_vhosts == 1
    assert second["l"].vhost(b"keep.test") is first["l"].vhost(b"keep.test")
    assert find(second["l"], b"change.test", b"/") == "v2"


def test_smooth_schedule_exact_and_interleaved():
    r = rule("w", be("a", 70), be("b", 30))
    _, routers = build([VirtualHost("*", (Route(RouteMatch(), r),))])
    compiled = routers["l"].vhost(b"x").routes[0].rule
    picks = [compiled.pick_backend().name for _ in range(500)]
    assert picks.count("a") == 350 and picks.count("b") == 150
    # interleaved, not 7 a's then 3 b's
    assert max(len(run) for run in "".join(picks).split("b") if run) <= 3
    huge = rule("h", be("a", 1), be("b", 100000))
    _, routers = build([VirtualHost("*", (Route(RouteMatch(), huge),))])
    assert routers["l"].vhost(b"x").routes[0].rule._schedule is None  # random fallback


def test_invalid_regex_matches_nothing_instead_of_failing():
    routes = (route(RouteMatch(path=PathMatch("RegularExpression", "/a[")), "bad"),
              route(RouteMatch(headers=(HeaderMatch("x", "(", "RegularExpression"),)), "bad2"),
              route(RouteMatch(), "ok"))
    _, routers = build([VirtualHost("*", routes)])
    assert find(routers["l"], b"h", b"/a[", headers=[(b"x", b"(")]) == "ok"


@pytest.mark.parametrize("filters, backend_filters, suffix", [
    (None, None, b""),
    (Filters(request_headers=HeaderModifier(add=(("X-A", "1"),))),
     Filters(request_headers=HeaderModifier(add=(("X-B", "2"),))), b"x-a: 1\r\nx-b: 2\r\n"),
    (Filters(request_headers=HeaderModifier(set=(("X-A", "1"),))), None, None),
    (Filters(request_headers=HeaderModifier(remove=("X-A",))), None, None),
    (None, Filters(request_headers=HeaderModifier(set=(("X-A", "1"),))), None),
    (Filters(rewrite=URLRewrite(hostname="other")), None, None),
    (None, Filters(rewrite=URLRewrite(path=PathModifier("ReplaceFullPath", "/x"))), None),
])
def test_head_suffix_only_when_the_head_is_not_rewritten(filters, backend_filters, suffix):
    """CompiledRule.head_suffix_for: the lines a request head as received gets, or no
    entry when the head must be rebuilt (set, remove, rewrites)."""
    b = Backend(name="b", endpoints=(Endpoint("10.0.0.1", 80),), filters=backend_filters)
    r = Rule(name="r", route="r", gateway="gw", backends=(b,), filters=filters)
    _, routers = build([VirtualHost("*", (Route(RouteMatch(), r),))])
    compiled = routers["l"].vhost(b"x").routes[0].rule
    assert compiled.head_suffix_for.get(compiled.backends[0]) == suffix


@pytest.mark.parametrize("protocol, mirror, backend_mirror, suffix", [
    ("http", None, None, b""),
    ("h2c", None, None, None),  # an HTTP/2 backend gets headers, never a head as received
    ("h2", None, None, None),
    ("http", "h2c", None, None),  # ... and so do its mirrors (they share the OutRequest)
    ("http", None, "h2c", None),
    ("http", "http", None, b""),
])
def test_http2_backends_and_their_mirrors_get_no_head_as_received(protocol, mirror,
                                                                  backend_mirror, suffix):
    def be(name: str, proto: str, filters: Filters | None = None) -> Backend:
        return Backend(name=name, endpoints=(Endpoint("10.0.0.1", 80),), protocol=proto,
                       filters=filters)
    bf = Filters(mirrors=(Mirror(be("bm", backend_mirror)),)) if backend_mirror else None
    rf = Filters(mirrors=(Mirror(be("m", mirror)),)) if mirror else None
    r = Rule(name="r", route="r", gateway="gw", backends=(be("b", protocol, bf),), filters=rf)
    _, routers = build([VirtualHost("*", (Route(RouteMatch(), r),))])
    compiled = routers["l"].vhost(b"x").routes[0].rule
    assert compiled.backends[0].h2 == (protocol != "http")
    assert compiled.head_suffix_for.get(compiled.backends[0]) == suffix


@pytest.mark.parametrize("timeouts, no_deadline, default_timeout", [
    ({}, True, True),  # unset: the worker's default response timeout applies
    ({"request_timeout": 0.0}, True, False),  # Gateway API "0s": no timeout at all
    ({"request_timeout": 0.0, "backend_timeout": 0.0}, True, False),
    ({"request_timeout": 5.0}, False, False),
    ({"backend_timeout": 1.0}, False, False),
])
def test_timeouts_unset_zero_and_set(timeouts, no_deadline, default_timeout):
    _, routers = build([VirtualHost("*", (Route(RouteMatch(), rule("t", be("a"), **timeouts)),))])
    compiled = routers["l"].vhost(b"x").routes[0].rule
    assert (compiled.no_deadline, compiled.default_timeout) == (no_deadline, default_timeout)
