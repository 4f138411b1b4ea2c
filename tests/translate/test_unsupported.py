"""Status tells the truth: what kgw accepts in the schema but does not do is reported with
the conditions the Gateway API defines for it, never Accepted/ResolvedRefs=True.

Each case is one field of the audit (README: "What kgw does not do yet")."""

from __future__ import annotations

import pytest

from controller.objects import ObjectKey
from controller.translate import translate
from tests.translate.tlsgen import ca_configmap
from tests.translate.worlds import CLASS, gateway, http_route, service, slice_, store_of

GW = "gateway.networking.k8s.io"
P = [{"name": "gw"}]
HTTP = {"name": "http", "port": 80, "protocol": "HTTP"}


def _cond(conds, type_):
    return next(c for c in conds if c["type"] == type_)


def _parent(t, name="r", kind="HTTPRoute", type_="Accepted"):
    return _cond(t.statuses[ObjectKey(kind, "default", name)]["parents"][0]["conditions"], type_)


def _listener(t, name="http", gw="gw"):
    return next(x for x in t.statuses[ObjectKey("Gateway", "default", gw)]["listeners"]
                if x["name"] == name)


def _backends(t):
    return [r["rule"]["backends"] for lst in t.l7.to_dict()["listeners"]
            for vh in lst["virtual_hosts"] for r in vh["routes"]]


# -- GRPCRoute: served over HTTP/2 (was reported not served before kgw spoke HTTP/2) ----------

BOTH = [{"group": GW, "kind": "HTTPRoute"}, {"group": GW, "kind": "GRPCRoute"}]


def test_http_listeners_claim_grpcroute() -> None:
    https = {"name": "https", "port": 443, "protocol": "HTTPS",
             "tls": {"certificateRefs": [{"name": "cert"}]}}
    t = translate(store_of([CLASS, gateway("gw", [HTTP, https]), service("svc")]))
    assert _listener(t)["supportedKinds"] == BOTH
    assert _listener(t, "https")["supportedKinds"] == BOTH


def test_grpcroute_is_accepted_with_h2c_backends() -> None:
    grpc = http_route("r", P, kind="GRPCRoute")
    t = translate(store_of([CLASS, gateway("gw", [HTTP]), service("svc"),
                            slice_("svc", ["10.0.0.1"]), grpc]))
    cond = _parent(t, kind="GRPCRoute")
    assert (cond["status"], cond["reason"]) == ("True", "Accepted"), cond
    (backends,) = _backends(t)
    assert backends[0]["protocol"] == "h2c" and backends[0]["endpoints"]
    assert _listener(t)["attachedRoutes"] == 1


def test_a_listener_asking_for_grpcroute_gets_it() -> None:
    lis = {**HTTP, "allowedRoutes": {"kinds": [{"kind": "GRPCRoute"}]}}
    t = translate(store_of([CLASS, gateway("gw", [lis]), http_route("h", P),
                            http_route("r", P, kind="GRPCRoute")]))
    status = _listener(t)
    assert status["supportedKinds"] == [{"group": GW, "kind": "GRPCRoute"}]
    assert _cond(status["conditions"], "ResolvedRefs")["status"] == "True"
    assert _parent(t, kind="GRPCRoute")["status"] == "True"
    assert _parent(t, "h")["reason"] == "NotAllowedByListeners"


def test_a_tls_listener_does_not_take_grpcroute() -> None:
    lis = {"name": "tls", "port": 443, "protocol": "TLS", "tls": {"mode": "Passthrough"},
           "allowedRoutes": {"kinds": [{"kind": "GRPCRoute"}]}}
    t = translate(store_of([CLASS, gateway("gw", [lis])]))
    cond = _cond(_listener(t, "tls")["conditions"], "ResolvedRefs")
    assert (cond["status"], cond["reason"]) == ("False", "InvalidRouteKinds")
    assert "GRPCRoute" in cond["message"]


# -- backend protocols (Service appProtocol) ------------------------------------------------

POLICY = {"kind": "BackendTLSPolicy", "metadata": {"name": "p", "namespace": "default"},
          "spec": {"targetRefs": [{"group": "", "kind": "Service", "name": "svc"}],
                   "validation": {"hostname": "svc.example.com",
                                  "wellKnownCACertificates": "System"}}}


