"""Every status reason the conformance suite asserts, each from a minimal world."""

from __future__ import annotations

import pytest

from controller.objects import ObjectKey
from controller.translate import Options, translate
from tests.translate.tlsgen import self_signed, tls_secret
from tests.translate.worlds import CLASS, gateway, grant, http_route, service, slice_, store_of

HTTP = {"name": "http", "port": 80, "protocol": "HTTP"}
P = [{"name": "gw"}]


def _gw(*listeners, **spec):
    return gateway("gw", list(listeners) or [HTTP], **spec)


def _route_cond(t, kind, name, type_, ns="default"):
    parent = t.statuses[ObjectKey(kind, ns, name)]["parents"][0]
    return next(c for c in parent["conditions"] if c["type"] == type_)


def _gw_cond(t, type_, name="gw"):
    return next(c for c in t.statuses[ObjectKey("Gateway", "default", name)]["conditions"]
                if c["type"] == type_)


def _lis_cond(t, listener, type_, name="gw"):
    lis = next(x for x in t.statuses[ObjectKey("Gateway", "default", name)]["listeners"]
               if x["name"] == listener)
    return next(c for c in lis["conditions"] if c["type"] == type_)




# (reason, objects, getter(translation) -> condition, expected status)
CASES = [
    ("NotAllowedByListeners",
     [_gw({**HTTP, "allowedRoutes": {"kinds": [{"kind": "GRPCRoute"}]}}), service("svc"),
      http_route("r", P)],
     lambda t: _route_cond(t, "HTTPRoute", "r", "Accepted"), "False"),
    ("NoMatchingParent",
     [_gw(), service("svc"), http_route("r", [{"name": "gw", "sectionName": "nope"}])],
     lambda t: _route_cond(t, "HTTPRoute", "r", "Accepted"), "False"),
    ("NoMatchingParent", [_gw(), service("svc"), http_route("r", [{"name": "gw", "port": 81}])],
     lambda t: _route_cond(t, "HTTPRoute", "r", "Accepted"), "False"),
    ("NoMatchingListenerHostname", [_gw({**HTTP, "hostname": "a.example.com"}), service("svc"),
                                    http_route("r", P, hostnames=["b.example.com"])],
     lambda t: _route_cond(t, "HTTPRoute", "r", "Accepted"), "False"),
    ("RefNotPermitted", [_gw(), service("svc", "other"),
                         http_route("r", P, [{
                             "backendRefs": [{"name": "svc", "namespace": "other", "port": 80}]}])],
     lambda t: _route_cond(t, "HTTPRoute", "r", "ResolvedRefs"), "False"),
    ("BackendNotFound", [_gw(), http_route("r", P)],
     lambda t: _route_cond(t, "HTTPRoute", "r", "ResolvedRefs"), "False"),
    ("BackendNotFound",
     [_gw(), service("svc"), http_route("r", P, [{"backendRefs": [{"name": "svc", "port": 81}]}])],
     lambda t: _route_cond(t, "HTTPRoute", "r", "ResolvedRefs"), "False"),
    ("InvalidKind", [_gw(), http_route("r", P, [
        {"backendRefs": [{"group": "example.com", "kind": "Thing", "name": "x", "port": 80}]}])],
     lambda t: _route_cond(t, "HTTPRoute", "r", "ResolvedRefs"), "False"),
    ("InvalidKind", [_gw(), service("svc"), http_route("r", P, [{"filters": [{
        "type": "ExtensionRef", "extensionRef": {
        "group": "example.com", "kind": "Filter", "name": "f"}}], "backendRefs": [
            {"name": "svc", "port": 80}]}])],
     lambda t: _route_cond(t, "HTTPRoute", "r", "ResolvedRefs"), "False"),
    ("InvalidRouteKinds", [_gw({**HTTP, "allowedRoutes": {"kinds": [{"kind": "TCPRoute"}]}})],
     lambda t: _lis_cond(t, "http", "ResolvedRefs"), "False"),
    ("InvalidCertificateRef", [_gw({"name": "https", "port": 443, "protocol": "HTTPS",
                                    "tls": {"certificateRefs": [{"name": "missing"}]}})],
     lambda t: _lis_cond(t, "https", "ResolvedRefs"), "False"),
    ("InvalidCertificateRef", [_gw({"name": "https", "port": 443, "protocol": "HTTPS",
                                    "tls": {"certificateRefs": [{"name": "bad"}]}}),
                               {**tls_secret("bad", "default", self_signed()[0],
                                             self_signed("other.com", ("other.com",))[1])}],
     lambda t: _lis_cond(t, "https", "ResolvedRefs"), "False"),
    ("InvalidCertificateRef", [_gw({"name": "https", "port": 443, "protocol": "HTTPS",
                                    "tls": {"certificateRefs": [
                                        {"group": "example.com", "kind": "Cert", "name": "c"}]}})],
     lambda t: _lis_cond(t, "https", "ResolvedRefs"), "False"),
    ("RefNotPermitted", [_gw({"name": "https", "port": 443, "protocol": "HTTPS",
                              "tls": {
                                  "certificateRefs": [{"name": "cert", "namespace": "other"}]}}),
                         tls_secret("cert", "other")],
     lambda t: _lis_cond(t, "https", "ResolvedRefs"), "False"),
    ("ResolvedRefs", [_gw({"name": "https", "port": 443, "protocol": "HTTPS",
                           "tls": {"certificateRefs": [{"name": "cert", "namespace": "other"}]}}),
                      tls_secret("cert", "other"),
                      grant("g", "other", "Gateway", "default", to_kind="Secret")],
     lambda t: _lis_cond(t, "https", "ResolvedRefs"), "True"),
    ("UnsupportedProtocol", [_gw(HTTP, {"name": "sctp", "port": 90, "protocol": "SCTP"})],
     lambda t: _lis_cond(t, "sctp", "Accepted"), "False"),
    ("ListenersNotValid", [_gw(HTTP, {"name": "sctp", "port": 90, "protocol": "SCTP"})],
     lambda t: _gw_cond(t, "Accepted"), "True"),
    ("ListenersNotValid", [_gw({"name": "sctp", "port": 90, "protocol": "SCTP"})],
     lambda t: _gw_cond(t, "Accepted"), "False"),
    ("ProtocolConflict", [_gw(HTTP, {"name": "tcp", "port": 80, "protocol": "TCP"})],
     lambda t: _lis_cond(t, "tcp", "Conflicted"), "True"),
    ("ProtocolConflict", [_gw(HTTP, {"name": "tcp", "port": 80, "protocol": "TCP"})],
     lambda t: _lis_cond(t, "http", "Accepted"), "False"),
    ("HostnameConflict", [_gw(HTTP, {"name": "http2", "port": 80, "protocol": "HTTP"})],
     lambda t: _lis_cond(t, "http2", "Conflicted"), "True"),
    ("NoConflicts",
     [_gw(HTTP, {"name": "http2", "port": 80, "protocol": "HTTP", "hostname": "a.example.com"})],
     lambda t: _lis_cond(t, "http2", "Conflicted"), "False"),
    ("UnsupportedValue",
     [_gw({"name": "tls", "port": 443, "protocol": "TLS", "tls": {"mode": "Passthrough",
                                                                  "options": {"x": "y"}}})],
     lambda t: _lis_cond(t, "tls", "Accepted"), "False"),
    ("InvalidParameters",
     [_gw(infrastructure={"parametersRef": {"group": "invalid.io", "kind": "X", "name": "y"}})],
     lambda t: _gw_cond(t, "Accepted"), "False"),
    ("UnsupportedAddress", [_gw(addresses=[{"type": "test/fake", "value": "x"}])],
     lambda t: _gw_cond(t, "Accepted"), "False"),
    ("UnsupportedAddress", [_gw(addresses=[{"type": "IPAddress", "value": "not-an-ip"}])],
     lambda t: _gw_cond(t, "Accepted"), "False"),
    ("AddressNotUsable", [_gw(addresses=[{"type": "IPAddress", "value": "192.0.2.7"}])],
     lambda t: _gw_cond(t, "Programmed"), "False"),
]


