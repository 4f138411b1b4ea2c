"""Ingresses in the translator: before it, the generated objects; after it, their results
carried back to the Ingresses (status.loadBalancer and problems)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from controller.ingress.convert import (GATEWAY, GATEWAY_CLASS, Conversion, Listening, as_dict,
                                        as_int, as_str, convert, our_classes)
from controller.objects import Obj, ObjectKey
from controller.source import Problem
from controller.store import Store

#: Keys of an IngressClass's parameters ConfigMap (spec.parameters, kind ConfigMap).
PARAM_HTTP_PORT = "httpPort"
PARAM_HTTPS_PORT = "httpsPort"


def listening(store: Store, flags: Listening) -> tuple[Listening, list[Problem]]:
    """Where Ingresses are served: the flags, unless an IngressClass of ours names a
    ConfigMap in spec.parameters (its httpPort / httpsPort; the default class's first)."""
    classes = store.list("IngressClass")
    ours, default = our_classes(classes)
    problems: list[Problem] = []
    chosen = sorted((c for c in classes if as_str(as_dict(c.get("metadata")).get("name")) in ours
                     and as_dict(c.get("spec")).get("parameters") is not None),
                    key=lambda c: (as_str(as_dict(c.get("metadata")).get("name")) not in default,
                                   ObjectKey.of(c)))
    for n, c in enumerate(chosen):
        key = ObjectKey.of(c)
        p = as_dict(as_dict(c.get("spec")).get("parameters"))
        if as_str(p.get("apiGroup")) or as_str(p.get("kind")) != "ConfigMap":
            problems.append(Problem("", f"parameters {as_str(p.get('kind'))}: kgw reads only a "
                                        "ConfigMap (keys httpPort, httpsPort)", key,
                                    "spec.parameters"))
            continue
        cm = store.get("ConfigMap", as_str(p.get("namespace")), as_str(p.get("name")))
        if cm is None:
            problems.append(Problem("", f"ConfigMap {as_str(p.get('namespace'))}/"
                                        f"{as_str(p.get('name'))} not found: Ingresses are "
                                        "served on the ports of the flags", key, "spec.parameters"))
            continue
        data = as_dict(cm.get("data"))
        ports = {}
        for k in (PARAM_HTTP_PORT, PARAM_HTTPS_PORT):
            if k in data:
                v = as_int(data[k])
                if v is None or not 0 <= v <= 65535:
                    problems.append(Problem("", f"{k} {data[k]!r} is not a port (0-65535)",
                                            ObjectKey.of(cm), f"data.{k}"))
                else:
                    ports[k] = v
        for other in chosen[n + 1:]:  # (one set of ports serves every class: say so)
            problems.append(Problem("", f"parameters not used: the Ingresses of every kgw "
                                        f"class are served on one set of ports, those of "
                                        f"IngressClass {key.name}", ObjectKey.of(other),
                                    "spec.parameters"))
        return (Listening(ports.get(PARAM_HTTP_PORT, flags.http_port),
                          ports.get(PARAM_HTTPS_PORT, flags.https_port)), problems)
    return flags, problems


def conversion(store: Store, flags: Listening, controller_name: str) -> Conversion:
    where, problems = listening(store, flags)
    conv = convert(store.list("Ingress"), store.list("IngressClass"),
                   lambda ns, name: store.get("Service", ns, name),
                   where, controller_name)
    if problems:
        conv = dataclasses.replace(conv, problems=conv.problems + tuple(problems))
    return conv


def _bad(cond: Mapping) -> bool:
    if cond.get("type") == "Conflicted":
        return cond.get("status") == "True"
    return cond.get("status") == "False"


def _said(cond: Mapping) -> str:
    msg = as_str(cond.get("message"))
    return f"{cond.get('type')} {cond.get('reason')}" + (f": {msg}" if msg else "")


def results(conv: Conversion, statuses: dict[ObjectKey, dict],
            problems: tuple[Problem, ...]) -> tuple[dict[ObjectKey, dict], tuple[Problem, ...]]:
    """The statuses without the generated objects' and with each served Ingress's; the
    problems with those of generated objects said of the Ingress they come from."""
    out = {k: v for k, v in statuses.items()
           if k not in conv.route_origin and k != GATEWAY
           and k != ObjectKey("GatewayClass", "", GATEWAY_CLASS)}
    found: list[Problem] = list(conv.problems)
    for p in problems:
        if p.key is not None and p.key in conv.route_origin:
            found.append(Problem(p.origin, p.message, conv.route_origin[p.key],
                                 f"(HTTPRoute {p.key.name}) {p.field}".strip()))
        elif p.key != GATEWAY:
            found.append(p)
    for rk, ik in sorted(conv.route_origin.items()):
        for parent in as_dict(statuses.get(rk)).get("parents") or ():
            for cond in parent.get("conditions") or ():
                if _bad(cond):
                    found.append(Problem("", _said(cond), ik, f"(HTTPRoute {rk.name})"))
    gw = as_dict(statuses.get(GATEWAY))
    serving = False
    for lis in gw.get("listeners") or ():
        name = as_str(lis.get("name"))
        conds = lis.get("conditions") or ()
        if any(c.get("type") == "Programmed" and c.get("status") == "True" for c in conds):
            serving = True
        for cond in conds:
            if _bad(cond):
                found.append(Problem("", f"listener {name}: {_said(cond)}",
                                     conv.listener_origin.get(name, GATEWAY),
                                     "spec.tls" if name in conv.listener_origin else ""))
    addresses = [as_str(a.get("value")) for a in gw.get("addresses") or ()] if serving else []
    for ik in conv.served:
        out[ik] = {"loadBalancer": {"ingress": [_lb(a) for a in addresses]} if addresses else {}}
    return out, tuple(found)


def _lb(address: str) -> Obj:
    return {"ip": address} if address.replace(".", "").isdigit() or ":" in address \
        else {"hostname": address}
