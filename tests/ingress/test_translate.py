"""Ingress translation, table-tested through the real router: hosts, path types and
their precedence against each other and against an HTTPRoute on the same listener."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from conformance.ingress.world import self_signed
from controller.ingress.convert import Listening
from controller.objects import ObjectKey
from controller.translate import Options, translate
from kgw_l7.router import RouterCache, split_target
from tests.translate.worlds import gateway, http_route, service, slice_, store_of

CLASS = {"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
         "metadata": {"name": "kgw", "annotations": {
             "ingressclass.kubernetes.io/is-default-class": "true"}},
         "spec": {"controller": "kgw.dev/ingress-controller"}}


def ingress(name: str, spec: dict, ts: str = "2024-01-01T00:00:00Z",
            annotations: dict | None = None) -> dict:
    meta: dict[str, Any] = {"name": name, "namespace": "default", "creationTimestamp": ts}
    if annotations:
        meta["annotations"] = annotations
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": meta,
            "spec": spec}


def path(p: str, t: str, svc: str) -> dict:
    return {"path": p, "pathType": t, "backend": {"service": {"name": svc,
                                                               "port": {"number": 8080}}}}


SERVICES = ["exact", "prefix", "deep", "short", "wild", "default", "other", "route", "impl"]


def world(*objs: dict) -> list[dict]:
    out: list[dict] = [CLASS]
    for i, s in enumerate(SERVICES):
        out += [service(s, ports=[{"name": "http", "port": 8080}]),
                slice_(s, [f"10.0.0.{i + 1}"])]
    return [*out, *objs]


RULES = ingress("rules", {
    "defaultBackend": {"service": {"name": "default", "port": {"number": 8080}}},
    "rules": [
        {"host": "a.example.com", "http": {"paths": [
            path("/foo", "Exact", "exact"), path("/foo", "Prefix", "prefix"),
            path("/aaa/bbb/", "Prefix", "deep"), path("/aaa", "Prefix", "short"),
            path("/impl", "ImplementationSpecific", "impl")]}},
        {"host": "*.foo.com", "http": {"paths": [path("/", "Prefix", "wild")]}},
    ]})


def serve(objs: list[dict], options: Options = Options()) -> Any:
    t = translate(store_of(objs), options)
    return t, RouterCache().build(t.l7)


def pick(routers: dict, port: int, host: str, target: str) -> str | None:
    router = next(r for r in routers.values() if r.listener.port == port)
    vh = router.vhost(host.encode())
    if vh is None:
        return None
    p, q = split_target(target.encode())
    found = vh.find(p, b"GET", ((b"host", host.encode()),), q)
    if found is None:
        return None
    return found.rule.backends[0].name.split("/")[1].split(":")[0] if found.rule.backends \
        else "redirect"


@pytest.mark.parametrize("host,target,want", [
    ("a.example.com", "/foo", "exact"),         # Exact before Prefix of the same path
    ("a.example.com", "/foo/", "prefix"),
    ("a.example.com", "/foo/bar", "prefix"),    # element-wise prefix
    ("a.example.com", "/foobar", "default"),    # ... not a string prefix
    ("a.example.com", "/aaa/bbb", "deep"),      # trailing slash of a Prefix ignored
    ("a.example.com", "/aaa/bbb/ccc", "deep"),  # the longest prefix wins
    ("a.example.com", "/aaa/ccc", "short"),
    ("a.example.com", "/FOO", "default"),       # case-sensitive
    ("a.example.com", "/impl/x", "impl"),       # ImplementationSpecific: Prefix
    ("b.foo.com", "/x", "wild"),                # wildcard: one label
    ("c.b.foo.com", "/x", "default"),           # ... not two
    ("foo.com", "/x", "default"),               # ... not none
    ("unknown.test", "/", "default"),           # no rule: the default backend
])
def test_hosts_paths_and_precedence(host: str, target: str, want: str) -> None:
    _t, routers = serve(world(RULES))
    assert pick(routers, 80, host, target) == want


def test_without_default_backend_unmatched_requests_are_not_routed() -> None:
    spec = dict(RULES["spec"])
    del spec["defaultBackend"]
    _t, routers = serve(world(ingress("rules", spec)))
    assert pick(routers, 80, "a.example.com", "/foobar") is None
    assert pick(routers, 80, "c.b.foo.com", "/") is None


def test_httproute_on_the_same_listener_shares_one_precedence() -> None:
    """A Gateway of the user's on port 80 shares the socket: an HTTPRoute's longer prefix
    wins over an Ingress's shorter one on the same host, and the Ingress's Exact over the
    route's prefix, as between two HTTPRoutes."""
    gw = gateway("gw", [{"name": "http", "port": 80, "protocol": "HTTP"}])
    gw["metadata"]["creationTimestamp"] = "2025-01-01T00:00:00Z"
    route = http_route("r", [{"name": "gw"}], [{
        "matches": [{"path": {"type": "PathPrefix", "value": "/aaa/ccc"}}],
        "backendRefs": [{"name": "route", "port": 8080}]}], hostnames=["a.example.com"])
    gwc = {"kind": "GatewayClass", "metadata": {"name": "kgw"},
           "spec": {"controllerName": "kgw.dev/gateway-controller"}}
    t, routers = serve(world(RULES, gwc, gw, route))
    assert pick(routers, 80, "a.example.com", "/aaa/ccc/d") == "route"
    assert pick(routers, 80, "a.example.com", "/aaa/x") == "short"
    assert pick(routers, 80, "a.example.com", "/foo") == "exact"
    assert t.statuses[ObjectKey("Gateway", "default", "gw")]["listeners"][0]["conditions"]