@pytest.mark.parametrize("reason,objs,get,status", CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_reason(reason, objs, get, status):
    t = translate(store_of([CLASS, *objs]), Options(local_addresses=("127.0.0.1",)))
    cond = get(t)
    assert (cond["reason"], cond["status"]) == (reason, status), cond
    assert cond["observedGeneration"] == 1 and "lastTransitionTime" not in cond


def test_route_rejected_by_parent_still_reports_resolved_refs():
    t = translate(store_of(
        [CLASS, _gw(), service("svc"), http_route("r", [{"name": "gw", "sectionName": "x"}])]))
    assert _route_cond(t, "HTTPRoute", "r", "ResolvedRefs")["status"] == "True"


def test_gateway_class_invalid_parameters():
    gc = {**CLASS, "spec": {
        **CLASS["spec"], "parametersRef": {"group": "example.com", "kind": "Params", "name": "p"}}}
    t = translate(store_of([gc]))
    acc = t.statuses[ObjectKey("GatewayClass", "", "kgw")]["conditions"][0]
    assert (acc["type"], acc["status"], acc["reason"]) == ("Accepted", "False", "InvalidParameters")


def test_other_controllers_classes_and_their_gateways_get_no_status():
    other = {**CLASS, "metadata": {"name": "other"}, "spec": {"controllerName": "example.com/x"}}
    gw = {**_gw(), "spec": {**_gw()["spec"], "gatewayClassName": "other"}}
    t = translate(store_of([other, gw, http_route("r", P)]))
    assert t.statuses == {}
    assert t.l7.listeners == ()


def test_invalid_backend_answers_500_share_and_empty_rule_answers_500():
    objs = [CLASS, _gw(), service("svc"), slice_("svc", ["10.0.0.1"], port=8080),
            http_route("r", P, [{"backendRefs": [{"name": "svc", "port": 80, "weight": 3},
                                                 {"name": "missing", "port": 80, "weight": 1}]},
                                {"matches": [{"path": {"value": "/none"}}]}])]
    t = translate(store_of(objs))
    routes = t.l7.listeners[0].virtual_hosts[0].routes
    by_rule = {r.rule.name: r.rule for r in routes}
    ok, missing = by_rule["default/r/0"].backends
    assert (ok.weight, ok.error_status, [e.address for e in ok.endpoints]) == (3, None,
                                                                               ["10.0.0.1"])
    assert (missing.weight, missing.error_status) == (1, 500)
    assert by_rule["default/r/1"].direct_status == 500


def test_listener_reached_by_two_parent_refs_counts_and_serves_the_route_once():
    objs = [CLASS, _gw(), service("svc"),
            http_route("r", [{"name": "gw"}, {"name": "gw", "sectionName": "http"},
                             {"name": "gw", "port": 80}])]
    t = translate(store_of(objs))
    assert len(t.statuses[ObjectKey("HTTPRoute", "default", "r")]["parents"]) == 3
    assert t.statuses[ObjectKey("Gateway", "default", "gw")]["listeners"][0]["attachedRoutes"] == 1
    assert len(t.l7.listeners[0].virtual_hosts[0].routes) == 1
