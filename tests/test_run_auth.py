"""SecurityPolicy auth as a user runs it: ``kgw run -c DIR`` and no other flag, in a private
host, in front of ``kgw echo``; tokens signed by keys made here, a JWKS server that
rotates its keys and then hangs, htpasswd and API key Secrets, authorization rules; real
HTTP clients. Status: each policy Accepted on its route."""

from __future__ import annotations

import base64
import json
import subprocess
import time
import urllib.request
from pathlib import Path

import bcrypt
import pytest

from tests.helpers import condition, eventually, find, http_get
from tests.l7.test_auth import RSA, RSA2, JwksServer, jwk, jwks, token
from tests.netns import Host, kgw_argv

pytestmark = pytest.mark.slow

ADMIN = "http://127.0.0.1:9095"
PORT = 8080
ECHO = 9310


def _b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


def route(name: str, path: str) -> str:
    return f"""\
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}, namespace: test}}
spec:
  parentRefs: [{{name: gw}}]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: {path}}}}}]
    backendRefs: [{{name: echo, port: 80}}]
"""


def policy(name: str, target: str, spec: str) -> str:
    return f"""\
---
apiVersion: gateway.kgw.dev/v1alpha1
kind: SecurityPolicy
metadata: {{name: {name}, namespace: test}}
spec:
  targetRefs: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, name: {target}}}]
{spec}"""


