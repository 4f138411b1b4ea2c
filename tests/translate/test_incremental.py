"""Translator.update() after any sequence of changes equals a fresh translate()."""

from __future__ import annotations

import random

from controller.objects import ObjectKey
from controller.source import Event, EventType
from controller.store import Store
from controller.translate import Options, Translator, translate
from tests.translate.tlsgen import ca_configmap, tls_secret
from tests.translate.worlds import (
    CLASS, gateway, grant, http_route, listener_set, namespace, norm, service, slice_, store_of,
)

NAMESPACES = ["default", "team-a", "team-b"]
SERVICES = ["svc0", "svc1", "svc2"]


def _gateways(rng: random.Random) -> list[dict]:
    frm = rng.choice(["Same", "All", "Selector"])
    allowed: dict = {"namespaces": {"from": frm}}
    if frm == "Selector":
        allowed["namespaces"]["selector"] = {"matchLabels": {"team": rng.choice(["a", "b"])}}
    return [
        gateway("web",
                allowedListeners={"namespaces": {"from": rng.choice(["All", "Same", "None"])}},
                listeners=[
            {"name": "http", "port": 80, "protocol": "HTTP", "allowedRoutes": allowed},
            {"name": "wild", "port": 80, "protocol": "HTTP",
             "hostname": rng.choice(["*.example.com", "*.test"]),
             "allowedRoutes": {"namespaces": {"from": "All"}}},
            {"name": "https", "port": 443, "protocol": "HTTPS", "hostname": "secure.example.com",
             "tls": {"certificateRefs": [{"name": rng.choice(["cert", "missing"])}]}},
        ]),
        gateway("l4", [
            {"name": "tcp", "port": 9000, "protocol": "TCP",
             "allowedRoutes": {"namespaces": {"from": "All"}}},
            {"name": "udp", "port": 9053, "protocol": "UDP"},
            {"name": "tls", "port": 8443, "protocol": "TLS", "tls": {"mode": "Passthrough"},
             "allowedRoutes": {"namespaces": {"from": "All"}}},
            # mixed mode: the SNI picks this listener for *.example.com (BackendTLSPolicy
            # mutations re-encrypt its routes' backends)
            {"name": "tls-term", "port": 8443, "protocol": "TLS", "hostname": "*.example.com",
             "tls": {"mode": "Terminate",
                     "certificateRefs": [{"name": rng.choice(["cert", "cert", "missing"])}]},
             "allowedRoutes": {"namespaces": {"from": "All"}}},
        ]),
    ]


def _listener_sets(rng: random.Random) -> list[dict]:
    """Two ListenerSets on "web": hostnames that may conflict with each other or with the
    Gateway's, a TCP listener that may collide with Gateway "l4"'s port."""
    extra = [{"name": "tcp", "port": rng.choice([9000, 9001]), "protocol": "TCP",
              "allowedRoutes": {"namespaces": {"from": "All"}}}] if rng.random() < 0.5 else []
    return [
        listener_set("ls-a", "web", [
            {"name": "http", "port": 80, "protocol": "HTTP",
             "hostname": rng.choice(["a.example.com", "ls.test"]),
             "allowedRoutes": {"namespaces": {"from": rng.choice(["Same", "All"])}}}, *extra],
                     ns="team-a"),
        listener_set("ls-b", "web", [
            {"name": "http", "port": 80, "protocol": "HTTP",
             "hostname": rng.choice(["ls.test", "b.example.com"]),
             "allowedRoutes": {"namespaces": {"from": "All"}}}], ns="default"),
    ]


LS_PARENTS = [{"kind": "ListenerSet", "group": "gateway.networking.k8s.io", "name": "ls-a",
               "namespace": "team-a"},
              {"kind": "ListenerSet", "group": "gateway.networking.k8s.io", "name": "ls-b",
               "namespace": "default", "sectionName": "http"}]


