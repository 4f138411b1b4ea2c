"""A local rate limit keyed by a JWT claim as a user runs it: ``kgw run -c DIR`` and no
other flag, in a private host, in front of ``kgw echo``; a SecurityPolicy jwt (inline
JWKS) and a TrafficPolicy whose ``rateLimit.local.key`` is ``{type: Claim, claim: sub}``
on the same route. One user empties its bucket (429) while another still gets 200;
both policies Accepted."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.helpers import condition, eventually, find, http_get
from tests.l7.test_auth import RSA, jwk, jwks, token
from tests.netns import Host, kgw_argv
from tests.test_run_auth import ADMIN, ECHO, PORT, bearer, get, policy, route

pytestmark = pytest.mark.slow


def config() -> str:
    inline = jwks(jwk(RSA, "k1"))
    return f"""\
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {{name: kgw}}
spec: {{controllerName: kgw.dev/gateway-controller}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw, namespace: test}}
spec:
  gatewayClassName: kgw
  listeners: [{{name: http, protocol: HTTP, port: {PORT}}}]
---
apiVersion: v1
kind: Service
metadata: {{name: echo, namespace: test}}
spec: {{ports: [{{port: 80}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: echo-1, namespace: test, labels: {{kubernetes.io/service-name: echo}}}}
addressType: IPv4
ports: [{{port: {ECHO}}}]
endpoints: [{{addresses: [127.0.0.1], conditions: {{ready: true}}}}]
{route("api", "/api")}{route("open", "/")}\
{policy("jwt", "api", f'''  jwt:
    providers:
    - name: inline
      issuer: https://issuer.test
      audiences: [api]
      localJWKS: {{type: Inline, inline: '{inline}'}}
''')}\
---
apiVersion: gateway.kgw.dev/v1alpha1
kind: TrafficPolicy
metadata: {{name: per-user, namespace: test}}
spec:
  targetRefs: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, name: api}}]
  rateLimit:
    local:
      tokenBucket: {{maxTokens: 3, tokensPerFill: 1, fillInterval: 1m}}
      key: {{type: Claim, claim: sub}}
"""


def test_claim_keyed_limit_with_kgw_run(host: Host, tmp_path: Path) -> None:
    host.popen(kgw_argv("echo", "--address", "127.0.0.1", "--port", str(ECHO), "--pod",
                        "echo-x", "--namespace", "test"),
               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "gw.yaml").write_text(config())
    log = (tmp_path / "kgw.log").open("w")
    host.popen(kgw_argv("run", "-c", str(conf)), stdout=subprocess.DEVNULL, stderr=log)
    eventually(lambda: host.call(http_get, f"{ADMIN}/status")[0] == 200, timeout=30)
    eventually(lambda: host.call(get, "/")[0] == 200, timeout=60)
    eventually(lambda: host.call(get, "/api")[0] == 401, timeout=30)

    alice, bob = bearer(token(RSA, sub="alice")), bearer(token(RSA, sub="bob"))
    got = [host.call(get, "/api", alice)[0] for _ in range(4)]
    assert got == [200, 200, 200, 429], got  # (one bucket for the node: every worker's)
    code, headers, _ = host.call(get, "/api", alice)
    assert code == 429 and int(headers["retry-after"]) >= 1, headers
    assert [host.call(get, "/api", bob)[0] for _ in range(3)] == [200] * 3
    assert host.call(get, "/api", bob)[0] == 429
    # No token: refused by the JWT check, before the limit (401, not 429).
    assert host.call(get, "/api")[0] == 401
    assert host.call(get, "/open")[0] == 200

    status = json.loads(host.call(http_get, f"{ADMIN}/status")[1])
    for kind, name in (("SecurityPolicy", "jwt"), ("TrafficPolicy", "per-user")):
        pol = find(status, kind, name, "test")
        assert pol is not None, name
        cond = condition(pol["status"]["ancestors"][0]["conditions"], "Accepted")
        assert cond["status"] == "True", (name, cond)
