"""External authorization with ``kgw run -c DIR`` and no other flag: the Gateway API
``ExternalAuth`` filter against a real HTTP ext-auth service and a real grpcio one
(tests/authservers.py, in the private host), allowing (the service's header reaches the
backend), denying (status, header and body passed through), timing out (the default 2 s)
and being down (fail closed); the same through SecurityPolicy extAuth on an HTTPRoute (its
own timeout and error status) and on a GRPCRoute (gRPC clients get gRPC statuses); the
access log says why."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import eventually, http_get
from tests.netns import Host, kgw_argv

pytestmark = pytest.mark.slow

ECHO, HTTP_AUTH, GRPC_AUTH, DEAD = 9411, 9401, 9402, 9409
CONF = """\
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: kgw}
spec: {controllerName: kgw.dev/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: app}
spec:
  gatewayClassName: kgw
  addresses: [{type: IPAddress, value: 127.0.0.1}]
  listeners: [{name: http, protocol: HTTP, port: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: shop, namespace: app}
spec:
  parentRefs: [{name: gw}]
  # (a hostname of its own: an HTTPRoute whose hostnames meet the GRPCRoute's on the same
  # listener would give way to the older one, as the GRPCRoute spec says)
  hostnames: [shop.example.com]
  rules:
  - matches: [{path: {type: PathPrefix, value: /http}}]
    filters:
    - type: ExternalAuth
      externalAuth:
        protocol: HTTP
        backendRef: {name: authz-http, namespace: auth, port: 80}
        http: {path: /check, allowedResponseHeaders: [x-user]}
    backendRefs: [{name: echo, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /grpc}}]
    filters:
    - type: ExternalAuth
      externalAuth:
        protocol: GRPC
        backendRef: {name: authz-grpc, namespace: auth, port: 9000}
        grpc: {}
        forwardBody: {maxSize: 16}
    backendRefs: [{name: echo, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /down}}]
    filters:
    - type: ExternalAuth
      externalAuth:
        protocol: GRPC
        backendRef: {name: authz-dead, namespace: auth, port: 9000}
        grpc: {}
    backendRefs: [{name: echo, port: 80}]
---
# SecurityPolicy extAuth on a route (gRPC service, kgw's own timeout and error status)
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: secured, namespace: app}
spec:
  parentRefs: [{name: gw}]
  hostnames: [secured.example.com]
  rules: [{backendRefs: [{name: echo, port: 80}]}]
---
apiVersion: gateway.kgw.dev/v1alpha1
kind: SecurityPolicy
metadata: {name: secured, namespace: app}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: secured}]
  extAuth:
    protocol: GRPC
    backendRef: {name: authz-grpc-local, port: 9000}
    grpc: {}
    timeout: 500ms
    statusOnError: 503
---
# ... and on a GRPCRoute (HTTP service): its gRPC clients get gRPC statuses
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: calls, namespace: app}
spec:
  parentRefs: [{name: gw}]
  hostnames: [grpc.example.com]
  rules: [{backendRefs: [{name: authz-grpc-local, port: 9000}]}]
---
apiVersion: gateway.kgw.dev/v1alpha1
kind: SecurityPolicy
metadata: {name: calls, namespace: app}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: GRPCRoute, name: calls}]
  extAuth:
    protocol: HTTP
    backendRef: {name: authz-http-local, port: 80}
    http: {}
---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: routes, namespace: auth}
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: app}]
  to: [{group: "", kind: Service}]