def _route(rng: random.Random, i: int) -> dict:
    kind = rng.choice(
        ["HTTPRoute", "HTTPRoute", "HTTPRoute", "GRPCRoute", "TCPRoute", "UDPRoute", "TLSRoute"])
    ns = rng.choice(NAMESPACES + ["default", "default"])
    if kind in ("HTTPRoute", "GRPCRoute"):
        parents = [{"name": "web", "namespace": "default",
                    **rng.choice([{}, {"sectionName": "http"}, {"sectionName": "wild"},
                               {"port": 443}, {"sectionName": "nope"}, {}])}]
        if rng.random() < 0.3:
            parents = rng.choice([parents, []]) + [rng.choice(LS_PARENTS)]
    elif kind == "TCPRoute" and rng.random() < 0.3:
        parents = [LS_PARENTS[0]]
    else:
        parents = [{"name": "l4", "namespace": "default"}]
    backends = [{"name": rng.choice(SERVICES), "namespace": rng.choice(NAMESPACES + [ns, ns, ns]),
                 "port": 80, "weight": rng.randint(0, 3)} for _ in range(rng.randint(0, 2))]
    rule: dict = {"backendRefs": backends}
    if kind == "HTTPRoute":
        rule["matches"] = [{"path": {"type": rng.choice(["Exact", "PathPrefix"]),
                                     "value": rng.choice(["/", "/a", "/a/b"])},
                            **({"method": "GET"} if rng.random() < 0.3 else {})}]
        if rng.random() < 0.2:
            rule["filters"] = [{"type": "RequestMirror", "requestMirror": {
                "backendRef": {"name": "svc1", "port": 80}, "percent": 50}}]
    if kind == "GRPCRoute":
        rule["matches"] = [
            {"method": {"service": "echo.Echo", "method": rng.choice(["Say", ""]) or None}}]
    hostnames = rng.choice([None, ["a.example.com"], ["b.example.com", "*.example.com"], ["x.test"],
                            ["secure.example.com"]])
    if kind in ("TCPRoute", "UDPRoute"):
        hostnames = None
    return http_route(f"r{i}", parents, [rule], hostnames, ns=ns, kind=kind,
                      creationTimestamp=f"2026-01-01T00:{rng.randint(0, 5):02d}:00Z")


def _world(rng: random.Random) -> list[dict]:
    objs: list[dict] = [CLASS, namespace("default"), namespace("team-a", team="a"),
                        namespace("team-b", team="b"), tls_secret("cert", "default")]
    objs += _gateways(rng)
    objs += _listener_sets(rng)
    for ns in NAMESPACES:
        for s in SERVICES:
            objs.append(service(s, ns))
            objs.append(slice_(s, [f"10.0.{NAMESPACES.index(ns)}.{SERVICES.index(s) + 1}"], ns=ns))
    objs.append(grant("allow", "team-a", "HTTPRoute", "default"))
    objs += [_route(rng, i) for i in range(20)]
    return objs


