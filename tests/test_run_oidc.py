"""OIDC login as a user runs it: ``kgw run -c DIR`` and no other flag, in a private host, in
front of ``kgw echo``, with a real OpenID Provider (tests/oidc_provider.py, Authlib's
grants) and a real HTTP client following redirects with a cookie jar (requests): login,
the backend sees the forwarded tokens, refresh after expiry, a tampered cookie refused,
the cookie key rotated (old cookies still open, then rotated out), logout. Status: the
policy Accepted; one without its Secret Invalid naming the field, its route closed."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.helpers import condition, eventually, find, http_get
from tests.netns import Host, kgw_argv
from tests.oidc_provider import Provider

pytestmark = pytest.mark.slow

ADMIN = "http://127.0.0.1:9095"
PORT = 8080
ECHO = 9311
APP = f"http://127.0.0.1:{PORT}"
CALLBACK = f"{APP}/oauth2/callback"
HTML = {"accept": "text/html,application/xhtml+xml"}
JSON = {"accept": "application/json"}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def config(issuer: str, keys: list[bytes]) -> str:
    keys_text = "".join(_b64(k) + "\n" for k in keys)
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
metadata: {{name: oidc-client, namespace: test}}
data: {{client-secret: {_b64(b"s3cret")}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: oidc-cookie, namespace: test}}
data: {{keys: {_b64(keys_text.encode())}}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: app, namespace: test}}
spec:
  parentRefs: [{{name: gw}}]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: /}}}}]
    backendRefs: [{{name: echo, port: 80}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: broken, namespace: test}}
spec:
  parentRefs: [{{name: gw}}]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: /broken}}}}]
    backendRefs: [{{name: echo, port: 80}}]
---
apiVersion: gateway.kgw.dev/v1alpha1
kind: SecurityPolicy
metadata: {{name: login, namespace: test}}
spec:
  targetRefs: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, name: app}}]
  oidc:
    provider: {{issuer: "{issuer}"}}
    clientID: kgw
    clientSecret: {{name: oidc-client}}
    redirectURL: {CALLBACK}
    logoutPath: /logout
    scopes: [email]
    forwardAccessToken: true
    forwardIDTokenHeader: x-id-token
    cookieSecret: {{name: oidc-cookie}}
---
apiVersion: gateway.kgw.dev/v1alpha1
kind: SecurityPolicy
metadata: {{name: broken, namespace: test}}
spec:
  targetRefs: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, name: broken}}]
  oidc:
    provider: {{issuer: "{issuer}"}}
    clientID: kgw
    clientSecret: {{name: no-such-secret}}
    redirectURL: {APP}/broken/callback
    cookieSecret: {{name: oidc-cookie}}
"""


def key_id(key: bytes) -> bytes:
    return hashlib.sha256(key).digest()[:4]


def sealed_with(cookie: str) -> bytes:
    return base64.urlsafe_b64decode(cookie + "=" * (-len(cookie) % 4))[:4]


def browse(session: requests.Session, path: str, headers: dict[str, str] | None = None,
           **kw: Any) -> requests.Response:
    return session.get(APP + path, headers=headers or HTML, timeout=10, **kw)