@pytest.mark.parametrize("app_protocol,policy,ok,protocol", [
    (None, False, True, "http"),
    ("http", False, True, "http"),
    ("kubernetes.io/ws", False, True, "ws"),  # WebSocket: an HTTP/1.1 Upgrade, relayed
    ("kubernetes.io/h2c", False, True, "h2c"),  # HTTP/2 prior knowledge
    ("kubernetes.io/h2c", True, True, "h2"),  # TLS, ALPN h2 (http/1.1 if the backend picks it)
    ("grpc", False, True, "h2c"),
    ("HTTP2", False, True, "h2c"),
    ("h2c", True, True, "h2"),
    ("kubernetes.io/wss", False, False, None),  # TLS, and kgw would speak clear text
    ("kubernetes.io/wss", True, True, "wss"),  # TLS from the BackendTLSPolicy
    ("HTTPS", False, False, None),
    ("https", True, True, "https"),
    ("example.com/custom", False, True, "http"),  # not a protocol kgw knows to differ from HTTP/1.1
])
def test_backend_app_protocol(app_protocol, policy, ok, protocol) -> None:
    port = {"name": "http", "port": 80}
    if app_protocol is not None:
        port["appProtocol"] = app_protocol
    objs = [CLASS, gateway("gw", [HTTP]), service("svc", ports=[port]), slice_("svc", ["10.0.0.1"]),
            http_route("r", P)] + ([POLICY] if policy else [])
    t = translate(store_of(objs))
    cond = _parent(t, type_="ResolvedRefs")
    (backends,) = _backends(t)
    if ok:
        assert cond["status"] == "True", cond
        assert backends[0]["error_status"] is None and backends[0]["endpoints"]
        assert (backends[0]["tls"] is not None) == policy
        assert backends[0]["protocol"] == protocol
    else:
        assert (cond["status"], cond["reason"]) == ("False", "UnsupportedProtocol"), cond
        assert f"appProtocol {app_protocol!r}" in cond["message"]
        assert backends[0]["error_status"] == 500  # never spoken to in the wrong protocol


def test_mirror_to_an_unsupported_protocol_is_reported_and_not_mirrored() -> None:
    rules = [{"filters": [
        {"type": "RequestMirror", "requestMirror": {"backendRef": {"name": "tls", "port": 80}}}],
              "backendRefs": [{"name": "svc", "port": 80}]}]
    objs = [CLASS, gateway("gw", [HTTP]), service("svc"), slice_("svc", ["10.0.0.1"]),
            service("tls",
                    ports=[{"name": "http", "port": 80, "appProtocol": "kubernetes.io/wss"}]),
            slice_("tls", ["10.0.0.2"]), http_route("r", P, rules)]
    t = translate(store_of(objs))
    assert _parent(t, type_="ResolvedRefs")["reason"] == "UnsupportedProtocol"
    routes = [r for lst in t.l7.to_dict()["listeners"] for vh in lst["virtual_hosts"]
              for r in vh["routes"]]
    assert routes[0]["rule"]["filters"]["mirrors"] == []


# -- session persistence: served (it was refused as unsupported before kgw_l7.session) -------

@pytest.mark.parametrize("kind", ["HTTPRoute", "GRPCRoute"])
def test_session_persistence_is_served(kind) -> None:
    rules = [{"backendRefs": [{"name": "svc", "port": 80}]},
             {"sessionPersistence": {"sessionName": "s", "type": "Header",
                                     "absoluteTimeout": "1h", "idleTimeout": "30m"},
              "backendRefs": [{"name": "svc", "port": 80}]},
             {"sessionPersistence": {"absoluteTimeout": "10s",
                                     "cookieConfig": {"lifetimeType": "Permanent"}},
              "backendRefs": [{"name": "svc", "port": 80}]}]
    t = translate(store_of(
        [CLASS, gateway("gw", [HTTP]), service("svc"), http_route("r", P, rules, kind=kind)]))
    cond = _parent(t, kind=kind)
    assert (cond["status"], cond["reason"]) == ("True", "Accepted")
    sessions = sorted((r["rule"]["name"], r["rule"].get("session"))
                      for lst in t.l7.to_dict()["listeners"]
                      for vh in lst["virtual_hosts"] for r in vh["routes"])
    assert [s for _, s in sessions] == [
        None,
        {"name": "s", "type": "Header", "absolute_timeout": 3600.0, "idle_timeout": 1800.0,
         "permanent": False},
        {"name": "", "type": "Cookie", "absolute_timeout": 10.0, "idle_timeout": None,
         "permanent": True}]


def test_a_session_name_that_cannot_be_a_cookie_name_is_refused() -> None:
    rules = [{"sessionPersistence": {"sessionName": "a b"},
              "backendRefs": [{"name": "svc", "port": 80}]}]
    t = translate(store_of(
        [CLASS, gateway("gw", [HTTP]), service("svc"), http_route("r", P, rules)]))
    cond = _parent(t)
    assert (cond["status"], cond["reason"]) == ("False", "UnsupportedValue")
    assert cond["message"].startswith("spec.rules[0].sessionPersistence.sessionName: 'a b' is "
                                      "not a valid cookie or header name")
    assert _backends(t) == []


# -- Gateway and listener fields --------------------------------------------------------------