def test_status_and_ports_from_options() -> None:
    t, routers = serve(world(RULES), Options(node_addresses=("192.0.2.7",),
                                             ingress=Listening(8080, 0)))
    assert [r.listener.port for r in routers.values()] == [8080]
    assert t.statuses[ObjectKey("Ingress", "default", "rules")] == {
        "loadBalancer": {"ingress": [{"ip": "192.0.2.7"}]}}
    # the generated objects are not reported as the user's
    assert not [k for k in t.statuses if k.kind in ("Gateway", "HTTPRoute", "GatewayClass")]


def test_ingress_of_another_class_is_not_served() -> None:
    other = ingress("other", {**RULES["spec"], "ingressClassName": "nginx"})
    t, routers = serve(world(other))
    assert routers == {}
    assert ObjectKey("Ingress", "default", "other") not in t.statuses


def test_no_default_class_serves_only_named_ingresses() -> None:
    cls = {**CLASS, "metadata": {"name": "kgw"}}
    named = ingress("named", {**RULES["spec"], "ingressClassName": "kgw"})
    t, _ = serve([cls, *world(RULES)[1:], named])
    assert ObjectKey("Ingress", "default", "named") in t.statuses
    assert ObjectKey("Ingress", "default", "rules") not in t.statuses


def problems_of(t: Any) -> list[str]:
    return [f"{p.key.name} {p.field}: {p.message}" for p in t.problems]


def test_bad_input_is_reported_and_the_rest_served() -> None:
    bad = ingress("bad", {"rules": [{"host": "b.example.com", "http": {"paths": [
        path("relative", "Prefix", "exact"),
        path("/missing", "Prefix", "nosuch"),
        {"path": "/res", "pathType": "Prefix",
         "backend": {"resource": {"apiGroup": "x", "kind": "Bucket", "name": "b"}}},
        path("/ok", "Prefix", "other")]}}],
        "tls": [{"hosts": ["b.example.com"], "secretName": "notcert"}]},
        ts="2024-02-01T00:00:00Z")
    newer = ingress("newer", {"rules": [{"host": "a.example.com", "http": {"paths": [
        path("/foo", "Exact", "other")]}}]}, ts="2024-03-01T00:00:00Z")
    secret = {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
              "metadata": {"name": "notcert", "namespace": "default"},
              "data": {"tls.crt": "bm90IGEgY2VydA==", "tls.key": "bm90IGEga2V5"}}
    t, routers = serve(world(RULES, bad, newer, secret))
    found = "\n".join(problems_of(t))
    assert "BackendNotFound" not in found.replace("nosuch", "").split("\n")[0]
    assert "path 'relative' is not absolute" in found
    assert "BackendNotFound" in found and "nosuch" in found
    assert "resource backend Bucket b" in found
    assert "newer spec.rules[0].http.paths[0]: host a.example.com path /foo (Exact) is " \
           "already served by Ingress default/rules: the older Ingress keeps it" in found
    assert "bad spec.tls: listener https-0: ResolvedRefs InvalidCertificateRef" in found
    assert pick(routers, 80, "b.example.com", "/ok") == "other"
    assert pick(routers, 80, "a.example.com", "/foo") == "exact"
    http80 = next(r for r in routers.values() if r.listener.port == 80)
    missing = http80.vhost(b"b.example.com").find(b"/missing", b"GET", (), b"")
    # answered 500, as an HTTPRoute's missing backend
    assert missing is not None
    assert [(b.name, b.error_status) for b in missing.rule.backends] == [
        ("default/nosuch:8080", 500)]


def test_port_shared_with_a_gateway_or_reported() -> None:
    """HTTP with HTTP shares port 80; an older Gateway with HTTPS on port 80 keeps it, and
    the Ingress listener's conflict is reported (and no address is shown)."""
    gwc = {"kind": "GatewayClass", "metadata": {"name": "kgw"},
           "spec": {"controllerName": "kgw.dev/gateway-controller"}}
    cert, key = self_signed(["a.example.com"])
    secret = {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
              "metadata": {"name": "s", "namespace": "default"},
              "data": {"tls.crt": base64.b64encode(cert).decode(),
                       "tls.key": base64.b64encode(key).decode()}}
    gw = gateway("gw", [{"name": "https", "port": 80, "protocol": "HTTPS",
                         "tls": {"certificateRefs": [{"name": "s"}]}}])
    gw["metadata"]["creationTimestamp"] = "2020-01-01T00:00:00Z"
    t, _ = serve(world(RULES, gwc, gw, secret))
    found = "\n".join(str(p) for p in t.problems)
    assert "Gateway kgw.dev/ingress: listener http: Accepted PortUnavailable: port 80 is used " \
           "by Gateway default/gw" in found, found
    assert t.statuses[ObjectKey("Ingress", "default", "rules")] == {"loadBalancer": {}}


