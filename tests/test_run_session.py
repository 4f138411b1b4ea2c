"""Session persistence (Gateway API ``sessionPersistence``) through `kgw run` with every
default: a client keeps its endpoint across 1000 requests over many connections (so
across workers), moves only when that endpoint goes, and the Header type and the
timeouts work as GEP-1619 says."""

from __future__ import annotations

import collections
import http.client
import json
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers import eventually, http_get
from tests.netns import Host, kgw_argv

pytestmark = pytest.mark.slow

ADMIN = "http://127.0.0.1:9095"
PODS = {"127.0.0.11": "pod-a", "127.0.0.12": "pod-b", "127.0.0.13": "pod-c"}

GATEWAY = """\
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: kgw}
spec: {controllerName: kgw.dev/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: demo}
spec:
  gatewayClassName: kgw
  listeners: [{name: http, protocol: HTTP, port: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: app, namespace: demo}
spec:
  ports: [{name: http, port: 80, targetPort: 9200}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: cookie, namespace: demo}
spec:
  parentRefs: [{name: gw}]
  hostnames: [cookie.example.com]
  rules:
  - matches: [{path: {type: PathPrefix, value: /app}}]
    sessionPersistence: {sessionName: sid}
    backendRefs: [{name: app, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: header, namespace: demo}
spec:
  parentRefs: [{name: gw}]
  hostnames: [header.example.com]
  rules:
  - sessionPersistence: {sessionName: X-Session, type: Header, idleTimeout: 2s}
    backendRefs: [{name: app, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: permanent, namespace: demo}
spec:
  parentRefs: [{name: gw}]
  hostnames: [permanent.example.com]
  rules:
  - sessionPersistence:
      absoluteTimeout: 3s
      cookieConfig: {lifetimeType: Permanent}
    backendRefs: [{name: app, port: 80}]
"""


def endpoints(addresses: list[str]) -> str:
    eps = "\n".join(f"- addresses: [{a}]\n  conditions: {{ready: true}}" for a in addresses)
    return f"""\
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: app-1, namespace: demo, labels: {{kubernetes.io/service-name: app}}}}
addressType: IPv4
ports: [{{name: http, port: 9200}}]
endpoints:
{eps}
"""


def get(host: str, path: str = "/app", headers: dict | None = None,
        conn: http.client.HTTPConnection | None = None
        ) -> tuple[int, str, http.client.HTTPResponse]:
    """(status, pod, response) of one request, on ``conn`` if given (kept open)."""
    own = conn is None
    c = conn or http.client.HTTPConnection("127.0.0.1", 8080, timeout=5)
    try:
        c.request("GET", path, headers={"Host": host, **(headers or {})})
        resp = c.getresponse()
        body = resp.read()
        pod = json.loads(body)["pod"] if resp.status == 200 else ""
        return resp.status, pod, resp
    finally:
        if own:
            c.close()


def cookie_of(resp: http.client.HTTPResponse, name: str) -> tuple[str, str] | None:
    """(the ``name=value`` a browser sends back, the whole Set-Cookie) or None."""
    for v in resp.headers.get_all("set-cookie") or ():
        if v.startswith(name + "="):
            return v.split(";")[0], v
    return None


def sticky_run(cookie: str, n_conns: int, per_conn: int) -> collections.Counter[str]:
    pods: collections.Counter[str] = collections.Counter()
    for _ in range(n_conns):
        conn = http.client.HTTPConnection("127.0.0.1", 8080, timeout=5)
        try:
            for _ in range(per_conn):
                status, pod, resp = get("cookie.example.com", "/app/x", {"Cookie": cookie},
                                        conn)
                assert status == 200
                assert cookie_of(resp, "sid") is None  # a good session is not re-issued
                pods[pod] += 1
        finally:
            conn.close()
    return pods