def test_listener_tls_options_are_unsupported() -> None:
    from tests.translate.tlsgen import tls_secret

    https = {"name": "https", "port": 443, "protocol": "HTTPS",
             "tls": {"certificateRefs": [{"name": "cert"}],
                     "options": {"example.com/min-version": "1.3"}}}
    t = translate(store_of([CLASS, gateway("gw", [HTTP, https]), tls_secret("cert", "default")]))
    cond = _cond(_listener(t, "https")["conditions"], "Accepted")
    assert (cond["status"], cond["reason"]) == ("False", "UnsupportedValue")
    assert "tls.options" in cond["message"] and "example.com/min-version" in cond["message"]
    assert _cond(_listener(t, "https")["conditions"], "Programmed")["status"] == "False"
    # not served without the options it asks for
    assert [lst.port for lst in t.l7.listeners] == [80]


def test_parameters_in_a_configmap_are_refused_an_empty_one_is_fine() -> None:
    cm = {"kind": "ConfigMap", "metadata": {"name": "params", "namespace": "default"},
          "data": {"replicas": "3"}}
    empty = {"kind": "ConfigMap", "metadata": {"name": "empty", "namespace": "default"}}
    ref = {"group": "", "kind": "ConfigMap"}
    klass = {**CLASS, "spec": {**CLASS["spec"],
                               "parametersRef": {**ref, "name": "params", "namespace": "default"}}}
    t = translate(store_of([klass, cm, gateway("gw", [HTTP])]))
    cond = _cond(t.statuses[ObjectKey("GatewayClass", "", "kgw")]["conditions"], "Accepted")
    assert (cond["status"],
            cond["reason"]) == ("False", "InvalidParameters") and "replicas" in cond["message"]
    t = translate(store_of([CLASS, cm, empty, gateway(
        "gw", [HTTP], infrastructure={"parametersRef": {**ref, "name": "params"}}),
                            gateway("ok", [{**HTTP, "port": 81}],
                                    infrastructure={"parametersRef": {**ref, "name": "empty"}})]))
    cond = _cond(t.statuses[ObjectKey("Gateway", "default", "gw")]["conditions"], "Accepted")
    assert (cond["status"],
            cond["reason"]) == ("False", "InvalidParameters") and "replicas" in cond["message"]
    assert _cond(t.statuses[ObjectKey("Gateway", "default", "ok")]["conditions"],
                 "Accepted")["status"] == "True"


def test_default_gateways_are_problems() -> None:
    route = http_route("r", P)
    route["spec"]["useDefaultGateways"] = "All"
    t = translate(
        store_of([CLASS, gateway("gw", [HTTP], defaultScope="All"), service("svc"), route]))
    assert {p.field for p in t.problems} == {"spec.useDefaultGateways", "spec.defaultScope"}
    assert _parent(t)["status"] == "True"  # where it is attached explicitly, it is served


# -- BackendTLSPolicy fields ------------------------------------------------------------------

def test_backend_tls_policy_options_are_unsupported() -> None:
    policy = {**POLICY, "spec": {**POLICY["spec"], "options": {"example.com/ciphers": "x"}}}
    objs = [CLASS, gateway("gw", [HTTP]), service("svc"), slice_("svc", ["10.0.0.1"]),
            http_route("r", P), policy]
    t = translate(store_of(objs))
    anc = t.statuses[ObjectKey("BackendTLSPolicy", "default", "p")]["ancestors"][0]
    cond = _cond(anc["conditions"], "Accepted")
    assert (cond["status"],
            cond["reason"]) == ("False", "Invalid") and "example.com/ciphers" in cond["message"]
    (backends,) = _backends(t)
    assert backends[0]["error_status"] == 500  # not sent without the settings it asks for


def test_backend_tls_policy_on_something_else_than_a_service_is_a_problem() -> None:
    policy = {**POLICY, "spec": {**POLICY["spec"], "targetRefs": [
        {"group": "net.example.com", "kind": "Backend", "name": "b"}]}}
    t = translate(store_of([CLASS, gateway("gw", [HTTP]), policy, ca_configmap("ca", "default")]))
    (p,) = t.problems
    assert p.field == "spec.targetRefs[0]" and "net.example.com/Backend" in p.message


def test_backend_tls_policy_does_not_claim_tcp_routes() -> None:
    """A TCPRoute's connections are forwarded as they are: no TLS is originated for them,
    so the policy gets no ancestor through it (it did: Accepted on the TCP Gateway)."""
    tcp = {"name": "tcp", "port": 9000, "protocol": "TCP"}
    route = http_route("t", [{"name": "tcpgw"}], kind="TCPRoute")
    objs = [CLASS, gateway("tcpgw", [tcp]), service("svc"), slice_("svc", ["10.0.0.1"]), route,
            POLICY]
    t = translate(store_of(objs))
    assert ObjectKey("BackendTLSPolicy", "default", "p") not in t.statuses
    (p,) = t.problems
    assert p.key.name == "p" and "used by TCPRoute default/t" in p.message
    objs += [gateway("gw", [HTTP]), http_route("r", P)]
    t = translate(store_of(objs))
    ancestors = t.statuses[ObjectKey("BackendTLSPolicy", "default", "p")]["ancestors"]
    assert [a["ancestorRef"]["name"] for a in ancestors] == ["gw"]