def config(jwks_url: str) -> str:
    htpasswd = "ann:" + bcrypt.hashpw(b"secret", bcrypt.gensalt(5)).decode() + "\n"
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
---
apiVersion: v1
kind: Secret
metadata: {{name: htpasswd, namespace: test}}
data: {{.htpasswd: {_b64(htpasswd)}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: api-keys, namespace: test}}
data: {{mobile: {_b64("k-123")}}}
{route("jwt", "/jwt")}{route("remote", "/remote")}{route("basic", "/basic")}\
{route("key", "/key")}{route("admin", "/admin")}{route("elsewhere", "/elsewhere")}\
{route("open", "/")}\
{policy("jwt", "jwt", f'''  jwt:
    providers:
    - name: inline
      issuer: https://issuer.test
      audiences: [api]
      localJWKS: {{type: Inline, inline: '{inline}'}}
      claimToHeaders: [{{claim: sub, header: x-user}}]
''')}\
{policy("elsewhere", "elsewhere", f'''  jwt:
    providers:
    - name: inline
      localJWKS: {{type: Inline, inline: '{inline}'}}
      extractFrom: {{params: [access_token], cookies: [tok]}}
''')}\
{policy("remote", "remote", f'''  jwt:
    providers:
    - name: remote
      issuer: https://issuer.test
      audiences: [api]
      remoteJWKS: {{uri: "{jwks_url}", timeout: 1s}}
''')}\
{policy("basic", "basic", '''  basicAuth: {users: {name: htpasswd}, forwardUsernameHeader: x-user}
''')}\
{policy("key", "key", '''  apiKeyAuth:
    credentialRefs: [{name: api-keys}]
    extractFrom: [{headers: [x-api-key]}]
    forwardClientIDHeader: x-client
''')}\
{policy("admin", "admin", f'''  jwt:
    providers:
    - name: inline
      localJWKS: {{type: Inline, inline: '{inline}'}}
  authorization:
    rules:
    - name: admins
      action: Allow
      principal: {{jwt: {{claims: [{{name: role, values: [admin]}}]}}}}
''')}"""


def get(path: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(f"http://127.0.0.1:{PORT}{path}", headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


def bearer(tok: str) -> dict[str, str]:
    return {"authorization": "Bearer " + tok}


def test_security_policies_with_kgw_run(host: Host, tmp_path: Path) -> None:
    server: JwksServer = host.call(JwksServer)
    server.doc = jwks(jwk(RSA, "k1"))
    host.popen(kgw_argv("echo", "--address", "127.0.0.1", "--port", str(ECHO), "--pod",
                        "echo-x", "--namespace", "test"),
               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "gw.yaml").write_text(config(server.url))
    log = (tmp_path / "kgw.log").open("w")
    host.popen(kgw_argv("run", "-c", str(conf)), stdout=subprocess.DEVNULL, stderr=log)
    eventually(lambda: host.call(http_get, f"{ADMIN}/status")[0] == 200, timeout=30)
    eventually(lambda: host.call(get, "/")[0] == 200, timeout=60)

    # JWT, inline keys
    code, _, body = host.call(get, "/jwt", bearer(token(RSA)))
    assert code == 200 and json.loads(body)["headers"]["X-User"] == ["alice"]
    assert "Authorization" not in json.loads(body)["headers"]
    code, headers, _ = host.call(get, "/jwt")
    assert (code, headers["www-authenticate"]) == (401, 'Bearer realm="kgw"')
    for bad in (token(RSA, exp=int(time.time()) - 3600), token(RSA, aud="other"), token(RSA2),
                token(RSA)[:-6] + "xxxxxx", "e30.e30.", "a" * 10000):
        code, headers, _ = host.call(get, "/jwt", bearer(bad))
        assert code == 401 and 'error="invalid_token"' in headers["www-authenticate"], bad

    # JWT from a query parameter or a cookie: removed before forwarding, the rest kept
    code, _, body = host.call(get, f"/elsewhere/x?a=1&access_token={token(RSA)}&b=2")
    assert code == 200 and json.loads(body)["path"] == "/elsewhere/x?a=1&b=2"
    code, _, body = host.call(get, "/elsewhere/y", {"cookie": f"a=1; tok={token(RSA)}"})
    assert code == 200 and json.loads(body)["headers"]["Cookie"] == ["a=1"]
    assert host.call(get, "/elsewhere/y", {"cookie": "tok=forged"})[0] == 401

    # JWT, remote JWKS: rotated, then hanging (the last good keys keep serving)
    assert host.call(get, "/remote", bearer(token(RSA, "k1")))[0] == 200
    server.doc = jwks(jwk(RSA2, "k2"))
    time.sleep(2.2)
    assert host.call(get, "/remote", bearer(token(RSA2, "k2")))[0] == 200
    # Each worker keeps its own copy of the keys (refetched when a token names a key it
    # does not know): until every worker has seen k2, a request may reach one that has
    # not. Ten fresh tokens in a row accepted: the workers all know it.
    n = iter(range(10**6))
    eventually(lambda: all(host.call(get, "/remote", bearer(token(RSA2, "k2",
                                                                  jti=f"w{next(n)}")))[0]
                           == 200 for _ in range(10)), timeout=20)
    server.hang.set()
    assert host.call(get, "/remote", bearer(token(RSA2, "k2", jti="1")))[0] == 200
    time.sleep(2.2)
    t0 = time.monotonic()
    assert host.call(get, "/remote", bearer(token(RSA2, "k7")))[0] == 401
    assert time.monotonic() - t0 < 5

    # basic auth and API keys from Secrets
    good = {"authorization": "Basic " + _b64("ann:secret")}
    code, _, body = host.call(get, "/basic", good)
    assert code == 200 and json.loads(body)["headers"]["X-User"] == ["ann"]
    assert host.call(get, "/basic", {"authorization": "Basic " + _b64("ann:nope")})[0] == 401
    assert host.call(get, "/basic", {"authorization": "Basic ###"})[0] == 401
    code, _, body = host.call(get, "/key", {"x-api-key": "k-123"})
    assert code == 200 and json.loads(body)["headers"]["X-Client"] == ["mobile"]
    assert host.call(get, "/key", {"x-api-key": "k-999"})[0] == 401

    # authorization rules after authentication
    assert host.call(get, "/admin", bearer(token(RSA, role="admin")))[0] == 200
    assert host.call(get, "/admin", bearer(token(RSA, role="dev")))[0] == 403
    assert host.call(get, "/admin")[0] == 401
    assert host.call(get, "/open")[0] == 200

    status = json.loads(host.call(http_get, f"{ADMIN}/status")[1])
    for name in ("jwt", "remote", "basic", "key", "admin", "elsewhere"):
        pol = find(status, "SecurityPolicy", name, "test")
        assert pol is not None, name
        cond = condition(pol["status"]["ancestors"][0]["conditions"], "Accepted")
        assert cond["status"] == "True", (name, cond)
    server.hang.clear()
    host.call(server.close)