def _mutation(rng: random.Random, store: Store, step: int) -> list[Event]:
    choice = rng.randrange(10)
    if choice <= 2:
        o = _route(rng, rng.randrange(24))
        o = norm(o, step)
        key = ObjectKey.of(o)
        # a route of another kind with the same name would be a different object; delete the old
        # ones
        evs = [Event(EventType.DELETED, k, store.get_key(k), "x", 1) for k in
               (ObjectKey(kd, key.namespace, key.name)
                for kd in ("HTTPRoute", "GRPCRoute", "TCPRoute", "UDPRoute", "TLSRoute"))
               if k != key and k in store]
        if rng.random() < 0.2 and key in store:
            return evs + [Event(EventType.DELETED, key, store.get_key(key), "x", 1)]
        return evs + [Event(EventType.MODIFIED, key, o, "x", 1)]
    if choice == 3:
        ns, s = rng.choice(NAMESPACES), rng.choice(SERVICES)
        o = norm(slice_(s, [f"10.9.{rng.randrange(3)}.{rng.randrange(3)}"
                            for _ in range(rng.randint(0, 2))], ns=ns,
                        ready=rng.choice([True, False, None])))
        if rng.random() < 0.3:
            return [Event(EventType.DELETED, ObjectKey.of(o), o, "x", 1)]
        return [Event(EventType.MODIFIED, ObjectKey.of(o), o, "x", 1)]
    if choice == 4:
        ns, s = rng.choice(NAMESPACES), rng.choice(SERVICES)
        o = norm(service(s, ns, ports=[{"name": "http", "port": 80,
                                        **({"appProtocol": "kubernetes.io/h2c"}
                                           if rng.random() < 0.5 else {})}]))
        if rng.random() < 0.3:
            return [Event(EventType.DELETED, ObjectKey.of(o), o, "x", 1)]
        return [Event(EventType.MODIFIED, ObjectKey.of(o), o, "x", 1)]
    if choice == 5:
        g = norm(rng.choice(_gateways(rng)), step)
        return [Event(EventType.MODIFIED, ObjectKey.of(g), g, "x", 1)]
    if choice == 6:
        o = norm(grant("allow", rng.choice(["team-a", "team-b"]),
                       rng.choice(["HTTPRoute", "TCPRoute"]), "default"))
        if rng.random() < 0.4:
            return [Event(EventType.DELETED, ObjectKey.of(o), o, "x", 1)]
        return [Event(EventType.MODIFIED, ObjectKey.of(o), o, "x", 1)]
    if choice == 9:
        o = norm(rng.choice(_listener_sets(rng)), step)
        if rng.random() < 0.25:
            return [Event(EventType.DELETED, ObjectKey.of(o), o, "x", 1)]
        return [Event(EventType.MODIFIED, ObjectKey.of(o), o, "x", 1)]
    if choice == 7:
        o = norm(namespace(rng.choice(["team-a", "team-b"]), team=rng.choice(["a", "b", "c"])))
        return [Event(EventType.MODIFIED, ObjectKey.of(o), o, "x", 1)]
    ns = rng.choice(NAMESPACES)
    pol = norm({"kind": "BackendTLSPolicy", "metadata": {"name": "p", "namespace": ns},
                "spec": {"targetRefs": [
                    {"group": "", "kind": "Service", "name": rng.choice(SERVICES)}],
                         "validation": {"hostname": "backend.example.com",
                                        "caCertificateRefs": [{"group": "", "kind": "ConfigMap",
                                                               "name": rng.choice(
                                                                   ["ca", "no-ca"])}]}}})
    cm = norm(ca_configmap("ca", ns))
    if rng.random() < 0.3:
        return [Event(EventType.DELETED, ObjectKey.of(cm), cm, "x", 1)]
    return [Event(EventType.MODIFIED, ObjectKey.of(pol), pol, "x", 1),
            Event(EventType.MODIFIED, ObjectKey.of(cm), cm, "x", 1)]


def test_update_equals_translate_after_random_changes() -> None:
    for seed in range(6):
        rng = random.Random(seed)
        store = store_of(_world(rng))
        opts = Options()
        tr = Translator(opts)
        assert tr.update(store, set()) == translate(store, opts)
        for step in range(40):
            changed = store.apply(_mutation(rng, store, step))
            got = tr.update(store, changed)
            want = translate(store, opts)
            assert got.l7 == want.l7, f"seed {seed} step {step}: L7 differs"
            assert got.l4 == want.l4, f"seed {seed} step {step}: L4 differs"
            assert dict(got.statuses) == dict(
                want.statuses), f"seed {seed} step {step}: statuses differ"


def test_world_is_not_trivial() -> None:
    """The random worlds exercise routes on every data plane (else the test above proves little)."""
    rng = random.Random(1)
    t = translate(store_of(_world(rng)))
    assert t.l7.listeners and any(vh.routes for lis in t.l7.listeners for vh in lis.virtual_hosts)
    assert t.l4.frontends
    assert any(k.kind.endswith("Route") for k in t.statuses)


def test_worlds_exercise_tls_terminate() -> None:
    """Across the seeds, TLSRoutes are terminated (mixed with passed-through ones)."""
    terminated = passed = 0
    for seed in range(6):
        t = translate(store_of(_world(random.Random(seed))))
        for port in t.l4.tls_passthrough:
            terminated += sum(r.terminate is not None for r in port.routes)
            passed += sum(r.terminate is None for r in port.routes)
    assert terminated and passed


def test_worlds_exercise_listener_sets() -> None:
    """Across the seeds, ListenerSets get accepted and refused, and routes attach to them."""
    accepted = refused = attached = 0
    for seed in range(6):
        t = translate(store_of(_world(random.Random(seed))))
        for k, st in t.statuses.items():
            if k.kind == "ListenerSet":
                ok = next(c for c in st["conditions"]
                          if c["type"] == "Accepted")["status"] == "True"
                accepted += ok
                refused += not ok
                attached += sum(lis["attachedRoutes"] for lis in st["listeners"])
    assert accepted and refused and attached
