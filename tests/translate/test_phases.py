"""Multi-phase conformance scenarios (the Go tests edit objects between checks),
replayed through Translator.update(); each phase is also compared with translate()."""

from __future__ import annotations

import copy

from controller.objects import ObjectKey
from controller.source import Event, EventType
from controller.translate import Options, Translator, translate
from tests.translate.tlsgen import ca_configmap
from tests.translate.worlds import (CLASS, gateway, grant, http_route, norm, service, slice_,
                                    store_of)


class Phases:
    def __init__(self, objs: list[dict], options: Options = Options()) -> None:
        self.store = store_of(objs)
        self.options = options
        self.tr = Translator(options)
        self.t = self.tr.update(self.store, set())

    def apply(self, *events: Event):
        changed = self.store.apply(events)
        self.t = self.tr.update(self.store, changed)
        assert self.t == translate(self.store, self.options)
        return self.t

    def put(self, obj: dict):
        obj = norm(obj)
        return self.apply(Event(EventType.MODIFIED, ObjectKey.of(obj), obj, "x", 1))

    def delete(self, kind: str, ns: str, name: str):
        key = ObjectKey(kind, ns, name)
        return self.apply(Event(EventType.DELETED, key, self.store.get_key(key), "x", 1))

    def cond(self, key: ObjectKey, type_: str, parent: int = 0) -> tuple[str, str]:
        st = self.t.statuses[key]
        conds = st["parents"][parent]["conditions"] if "parents" in st else (
            st["ancestors"][parent]["conditions"] if "ancestors" in st else st["conditions"])
        c = next(c for c in conds if c["type"] == type_)
        return c["status"], c["reason"]


HTTP = {"name": "http", "port": 80, "protocol": "HTTP"}


def test_reference_grant_removed_then_restored():
    objs = [CLASS, gateway("gw", [HTTP]), service("web", "backend"),
            slice_("web", ["10.0.0.1"], ns="backend"),
            grant("g", "backend", "HTTPRoute", "default"),
            http_route("r", [{"name": "gw"}],
                       [{"backendRefs": [{"name": "web", "namespace": "backend", "port": 80}]}])]
    p = Phases(objs)
    rk = ObjectKey("HTTPRoute", "default", "r")
    assert p.cond(rk, "ResolvedRefs") == ("True", "ResolvedRefs")
    assert p.t.l7.listeners[0].virtual_hosts[0].routes[0].rule.backends[0].error_status is None
    p.delete("ReferenceGrant", "backend", "g")
    assert p.cond(rk, "ResolvedRefs") == ("False", "RefNotPermitted")
    assert p.t.l7.listeners[0].virtual_hosts[0].routes[0].rule.backends[0].error_status == 500
    p.put(grant("g", "backend", "HTTPRoute", "default"))
    assert p.cond(rk, "ResolvedRefs") == ("True", "ResolvedRefs")


def test_tcp_reference_grant_and_multiple_routes_on_one_listener():
    tcp = {"name": "tcp", "port": 9000, "protocol": "TCP"}
    objs = [CLASS, gateway("gw", [tcp]), service("a"), slice_("a", ["10.0.0.1"]),
            service("b", "other"),
            slice_("b", ["10.0.0.2"], ns="other"), grant("g", "other", "TCPRoute", "default"),
            http_route("older", [{"name": "gw", "sectionName": "tcp"}],
                       [{"backendRefs": [{"name": "a", "port": 80}]}],
                       kind="TCPRoute", creationTimestamp="2026-01-01T00:00:00Z")]
    p = Phases(objs)
    newer = norm(http_route("newer", [{"name": "gw", "sectionName": "tcp"}],
                            [{"backendRefs": [{"name": "b", "namespace": "other", "port": 80}]}],
                            kind="TCPRoute", creationTimestamp="2026-02-01T00:00:00Z"))
    p.put(newer)
    gw = p.t.statuses[ObjectKey("Gateway", "default", "gw")]
    assert gw["listeners"][0]["attachedRoutes"] == 2
    assert p.cond(ObjectKey("TCPRoute", "default", "newer"), "Accepted") == ("True", "Accepted")
    assert p.cond(ObjectKey("TCPRoute", "default", "newer"), "ResolvedRefs") == ("True",
                                                                                 "ResolvedRefs")
    # only the oldest route carries traffic
    assert [b.name for b in p.t.l4.frontends[0].backends] == ["default/a:80"]
    p.delete("ReferenceGrant", "other", "g")
    assert p.cond(ObjectKey("TCPRoute", "default", "newer"), "ResolvedRefs") == ("False",
                                                                                 "RefNotPermitted")
    p.delete("TCPRoute", "default", "older")
    fe = p.t.l4.frontends[0]
    # refused: no endpoints
    assert [(b.name, b.endpoints) for b in fe.backends] == [("other/b:80", ())]