def test_oidc_login_with_kgw_run(host: Host, tmp_path: Path) -> None:
    op: Provider = host.call(lambda: Provider(redirect_uris=(CALLBACK,)).start())
    op.expires_in = 3
    old, new = os.urandom(32), os.urandom(32)
    host.popen(kgw_argv("echo", "--address", "127.0.0.1", "--port", str(ECHO), "--pod",
                        "echo-x", "--namespace", "test"),
               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "gw.yaml").write_text(config(op.issuer, [old]))
    log = (tmp_path / "kgw.log").open("w")
    host.popen(kgw_argv("run", "-c", str(conf)), stdout=subprocess.DEVNULL, stderr=log)
    eventually(lambda: host.call(http_get, f"{ADMIN}/status")[0] == 200, timeout=30)
    eventually(lambda: host.call(lambda: browse(requests.Session(), "/", JSON)).status_code
               == 401, timeout=60)

    # Login: the client follows kgw -> the provider -> the callback -> back where it was.
    browser = requests.Session()
    r = host.call(browse, browser, "/app/page?x=1")
    assert r.status_code == 200, r.text
    assert [h.status_code for h in r.history] == [302, 302, 302]
    assert r.history[0].headers["location"].startswith(op.issuer + "/authorize?")
    echoed = r.json()
    assert echoed["path"] == "/app/page?x=1"
    access = echoed["headers"]["Authorization"][0]
    assert access.startswith("Bearer ")
    id_token = echoed["headers"]["X-Id-Token"][0]
    assert json.loads(base64.urlsafe_b64decode(id_token.split(".")[1] + "==")
                      )["sub"] == "alice"
    assert "Cookie" not in echoed["headers"]  # the session cookie is kgw's alone
    set_cookie = r.history[-1].headers["set-cookie"]
    assert "HttpOnly" in set_cookie and "SameSite=Lax" in set_cookie
    assert "Secure" not in set_cookie  # (an http redirect URL)
    session_cookie = browser.cookies["kgw-oidc-session"]
    assert sealed_with(session_cookie) == key_id(old)
    assert [g for g, _ in op.seen["token"]] == ["authorization_code"]

    # A script's request without a session: 401, not a redirect.
    assert host.call(browse, requests.Session(), "/app", JSON).status_code == 401
    assert host.call(browse, requests.Session(), "/app",
                     {**HTML, "x-requested-with": "XMLHttpRequest"}).status_code == 401

    # A tampered or forged cookie: no session.
    tampered = session_cookie[:-4] + ("AAAA" if session_cookie[-4:] != "AAAA" else "BBBB")
    r = host.call(browse, requests.Session(), "/app", JSON,
                  cookies={"kgw-oidc-session": tampered})
    assert r.status_code == 401

    # The access token expires: the next request is refreshed on the way.
    time.sleep(3.5)
    r = host.call(browse, browser, "/app/again", JSON)
    assert r.status_code == 200 and not r.history
    assert [g for g, _ in op.seen["token"]] == ["authorization_code", "refresh_token"]
    assert r.json()["headers"]["Authorization"][0] != access
    assert "kgw-oidc-session=" in r.headers["set-cookie"]
    refreshed = browser.cookies["kgw-oidc-session"]
    assert refreshed != session_cookie
    op.expires_in = 300
    time.sleep(3.5)
    r = host.call(browse, browser, "/app/again", JSON)
    assert r.status_code == 200
    current = browser.cookies["kgw-oidc-session"]

    # The cookie key rotated: a new key first, the old one kept; old cookies still open.
    (conf / "gw.yaml").write_text(config(op.issuer, [new, old]))

    def login_seals_with_new_key() -> bool:
        s = requests.Session()
        return host.call(browse, s, "/app").status_code == 200 and \
            sealed_with(s.cookies["kgw-oidc-session"]) == key_id(new)

    eventually(lambda: all(login_seals_with_new_key() for _ in range(4)), timeout=30)
    r = host.call(browse, requests.Session(), "/app", JSON,
                  cookies={"kgw-oidc-session": current})
    assert r.status_code == 200
    # Then the old key rotated out: cookies it sealed no longer open.
    (conf / "gw.yaml").write_text(config(op.issuer, [new]))
    eventually(lambda: host.call(browse, requests.Session(), "/app", JSON, cookies={
        "kgw-oidc-session": current}).status_code == 401, timeout=30)

    # Logout: cookie cleared, off to the provider's end-session endpoint.
    fresh = requests.Session()
    assert host.call(browse, fresh, "/app").status_code == 200
    r = host.call(browse, fresh, "/logout")
    assert r.status_code == 200 and r.url.startswith(op.issuer + "/logout?")
    assert r.history[0].status_code == 302 and "Max-Age=0" in r.history[0].headers["set-cookie"]
    assert "kgw-oidc-session" not in fresh.cookies
    [ended] = op.seen["logout"]
    assert ended["client_id"] == "kgw" and ended["id_token_hint"].count(".") == 2
    r = host.call(browse, fresh, "/app", JSON)
    assert r.status_code == 401

    # Status: the policy Accepted; the one without its Secret Invalid, its route closed.
    status = json.loads(host.call(http_get, f"{ADMIN}/status")[1])
    pol = find(status, "SecurityPolicy", "login", "test")
    cond = condition(pol["status"]["ancestors"][0]["conditions"], "Accepted")
    assert cond["status"] == "True", cond
    pol = find(status, "SecurityPolicy", "broken", "test")
    cond = condition(pol["status"]["ancestors"][0]["conditions"], "Accepted")
    assert (cond["status"], cond["reason"]) == ("False", "Invalid")
    assert "spec.oidc.clientSecret" in cond["message"]
    assert host.call(browse, requests.Session(), "/broken/x").status_code == 403
    host.call(op.close)
