"""Builders for small test worlds (stores of objects)."""

from __future__ import annotations

import copy

from controller.objects import KINDS, ObjectKey
from controller.source import Event, EventType
from controller.store import Store

CLASS = {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass",
         "metadata": {"name": "kgw"}, "spec": {"controllerName": "kgw.dev/gateway-controller"}}


def norm(o: dict, ts: int = 0) -> dict:
    o = copy.deepcopy(o)
    meta = o.setdefault("metadata", {})
    if KINDS[o["kind"]].namespaced:
        meta.setdefault("namespace", "default")
    meta.setdefault("generation", 1)
    meta.setdefault("creationTimestamp", f"2026-01-01T00:00:{ts % 60:02d}Z")
    return o


def store_of(objs: list[dict]) -> Store:
    st = Store()
    st.apply(Event(EventType.ADDED, ObjectKey.of(o), o, "1", 1)
             for o in (norm(x, i) for i, x in enumerate(objs)))
    return st


def gateway(name: str, listeners: list[dict], ns: str = "default", **spec) -> dict:
    return {"kind": "Gateway", "metadata": {"name": name, "namespace": ns},
            "spec": {"gatewayClassName": "kgw", "listeners": listeners, **spec}}


def http_route(name: str, parents: list[dict], rules: list[dict] | None = None,
               hostnames: list[str] | None = None,
               ns: str = "default", kind: str = "HTTPRoute", **meta) -> dict:
    spec: dict = {"parentRefs": parents, "rules": rules if rules is not None
                  else [{"backendRefs": [{"name": "svc", "port": 80}]}]}
    if hostnames is not None:
        spec["hostnames"] = hostnames
    return {"kind": kind, "metadata": {"name": name, "namespace": ns, **meta}, "spec": spec}


def service(name: str, ns: str = "default", ports: list[dict] | None = None, **spec) -> dict:
    return {"kind": "Service", "metadata": {"name": name, "namespace": ns},
            "spec": {"ports": ports or [{"name": "http", "port": 80}], **spec}}


def slice_(svc: str, addrs: list[str], ns: str = "default", port: int = 8080,
           port_name: str = "http", name: str | None = None, ready: bool | None = True) -> dict:
    eps = []
    for a in addrs:
        ep: dict = {"addresses": [a]}
        if ready is not None:
            ep["conditions"] = {"ready": ready}
        eps.append(ep)
    return {"kind": "EndpointSlice",
            "metadata": {"name": name or f"{svc}-x", "namespace": ns,
                         "labels": {"kubernetes.io/service-name": svc}},
            "addressType": "IPv4", "ports": [{"name": port_name, "port": port}], "endpoints": eps}


def namespace(name: str, **labels: str) -> dict:
    return {"kind": "Namespace", "metadata": {"name": name, "labels": dict(labels)}}


def grant(name: str, ns: str, from_kind: str, from_ns: str, to_kind: str = "Service",
          to_name: str | None = None, from_group: str = "gateway.networking.k8s.io") -> dict:
    to: dict = {"group": "", "kind": to_kind}
    if to_name:
        to["name"] = to_name
    return {"kind": "ReferenceGrant", "metadata": {"name": name, "namespace": ns},
            "spec": {"from": [{"group": from_group, "kind": from_kind, "namespace": from_ns}],
                     "to": [to]}}


def listener_set(name: str, gateway_name: str, listeners: list[dict], ns: str = "default",
                 gateway_ns: str | None = "default", **meta) -> dict:
    parent: dict = {"name": gateway_name}
    if gateway_ns is not None:
        parent["namespace"] = gateway_ns
    return {"kind": "ListenerSet", "metadata": {"name": name, "namespace": ns, **meta},
            "spec": {"parentRef": parent, "listeners": listeners}}