def test_incremental_translation_follows_ingress_changes() -> None:
    """The incremental translator re-resolves the generated routes an Ingress change
    touches, with the same result as translating everything again."""
    from controller.source import Event, EventType
    from controller.translate import Translator

    store = store_of(world(RULES))
    tr = Translator()
    tr.update(store, set())
    changed = ingress("rules", {"rules": [{"host": "a.example.com", "http": {"paths": [
        path("/new", "Exact", "other")]}}]})
    keys = store.apply([Event(EventType.MODIFIED, ObjectKey.of(changed), changed, "2", 2)])
    incremental = tr.update(store, keys)
    assert incremental.l7 == translate(store).l7
    routers = RouterCache().build(incremental.l7)
    assert pick(routers, 80, "a.example.com", "/new") == "other"
    assert pick(routers, 80, "a.example.com", "/foo") is None
    gone = store.apply([Event(EventType.DELETED, ObjectKey.of(changed), changed, "3", 3)])
    after = tr.update(store, gone)
    assert after.l7 == translate(store).l7 and not after.l7.listeners
    assert ObjectKey("Ingress", "default", "rules") not in after.statuses


def test_same_prefix_with_trailing_slash_is_the_same_claim() -> None:
    older = ingress("older", {"rules": [{"host": "c.example.com", "http": {"paths": [
        path("/foo", "Prefix", "exact")]}}]}, ts="2024-01-01T00:00:00Z")
    newer = ingress("newer", {"rules": [{"host": "c.example.com", "http": {"paths": [
        path("/foo/", "Prefix", "other")]}}]}, ts="2024-06-01T00:00:00Z")
    t, routers = serve(world(newer, older))
    assert any(p.key.name == "newer" and "already served by Ingress default/older" in p.message
               for p in t.problems)
    assert pick(routers, 80, "c.example.com", "/foo/x") == "exact"


def test_proxy_body_size_becomes_the_routes_request_limit() -> None:
    limited = ingress("limited", {"rules": [{"host": "l.example.com", "http": {"paths": [
        path("/", "Prefix", "other")]}}]},
        annotations={"nginx.ingress.kubernetes.io/proxy-body-size": "8m"})
    bad = ingress("bad-size", {"rules": [{"host": "b.example.com", "http": {"paths": [
        path("/", "Prefix", "other")]}}]},
        annotations={"nginx.ingress.kubernetes.io/proxy-body-size": "lots"})
    t, _ = serve(world(limited, bad))
    policies = {}
    for lis in t.l7.listeners:
        for vh in lis.virtual_hosts:
            for r in vh.routes:
                policies[r.rule.route] = r.rule.policy
    limited_route = next(k for k in policies if k.startswith("default/limited"))
    assert policies[limited_route].request_limits.max_body_size == 8 * 1024 * 1024
    bad_route = next(k for k in policies if k.startswith("default/bad-size"))
    assert policies[bad_route] is None
    # the generated policy's status is not reported as an object of the user's
    assert not any(k.kind == "TrafficPolicy" for k in t.statuses)
    assert ("nginx.ingress.kubernetes.io/proxy-body-size", "not a size (a number, "
            "optionally k, m or g)") in [(a, why) for _k, a, why in t.ingress.ignored]


def test_one_set_of_ports_the_default_classs_and_other_parameters_are_reported() -> None:
    def klass(name: str, cm: str, default: bool = False) -> dict:
        meta: dict[str, Any] = {"name": name}
        if default:
            meta["annotations"] = {"ingressclass.kubernetes.io/is-default-class": "true"}
        return {"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass", "metadata": meta,
                "spec": {"controller": "kgw.dev/ingress-controller",
                         "parameters": {"kind": "ConfigMap", "namespace": "default",
                                        "name": cm}}}

    def config(name: str, port: int) -> dict:
        return {"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": name, "namespace": "default"},
                "data": {"httpPort": str(port), "httpsPort": "0"}}

    objs = [o for o in world(RULES) if o is not CLASS]
    objs += [klass("kgw", "ports-a", default=True), klass("kgw-b", "ports-b"),
             config("ports-a", 8081), config("ports-b", 8082)]
    t, routers = serve(objs)
    assert [r.listener.port for r in routers.values()] == [8081]
    assert ("kgw-b spec.parameters: parameters not used: the Ingresses of every kgw class "
            "are served on one set of ports, those of IngressClass kgw") in problems_of(t)