def test_session_persistence_through_kgw_run(host: Host, tmp_path: Path) -> None:
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "gateway.yaml").write_text(GATEWAY)
    slice_file = conf / "endpoints.yaml"
    slice_file.write_text(endpoints(list(PODS)))
    echoes = {a: host.popen(kgw_argv("echo", "--address", a, "--port", "9200", "--pod", p,
                                     "--namespace", "demo", "--quiet"),
                            stdout=subprocess.DEVNULL)
              for a, p in PODS.items()}
    log = (tmp_path / "kgw.log").open("w")
    host.popen(kgw_argv("run", "-c", str(conf)), stdout=subprocess.DEVNULL, stderr=log)
    eventually(lambda: host.call(http_get, f"{ADMIN}/readyz")[0] == 200, timeout=30)
    eventually(lambda: host.call(get, "cookie.example.com")[0] == 200, timeout=15)

    # Without the cookie requests are balanced over the three endpoints, each answer
    # giving a session cookie (Path: the route's prefix; lifetime Session: no Max-Age).
    seen = collections.Counter()
    for _ in range(30):
        status, pod, resp = host.call(get, "cookie.example.com")
        assert status == 200
        sid = cookie_of(resp, "sid")
        assert sid is not None and sid[1].endswith("; Path=/app; HttpOnly"), sid
        seen[pod] += 1
    assert set(seen) == set(PODS.values())

    status, first, resp = host.call(get, "cookie.example.com")
    cookie = cookie_of(resp, "sid")[0]  # type: ignore[index]
    # 1000 requests over 50 connections (the kernel spreads them over the workers)
    pods = host.call(sticky_run, cookie, 50, 20)
    assert pods == {first: 1000}

    # A forged token is no session: balanced, and given a genuine one.
    name, token = cookie.split("=", 1)
    forged = name + "=" + ("B" if token[0] != "B" else "C") + token[1:]
    status, _, resp = host.call(get, "cookie.example.com", "/app", {"Cookie": forged})
    assert status == 200 and cookie_of(resp, "sid") is not None

    # The endpoint goes away: the session moves, once, and stays where it moved.
    pinned = next(a for a, p in PODS.items() if p == first)
    slice_file.write_text(endpoints([a for a in PODS if a != pinned]))
    echoes[pinned].terminate()

    def moved() -> tuple[str, str] | None:
        status, pod, resp = host.call(get, "cookie.example.com", "/app", {"Cookie": cookie})
        return cookie_of(resp, "sid") if status == 200 and pod != first else None

    new_cookie = eventually(moved, timeout=15)[0]
    pods = host.call(sticky_run, new_cookie, 10, 20)
    assert len(pods) == 1 and first not in pods and sum(pods.values()) == 200

    # Header type: the token comes in X-Session and goes back in it; idleTimeout 2s.
    status, pod, resp = host.call(get, "header.example.com", "/")
    token = resp.headers["x-session"]
    assert status == 200 and token
    for _ in range(20):
        status, again, resp = host.call(get, "header.example.com", "/", {"X-Session": token})
        assert (status, again) == (200, pod)
        token = resp.headers.get("x-session") or token  # renewed at most once a second
    time.sleep(3)  # idle for longer than idleTimeout: a new session, maybe elsewhere
    status, _, resp = host.call(get, "header.example.com", "/", {"X-Session": token})
    assert status == 200 and resp.headers["x-session"] != token

    # Permanent lifetime: Max-Age is the absolute timeout; the session ends with it.
    status, pod, resp = host.call(get, "permanent.example.com", "/")
    name_value, whole = cookie_of(resp, "kgw-session")  # type: ignore[misc]
    assert whole.endswith("; Path=/; HttpOnly; Max-Age=3")
    assert host.call(get, "permanent.example.com", "/", {"Cookie": name_value})[1] == pod
    time.sleep(3.2)
    status, _, resp = host.call(get, "permanent.example.com", "/", {"Cookie": name_value})
    assert status == 200 and cookie_of(resp, "kgw-session") is not None  # a new session