"""
SERVICE = """\
---
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: {ns}}}
spec: {{ports: [{{name: p, port: {port}}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: {name}-a, namespace: {ns}, labels: {{kubernetes.io/service-name: {name}}}}}
addressType: IPv4
ports: [{{name: p, port: {target}}}]
endpoints: [{{addresses: [127.0.0.1], conditions: {{ready: true}}}}]
"""


def _get(path: str, token: str | None, body: bytes | None = None,
         host: str = "shop.example.com") -> tuple[int, dict[str, str], bytes]:
    c = http.client.HTTPConnection("127.0.0.1", 8080, timeout=15)
    try:
        headers = {"Host": host, "X-User": "mallory"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        c.request("POST" if body else "GET", path, body=body, headers=headers)
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        c.close()


def test_external_auth_through_kgw_run(host: Host, tmp_path: Path) -> None:
    pytest.importorskip("envoy.service.auth.v3.external_auth_pb2")
    conf = tmp_path / "conf"
    conf.mkdir()
    services = [("echo", "app", 80, ECHO), ("authz-http", "auth", 80, HTTP_AUTH),
                ("authz-grpc", "auth", 9000, GRPC_AUTH), ("authz-dead", "auth", 9000, DEAD),
                ("authz-grpc-local", "app", 9000, GRPC_AUTH),
                ("authz-http-local", "app", 80, HTTP_AUTH)]
    (conf / "gateway.yaml").write_text(CONF + "".join(
        SERVICE.format(name=n, ns=ns, port=p, target=t) for n, ns, p, t in services))
    host.popen(kgw_argv("echo", "--port", str(ECHO), "--pod", "echo-x", "--namespace", "app"),
               stdout=subprocess.DEVNULL)
    auth = host.popen([sys.executable, "-m", "tests.authservers", str(HTTP_AUTH),
                       str(GRPC_AUTH)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert auth.stdout is not None and auth.stdout.readline().startswith(b"ready")
    kgw = host.popen(kgw_argv("run", "-c", str(conf)), stdout=subprocess.PIPE,
                     stderr=open(tmp_path / "kgw.log", "wb"))
    eventually(lambda: host.call(http_get, "http://127.0.0.1:9095/readyz")[0] == 200, timeout=30)

    # allowed: the service's x-user replaces the client's
    for path in ("/http/a", "/grpc/a"):
        status, _, body = eventually(lambda p=path: _ok(host.call(_get, p, "good")), timeout=15)
        assert json.loads(body)["headers"]["X-User"] == ["alice"], path
    status, _, body = host.call(_get, "/grpc/body", "good", b"x" * 100)
    assert status == 200 and json.loads(body)["body"]["length"] == 100

    # denied: status, header and body passed through
    for path in ("/http/a", "/grpc/a"):
        status, headers, body = host.call(_get, path, "wrong")
        assert status == 401 and headers["www-authenticate"] == 'Bearer realm="test"', path
        assert body == b"denied by the test auth service\n"
        status, headers, _ = host.call(_get, path, "teapot")
        assert (status, headers["x-why"]) == (418, "short and stout"), path
        assert host.call(_get, path, None)[0] == 401

    # a service that does not answer in time (the default 2 s), a service that is down
    t0 = time.monotonic()
    assert host.call(_get, "/http/slow", "slow")[0] == 403
    assert 1.5 < time.monotonic() - t0 < 4.5
    assert host.call(_get, "/down/a", "good")[0] == 403

    # SecurityPolicy on an HTTPRoute: allowed, denied, kgw's 500ms timeout -> 503
    sec = "secured.example.com"
    status, _, body = eventually(lambda: _ok(host.call(_get, "/x", "good", None, sec)),
                                 timeout=15)
    assert json.loads(body)["headers"]["X-User"] == ["alice"]
    assert host.call(_get, "/x", "wrong", None, sec)[0] == 401
    t0 = time.monotonic()
    assert host.call(_get, "/slow", "slow", None, sec)[0] == 503
    assert time.monotonic() - t0 < 2.5

    # SecurityPolicy on a GRPCRoute: a denied call is UNAUTHENTICATED (16), an allowed one
    # reaches the service (here the gRPC auth service itself: its Check answers)
    from envoy.service.auth.v3 import external_auth_pb2 as pb

    from tests.test_run_grpc import _frame, _raw_call
    msg = pb.CheckRequest()
    msg.attributes.request.http.headers["authorization"] = "Bearer good"
    call = ("grpc.example.com", "/envoy.service.auth.v3.Authorization/Check",
            _frame(msg.SerializeToString()))

    def grpc_call(token: str) -> dict[bytes, bytes]:
        _, fields, _ = _raw_call(call[0].encode(), call[1].encode(),
                                 [(b"authorization", f"Bearer {token}".encode())], call[2])
        return fields

    assert host.call(grpc_call, "wrong")[b"grpc-status"] == b"16"
    assert host.call(grpc_call, "good")[b"grpc-status"] == b"0"

    kgw.terminate()
    out, _ = kgw.communicate(timeout=20)
    auth.kill()
    lines = [json.loads(line) for line in out.splitlines() if line.startswith(b"{")]
    denied = [line for line in lines if line["response_code"] in (401, 403, 418, 503)]
    assert denied and all(line["response_flags"] == "UAEX" for line in denied), denied
    details = {line["path"]: line["response_code_details"] for line in denied}
    assert "timeout" in details["/http/slow"] and "authz-dead" in details["/down/a"], details
    assert "timeout (0.5s)" in details["/slow"], details
    log = (tmp_path / "kgw.log").read_text(errors="replace")
    assert "Traceback" not in log, log[-4000:]


def _ok(r: tuple[int, dict[str, str], bytes]) -> tuple[int, dict[str, str], bytes]:
    assert r[0] == 200, r
    return r