def test_static_addresses_phases():
    opts = Options(local_addresses=("127.0.0.1", "10.1.1.1"))
    gw = gateway("static", [HTTP], addresses=[{"type": "test/fake-invalid-type", "value": "fake"},
                                              {"type": "IPAddress", "value": "192.0.2.99"},
                                              {"type": "IPAddress", "value": "10.1.1.1"}])
    p = Phases([CLASS, gw], opts)
    k = ObjectKey("Gateway", "default", "static")
    assert p.cond(k, "Accepted") == ("False", "UnsupportedAddress")
    gw2 = copy.deepcopy(gw)
    gw2["spec"]["addresses"] = gw["spec"]["addresses"][1:]
    p.put(gw2)
    assert p.cond(k, "Accepted") == ("True", "Accepted")
    assert p.cond(k, "Programmed") == ("False", "AddressNotUsable")
    gw3 = copy.deepcopy(gw)
    gw3["spec"]["addresses"] = gw["spec"]["addresses"][2:]
    p.put(gw3)
    assert p.cond(k, "Programmed") == ("True", "Programmed")
    assert p.t.statuses[k]["addresses"] == [{"type": "IPAddress", "value": "10.1.1.1"}]
    assert p.t.l7.listeners[0].address == "10.1.1.1"


def test_modify_listeners_and_observed_generation():
    gw = gateway("gw", [HTTP])
    p = Phases([CLASS, gw])
    k = ObjectKey("Gateway", "default", "gw")
    gw2 = copy.deepcopy(gw)
    gw2["spec"]["listeners"].append({"name": "http2", "port": 8080, "protocol": "HTTP"})
    gw2["metadata"]["generation"] = 2
    p.put(gw2)
    st = p.t.statuses[k]
    assert [lis["name"] for lis in st["listeners"]] == ["http", "http2"]
    assert {c["observedGeneration"] for c in st["conditions"]} == {2}
    assert [lis.port for lis in p.t.l7.listeners] == [80, 8080]


def test_backend_tls_policy_ca_changes_are_reconciled():
    objs = [CLASS, gateway("gw", [HTTP]), service("tls"), ca_configmap("ca", "default"),
            {"kind": "BackendTLSPolicy", "metadata": {"name": "p"},
             "spec": {"targetRefs": [{"group": "", "kind": "Service", "name": "tls"}],
                      "validation": {"hostname": "abc.example.com",
                                     "caCertificateRefs": [
                                         {"group": "", "kind": "ConfigMap", "name": "ca"}]}}},
            http_route("r", [{"name": "gw"}], [{"backendRefs": [{"name": "tls", "port": 80}]}])]
    p = Phases(objs)
    pk = ObjectKey("BackendTLSPolicy", "default", "p")
    assert p.cond(pk, "Accepted") == ("True", "Accepted")
    backend = p.t.l7.listeners[0].virtual_hosts[0].routes[0].rule.backends[0]
    assert backend.tls is not None and backend.protocol == "https"
    p.put(ca_configmap("ca", "default", "garbage"))
    assert p.cond(pk, "Accepted") == ("False", "NoValidCACertificate")
    assert p.cond(pk, "ResolvedRefs") == ("False", "InvalidCACertificateRef")
    assert p.t.l7.listeners[0].virtual_hosts[0].routes[0].rule.backends[0].error_status == 500
    p.put(ca_configmap("ca", "default"))
    assert p.cond(pk, "Accepted") == ("True", "Accepted")


def test_endpoint_changes_reach_the_backend():
    objs = [CLASS, gateway("gw", [HTTP]), service("svc"), slice_("svc", ["10.0.0.1"]),
            http_route("r", [{"name": "gw"}])]
    p = Phases(objs)
    eps = lambda: p.t.l7.listeners[0].virtual_hosts[0].routes[0].rule.backends[0].endpoints  # noqa: E731
    assert [e.address for e in eps()] == ["10.0.0.1"]
    p.put(slice_("svc", ["10.0.0.1", "10.0.0.2"]))
    assert [e.address for e in eps()] == ["10.0.0.1", "10.0.0.2"]
    p.put(slice_("svc", ["10.0.0.3"], name="svc-y"))
    assert [e.address for e in eps()] == ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
    p.delete("EndpointSlice", "default", "svc-x")
    assert [e.address for e in eps()] == ["10.0.0.3"]
