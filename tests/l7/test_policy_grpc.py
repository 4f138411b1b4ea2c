"""A rule's local rate limit answers a gRPC call the way gRPC clients read it:
RESOURCE_EXHAUSTED (grpc-status 8) in a trailers-only response, with the retry hints
(a 1-worker plane, a real grpcio backend, tests/grpcsvc.py)."""

from __future__ import annotations

import grpc
import pytest

from kgw_l7.config import (
    Backend, Endpoint, L7Config, Listener, LocalRateLimit, PathMatch, RateLimit, Route,
    RouteMatch, Rule, RulePolicy, VirtualHost,
)
from tests.grpcsvc import GrpcTestClient, GrpcTestServer

from .conftest import PlaneRunner, free_port

pytestmark = pytest.mark.slow


def test_a_rate_limited_grpc_call_is_resource_exhausted() -> None:
    server = GrpcTestServer("s").start()
    port = free_port()
    runner = PlaneRunner(workers=1, access_log="off")
    try:
        policy = RulePolicy(rate_limit=RateLimit(local=LocalRateLimit(
            max_tokens=2, tokens_per_fill=1, fill_interval=60.0, scope="test grpc")))
        rule = Rule(name="infra/g/0", route="infra/g", gateway="infra/gw", policy=policy,
                    backends=(Backend(name="infra/s:80",
                                      endpoints=(Endpoint("127.0.0.1", server.port),),
                                      protocol="h2c"),))
        runner.apply(L7Config((Listener("main", "127.0.0.1", port, virtual_hosts=(
            VirtualHost("*", (Route(RouteMatch(path=PathMatch("PathPrefix", "/")), rule),)),)),),
            1))
        with GrpcTestClient(f"127.0.0.1:{port}") as c:
            results = [c.unary() for _ in range(3)]
        assert [r.code for r in results[:2]] == [grpc.StatusCode.OK] * 2, results
        limited = results[2]
        assert limited.code is grpc.StatusCode.RESOURCE_EXHAUSTED, limited
        meta = dict(limited.trailing_metadata) | dict(limited.initial_metadata)
        assert int(meta["retry-after"]) >= 1 and "ratelimit" in meta, meta
    finally:
        runner.close()
        server.stop(0)
