"""A SecurityPolicy ``jwt`` on a GRPCRoute, translated by the controller and served by a
1-worker plane in front of a real grpcio server, called by a real grpcio client: a call
without a token is UNAUTHENTICATED (grpc-status 16), one without the required scope
PERMISSION_DENIED (7), both never reaching the server; a good token passes with its
claim forwarded as metadata and the token itself removed."""

from __future__ import annotations

import dataclasses

import grpc
import pytest

from controller.translate import translate
from tests.grpcsvc import GrpcTestClient, GrpcTestServer
from tests.policy.worlds import ref, tp
from tests.translate.worlds import CLASS, gateway, http_route, service, slice_, store_of

from .conftest import PlaneRunner, free_port
from .test_auth import RSA, RSA2, jwk, jwks, token

pytestmark = pytest.mark.slow


def objects(port: int, backend_port: int) -> list[dict]:
    return [
        CLASS,
        gateway("gw", [{"name": "grpc", "port": port, "protocol": "HTTP"}]),
        http_route("calls", [{"name": "gw"}], kind="GRPCRoute", rules=[
            {"matches": [{"method": {"service": "kgw.test.grpcsvc.Test"}}],
             "backendRefs": [{"name": "svc", "port": 80}]}]),
        service("svc", ports=[{"name": "grpc", "port": 80}]),
        slice_("svc", ["127.0.0.1"], port=backend_port, port_name="grpc"),
        tp("jwt", [ref("GRPCRoute", "calls")], kind="SecurityPolicy", jwt={
            "providers": [{"name": "p", "issuer": "https://issuer.test", "audiences": ["api"],
                           "localJWKS": {"type": "Inline", "inline": jwks(jwk(RSA, "k1"))},
                           "claimToHeaders": [{"claim": "sub", "header": "x-user"}]}],
            "requiredScopes": ["orders:write"]}),
    ]


def test_jwt_on_a_grpc_route() -> None:
    server = GrpcTestServer("s").start()
    port = free_port()
    t = translate(store_of(objects(port, server.port)))
    [listener] = t.l7.listeners
    config = dataclasses.replace(t.l7, listeners=(dataclasses.replace(
        listener, address="127.0.0.1"),))
    [rule] = [r.rule for vh in listener.virtual_hosts for r in vh.routes]
    assert rule.policy is not None and rule.policy.jwt is not None
    runner = PlaneRunner(workers=1, access_log="off")
    try:
        runner.apply(config)
        good = token(RSA, scope="orders:write orders:read")
        with GrpcTestClient(f"127.0.0.1:{port}") as c:
            missing = c.unary()
            bad_signature = c.unary(metadata=[("authorization", "Bearer " + token(
                RSA2, scope="orders:write"))])
            no_scope = c.unary(metadata=[("authorization", "Bearer " + token(
                RSA, scope="orders:read"))])
            ok = c.unary(metadata=[("authorization", "Bearer " + good)])
        assert missing.code is grpc.StatusCode.UNAUTHENTICATED, missing
        assert bad_signature.code is grpc.StatusCode.UNAUTHENTICATED, bad_signature
        assert no_scope.code is grpc.StatusCode.PERMISSION_DENIED, no_scope
        assert ok.code is grpc.StatusCode.OK, ok
        [seen] = server.wait_calls()  # only the good call reached the server
        assert seen.header("x-user") == ["alice"]
        assert seen.header("authorization") == []
    finally:
        runner.close()
        server.stop(0)
