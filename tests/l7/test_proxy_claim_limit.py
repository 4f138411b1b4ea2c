"""A local rate limit keyed by a JWT claim, through the proxy (a plane in front of ``kgw
echo``): the limit is taken after the JWT check, one bucket per value of the claim, and
the requests without one (no token verified, or a token without the claim) share a
bucket. Compiled, or interpreted with KGW_NO_EXTENSIONS=1."""

from __future__ import annotations

import pytest

from kgw_l7.auth_config import JWT, JWTProvider
from kgw_l7.config import L7Config, Listener, LocalRateLimit, RateLimit, RulePolicy, VirtualHost

from .conftest import PlaneRunner, free_port, request
from .test_auth import RSA, RSA2, jwk, jwks, token
from .test_proxy import backend, prefix, rule

pytestmark = pytest.mark.slow


def claim_limit(claim: str, scope: str) -> RateLimit:
    """Two requests per key, then none for a minute (nothing refills during the test)."""
    return RateLimit(local=LocalRateLimit(2, 1, 60.0, key="claim", claim=claim, scope=scope))


@pytest.fixture(scope="module")
def proxy(echoes):
    port = free_port()
    v1 = backend(echoes["v1"])
    jwt = JWT((JWTProvider("inline", local_jwks=jwks(jwk(RSA, "k1")),
                           issuer="https://issuer.test", audiences=("api",)),))
    routes = (
        prefix("/by-sub", rule("by-sub", v1, policy=RulePolicy(
            jwt=jwt, rate_limit=claim_limit("sub", "by sub")))),
        prefix("/by-org", rule("by-org", v1, policy=RulePolicy(
            jwt=jwt, rate_limit=claim_limit("org.id", "by org")))),
        prefix("/no-jwt", rule("no-jwt", v1, policy=RulePolicy(
            rate_limit=claim_limit("sub", "no jwt")))),
    )
    runner = PlaneRunner(workers=1, access_log="off")
    runner.apply(L7Config(listeners=(Listener("main", "127.0.0.1", port, virtual_hosts=(
        VirtualHost("*", routes),)),), generation=1))
    runner.port = port  # type: ignore[attr-defined]
    yield runner
    runner.close()


def statuses(port: int, path: str, tok: str | None, n: int) -> list[int]:
    headers = {"authorization": "Bearer " + tok} if tok else {}
    return [request(port, path, headers=headers).status for _ in range(n)]


def test_each_sub_has_its_own_bucket(proxy):
    alice, bob = token(RSA, sub="alice"), token(RSA, sub="bob")
    assert statuses(proxy.port, "/by-sub", alice, 3) == [200, 200, 429]
    assert statuses(proxy.port, "/by-sub", bob, 2) == [200, 200]  # alice's empty bucket
    assert statuses(proxy.port, "/by-sub", token(RSA, sub="alice", jti="another"), 1) == [429]
    # Refused by the JWT check before the limit: it takes no token of anyone's.
    assert statuses(proxy.port, "/by-sub", token(RSA2, sub="carol"), 3) == [401] * 3
    assert statuses(proxy.port, "/by-sub", token(RSA, sub="carol"), 2) == [200, 200]


def test_a_dotted_path_and_tokens_without_the_claim_share_one_bucket(proxy):
    acme = token(RSA, sub="a", org={"id": "acme"})
    assert statuses(proxy.port, "/by-org", acme, 2) == [200, 200]
    assert statuses(proxy.port, "/by-org", token(RSA, sub="b", org={"id": "acme"}), 1) \
        == [429]  # another user of the same org: the org's bucket
    assert statuses(proxy.port, "/by-org", token(RSA, sub="c", org={"id": "init"}), 1) \
        == [200]
    # No org.id: two different users share the no-claim bucket (leaving the claim out
    # does not escape the limit).
    assert statuses(proxy.port, "/by-org", token(RSA, sub="d"), 2) == [200, 200]
    assert statuses(proxy.port, "/by-org", token(RSA, sub="e", org="flat"), 1) == [429]


def test_without_a_jwt_policy_every_request_shares_the_no_claim_bucket(proxy):
    """A claim key on a rule without SecurityPolicy jwt: no claims are ever verified, so
    tokens are not looked at and all requests share one bucket."""
    assert statuses(proxy.port, "/no-jwt", None, 2) == [200, 200]
    assert statuses(proxy.port, "/no-jwt", token(RSA, sub="bob"), 1) == [429]
    r = request(proxy.port, "/no-jwt")
    assert r.status == 429 and int(r.header("retry-after")) >= 1
