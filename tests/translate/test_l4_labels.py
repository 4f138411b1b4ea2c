"""What the L4 config records for metrics labels: each frontend's Gateway, listener and
route, and, for TLS passthrough, the listener each SNI route came through (a route
attached through two listeners of one port is two SNI routes, each with the hostnames its
listener owns, in the same order of precedence)."""

from __future__ import annotations

from controller.translate import translate
from tests.translate.worlds import CLASS, gateway, service, slice_, store_of


def tls_route(name: str, hostnames: list[str]) -> dict:
    return {"apiVersion": "gateway.networking.k8s.io/v1alpha2", "kind": "TLSRoute",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"parentRefs": [{"name": "gw"}], "hostnames": hostnames,
                     "rules": [{"backendRefs": [{"name": "svc", "port": 80}]}]}}


def passthrough(name: str, hostname: str) -> dict:
    return {"name": name, "port": 443, "protocol": "TLS", "hostname": hostname,
            "tls": {"mode": "Passthrough"}}


def test_a_tls_route_through_two_listeners_is_one_sni_route_per_listener():
    t = translate(store_of([
        CLASS,
        gateway("gw", [passthrough("a", "*.a.example.com"), passthrough("b", "*.b.example.com")]),
        service("svc"), slice_("svc", ["10.0.0.1"]),
        tls_route("both", ["x.a.example.com", "y.b.example.com"])]))
    tp, = t.l4.tls_passthrough
    got = [(r.name, r.hostnames, r.gateway, r.listener) for r in tp.routes]
    assert sorted(got) == [("default/both", ("x.a.example.com",), "default/gw", "a"),
                           ("default/both", ("y.b.example.com",), "default/gw", "b")]


def test_tcp_frontend_records_gateway_listener_and_route():
    tcp = {"name": "db", "port": 5432, "protocol": "TCP"}
    route = {"apiVersion": "gateway.networking.k8s.io/v1alpha2", "kind": "TCPRoute",
             "metadata": {"name": "pg", "namespace": "default"},
             "spec": {"parentRefs": [{"name": "gw"}],
                      "rules": [{"backendRefs": [{"name": "svc", "port": 80}]}]}}
    t = translate(
        store_of([CLASS, gateway("gw", [tcp]), service("svc"), slice_("svc", ["10.0.0.1"]), route]))
    fe, = t.l4.frontends
    assert (fe.gateway, fe.listener, fe.route) == ("default/gw", "db", "default/pg")
